"""Which implementation computes an NA op.

The unfused ops (qk, av): the native kernels when the extension is built for the tensors'
device (library.native_ops(): another library's inside library.use_native_library(), as the
tests' emulated device), else the pure-PyTorch twin (with one warning per device type).

Whole attention (attention()) by backend:
    "auto"       the fused Triton kernels for CUDA tensors when Triton and the problem allow
                 it (fused.unsupported); the fused native kernels for CPU tensors (na_fused:
                 one pass, no attention map, the backward recomputes the scores) where the
                 extension has them (not on the emulated device); else "unfused";
    "fused"      the fused Triton kernels (CPU tensors only under TRITON_INTERPRET=1), or a
                 ValueError saying why not;
    "unfused"    qk, a softmax and av, which keep the attention map for the backward;
    "reference"  the pure-PyTorch twin, even where native kernels exist.
The default is "auto", or the environment variable DINAT_M2F_NA_BACKEND.

Arguments are assumed checked (checks.py) and normalised to per-axis tuples.
"""

from __future__ import annotations

import contextlib
import os

import torch

from ..library import (
    FUSED_NA_DEVICES,
    native_implementation,
    native_ops,
    native_supports,
    note_implementation,
    other_library_in_use,
    warn_fallback_once,
)
from . import fused
from .reference import na_av_reference, na_qk_reference

# the `backend=` values of na1d / na2d (native device kernels: library.NATIVE_DEVICES)
BACKENDS = ("auto", "fused", "unfused", "reference")
BACKEND_ENV = "DINAT_M2F_NA_BACKEND"
# Tensors of these devices go to the fused kernels under "auto" (on the CPU the C++ kernels
# beat Triton's interpreter, which only tests use)
AUTO_FUSED_DEVICES = ("cuda",)


def qk(
    query: torch.Tensor,
    key: torch.Tensor,
    rpb: torch.Tensor | None,
    kernel: tuple[int, ...],
    dilation: tuple[int, ...],
) -> torch.Tensor:
    """Logits (batch, *spatial, heads, prod(kernel)): <query, neighbor key> (+ rpb)."""
    if native_supports(query.device, "na"):
        note_implementation("na_qk", native_implementation())
        return native_ops().na_qk(query, key, rpb, list(kernel), list(dilation))
    warn_fallback_once(query.device, "na")
    note_implementation("na_qk", "pure-pytorch")
    return na_qk_reference(query, key, rpb, kernel, dilation)


def av(
    attn: torch.Tensor, value: torch.Tensor, kernel: tuple[int, ...], dilation: tuple[int, ...]
) -> torch.Tensor:
    """Output (batch, *spatial, heads, dim): attention-weighted sum of neighbor values."""
    if native_supports(value.device, "na"):
        note_implementation("na_av", native_implementation())
        return native_ops().na_av(attn, value, list(kernel), list(dilation))
    warn_fallback_once(value.device, "na")
    note_implementation("na_av", "pure-pytorch")
    return na_av_reference(attn, value, kernel, dilation)


def _softmax(logits: torch.Tensor) -> torch.Tensor:
    if logits.dtype in (torch.float16, torch.bfloat16):
        return torch.softmax(logits, dim=-1, dtype=torch.float32).to(logits.dtype)
    return torch.softmax(logits, dim=-1)


def default_backend() -> str:
    """DINAT_M2F_NA_BACKEND, or "auto"."""
    return os.environ.get(BACKEND_ENV, "auto") or "auto"


@contextlib.contextmanager
def backend_env(backend: str):
    """DINAT_M2F_NA_BACKEND set to `backend` inside the block, as it was (or unset) after."""
    before = os.environ.get(BACKEND_ENV)
    os.environ[BACKEND_ENV] = backend
    try:
        yield
    finally:
        if before is None:
            del os.environ[BACKEND_ENV]
        else:
            os.environ[BACKEND_ENV] = before


def _fused_cpu_fits(query: torch.Tensor) -> bool:
    """The fused native CPU kernels are part of the NA family's native kernels: a device
    without them (native_supports) has none, and another library in use has none."""
    device = query.device
    return (
        device.type.upper() in FUSED_NA_DEVICES
        and native_supports(device)
        and not other_library_in_use()
    )


def resolve_backend(
    op: str, backend: str | None, query: torch.Tensor, value: torch.Tensor, kernel
) -> str:
    """The implementation that computes this call: "fused" (Triton), "fused_cpu" (native,
    reached through "auto"), "unfused" or "reference"."""
    if backend is None:
        backend = default_backend()
        source = f"{BACKEND_ENV}={backend!r}"
    else:
        source = f"backend={backend!r}"
    if backend not in BACKENDS:
        raise ValueError(f"{op}: {source} is not one of {list(BACKENDS)}")
    if backend == "auto":
        fits = (
            query.device.type in AUTO_FUSED_DEVICES
            and fused.unsupported(query, value, kernel) is None
        )
        if fits:
            return "fused"
        return "fused_cpu" if _fused_cpu_fits(query) else "unfused"
    if backend == "fused":
        reason = fused.unsupported(query, value, kernel)
        if reason is not None:
            raise ValueError(f"{op}: {source} cannot compute this call: {reason}")
    return backend


def attention(
    op: str,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    rpb: torch.Tensor | None,
    kernel: tuple[int, ...],
    dilation: tuple[int, ...],
    scale: float,
    backend: str | None,
) -> torch.Tensor:
    """softmax(scale * q.k + rpb) . v over each query's window, by `backend` (see above)."""
    chosen = resolve_backend(op, backend, query, value, kernel)
    note_implementation("na", chosen)
    if chosen == "fused":
        return fused.attention(query, key, value, rpb, kernel, dilation, scale)
    if chosen == "fused_cpu":
        out, _ = torch.ops.dinat_m2f.na_fused(
            query, key, value, rpb, list(kernel), list(dilation), float(scale)
        )
        return out
    if chosen == "reference":
        logits = na_qk_reference(query * scale, key, rpb, kernel, dilation)
        return na_av_reference(_softmax(logits), value, kernel, dilation)
    return av(_softmax(qk(query * scale, key, rpb, kernel, dilation)), value, kernel, dilation)
