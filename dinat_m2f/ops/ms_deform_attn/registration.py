"""Fake kernels and autograd of the native ops `torch.ops.dinat_m2f.ms_deform_attn*`.

The schemas are declared once in C++ (native/op_schemas.h) and implemented per device
(native/ms_deform_attn/). The fake kernels run the public function's checks that need no
tensor values (checks.inputs), so torch.compile and torch.library.opcheck trace them; the
level layout is checked by the op when it runs. The autograd formula calls the native
backward op. Registered for dinat_m2f:: when the extension has the ops; `register_library`
registers them for another library with the same schemas (the tests' emulated device).
"""

from __future__ import annotations

import torch

from ..library import LIBRARY, native_backends
from . import checks


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward_of(ops):
    """The autograd formula of `ops`.ms_deform_attn: `ops`.ms_deform_attn_backward."""

    def backward(ctx, grad_output):
        value, spatial_shapes, level_start_index, locations, weights = ctx.saved_tensors
        grad_value = grad_locations = grad_weights = None
        if any(ctx.needs_input_grad[i] for i in (0, 3, 4)):
            grad_value, grad_locations, grad_weights = ops.ms_deform_attn_backward(
                grad_output, value, spatial_shapes, level_start_index, locations, weights
            )
        return (
            grad_value if ctx.needs_input_grad[0] else None,
            None,
            None,
            grad_locations if ctx.needs_input_grad[3] else None,
            grad_weights if ctx.needs_input_grad[4] else None,
        )

    return backward


def _output_shape(value: torch.Tensor, locations: torch.Tensor) -> tuple[int, int, int]:
    return (value.shape[0], locations.shape[1], value.shape[2] * value.shape[3])


def _forward_fake(value, spatial_shapes, level_start_index, locations, weights):
    checks.inputs("ms_deform_attn", value, spatial_shapes, level_start_index, locations, weights)
    return value.new_empty(_output_shape(value, locations))


def _backward_fake(grad_output, value, spatial_shapes, level_start_index, locations, weights):
    op = "ms_deform_attn_backward"
    checks.inputs(op, value, spatial_shapes, level_start_index, locations, weights)
    expected = _output_shape(value, locations)
    if tuple(grad_output.shape) != expected:
        raise ValueError(
            f"{op}: grad_output must have the output's shape (batch, len_q, "
            f"heads*head_dim) = {list(expected)}, got {tuple(grad_output.shape)}"
        )
    return (
        value.new_empty(value.shape),
        locations.new_empty(locations.shape),
        weights.new_empty(weights.shape),
    )


def register_library(namespace: str) -> None:
    """Fake kernels and autograd of the MSDeformAttn ops of the torch library `namespace`
    (dinat_m2f, or a library with its schemas: the tests' emulated device)."""
    torch.library.register_fake(f"{namespace}::ms_deform_attn")(_forward_fake)
    torch.library.register_fake(f"{namespace}::ms_deform_attn_backward")(_backward_fake)
    torch.library.register_autograd(
        f"{namespace}::ms_deform_attn",
        _backward_of(getattr(torch.ops, namespace)),
        setup_context=_setup_context,
    )


# Only when this build has the ops (a build from before they were added does not).
if native_backends("ms_deform_attn"):
    register_library(LIBRARY)
