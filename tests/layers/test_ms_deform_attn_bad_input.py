"""Bad input to multi-scale deformable attention is a ValueError naming the argument and the
values: from the public function on the native path and on the pure-PyTorch path, and from
the raw native ops (whose C++ checks run even when called directly)."""

import pytest
import torch

import dinat_m2f.ops.library as library
from dinat_m2f.layers import ms_deform_attn
from tests.conftest import requires_native

SHAPES = torch.tensor([[7, 5], [3, 4]])  # 35 + 12 = 47 tokens
STARTS = torch.tensor([0, 35])
VALUE = torch.randn(2, 47, 3, 4)
LOCATIONS = torch.rand(2, 6, 3, 2, 4, 2)
WEIGHTS = torch.rand(2, 6, 3, 2, 4)

# (id, overridden arguments, message of the public function on either path)
BAD_INPUT = [
    (
        "len_in",
        dict(value=torch.randn(2, 48, 3, 4)),
        r"ms_deform_attn: spatial_shapes \[\[7, 5\], \[3, 4\]\] hold 47 tokens \(sum of "
        r"height\*width\) but value has len_in = 48",
    ),
    (
        "spatial_shapes",
        dict(spatial_shapes=torch.tensor([[7, 5], [4, 4]])),
        r"spatial_shapes \[\[7, 5\], \[4, 4\]\] hold 51 tokens .* value has len_in = 47",
    ),
    (
        "level_start_index",
        dict(level_start_index=torch.tensor([0, 36])),
        r"level_start_index must be the exclusive cumulative sum of height\*width over "
        r"spatial_shapes \[\[7, 5\], \[3, 4\]\], i.e. \[0, 35\], got \[0, 36\]",
    ),
    (
        "non-positive shape",
        dict(spatial_shapes=torch.tensor([[47, 1], [0, 4]])),
        r"spatial_shapes must hold \(height, width\) pairs of positive .*"
        r"got \[\[47, 1\], \[0, 4\]\]",
    ),
    (
        "value rank",
        dict(value=torch.randn(2, 47, 12)),
        r"value must have shape \(batch, len_in, heads, head_dim\), got \(2, 47, 12\)",
    ),
    (
        "locations rank",
        dict(sampling_locations=torch.rand(2, 6, 3, 8, 2)),
        r"sampling_locations must have shape \(batch, len_q, heads, levels, points, 2\), "
        r"got \(2, 6, 3, 8, 2\)",
    ),
    (
        "weights rank",
        dict(attention_weights=torch.rand(2, 6, 3, 8)),
        r"attention_weights must have shape \(batch, len_q, heads, levels, points\)",
    ),
    (
        "shapes rank",
        dict(spatial_shapes=torch.tensor([7, 5, 3, 4])),
        r"spatial_shapes must have shape \(levels, 2\), got \(4,\)",
    ),
    (
        "shapes pairs",
        dict(spatial_shapes=torch.tensor([[7, 5, 1], [3, 4, 1]])),
        r"spatial_shapes must have shape \(levels, 2\), one \(height, width\) per level, "
        r"got \(2, 3\)",
    ),
    (
        "location pairs",
        dict(sampling_locations=torch.rand(2, 6, 3, 2, 4, 3)),
        r"sampling_locations must end in a dim of 2 \(x, y\)",
    ),
    (
        "heads",
        dict(sampling_locations=torch.rand(2, 6, 2, 2, 4, 2)),
        r"sampling_locations has 2 heads \(dim 2\) but value has 3 \(dim 2\)",
    ),
    (
        "batch",
        dict(sampling_locations=torch.rand(1, 6, 3, 2, 4, 2)),
        r"sampling_locations has 1 batch entries \(dim 0\) but value has 2",
    ),
    (
        "levels",
        dict(sampling_locations=torch.rand(2, 6, 3, 3, 4, 2)),
        r"sampling_locations has 3 levels \(dim 3\) but spatial_shapes has 2 \(dim 0\)",
    ),
    (
        "start levels",
        dict(level_start_index=torch.tensor([0, 35, 47])),
        r"level_start_index has 3 levels \(dim 0\) but spatial_shapes has 2",
    ),
    (
        "points",
        dict(attention_weights=torch.rand(2, 6, 3, 2, 3)),
        r"attention_weights has 3 points \(dim 4\) but sampling_locations has 4 \(dim 4\)",
    ),
    (
        "queries",
        dict(attention_weights=torch.rand(2, 5, 3, 2, 4)),
        r"attention_weights has 5 queries \(dim 1\) but sampling_locations has 6",
    ),
    (
        "shapes dtype",
        dict(spatial_shapes=SHAPES.int()),
        r"spatial_shapes must be an int64 tensor, got torch.int32",
    ),
    (
        "starts dtype",
        dict(level_start_index=STARTS.float()),
        r"level_start_index must be an int64 tensor, got torch.float32",
    ),
    (
        "locations dtype",
        dict(sampling_locations=LOCATIONS.double()),
        r"sampling_locations must have value's dtype torch.float32, got torch.float64",
    ),
    (
        "weights dtype",
        dict(attention_weights=WEIGHTS.half()),
        r"attention_weights must have value's dtype torch.float32, got torch.float16",
    ),
    (
        "integer value",
        dict(
            value=VALUE.long(),
            sampling_locations=LOCATIONS.long(),
            attention_weights=WEIGHTS.long(),
        ),
        r"value must be a floating-point tensor, got torch.int64",
    ),
    (
        "device",
        dict(attention_weights=torch.empty(2, 6, 3, 2, 4, device="meta")),
        r"attention_weights must be on value's device cpu, got meta",
    ),
    (
        "not a tensor",
        dict(level_start_index=[0, 35]),
        r"level_start_index must be a torch.Tensor, got list",
    ),
]


def call(**override):
    args = dict(
        value=VALUE,
        spatial_shapes=SHAPES,
        level_start_index=STARTS,
        sampling_locations=LOCATIONS,
        attention_weights=WEIGHTS,
    )
    args.update(override)
    return ms_deform_attn(**args)


def test_good_input_runs():
    assert call().shape == (2, 6, 12)


@pytest.mark.parametrize("path", ["native", "pure-pytorch"])
@pytest.mark.parametrize("name,override,message", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_public_function_raises_value_error(monkeypatch, path, name, override, message):
    if path == "pure-pytorch":
        monkeypatch.setitem(library.NATIVE_DEVICES, "ms_deform_attn", ())
        monkeypatch.setattr(library, "_warned", {("ms_deform_attn", "cpu")})
    elif "CPU" not in library.native_backends("ms_deform_attn"):
        pytest.skip("native CPU kernels not built")
    with pytest.raises(ValueError, match=message):
        call(**override)


# The C++ checks: same conditions, C++ formatting (sizes as [..], dtypes as Long/Int/...).
RAW = [
    (
        "len_in",
        (torch.randn(2, 48, 3, 4), SHAPES, STARTS, LOCATIONS, WEIGHTS),
        r"ms_deform_attn: spatial_shapes \[\[7, 5\], \[3, 4\]\] hold 47 tokens \(sum of "
        r"height\*width\) but value has len_in = 48 \(value shape \[2, 48, 3, 4\]\)",
    ),
    (
        "level_start_index",
        (VALUE, SHAPES, torch.tensor([0, 34]), LOCATIONS, WEIGHTS),
        r"level_start_index must be the exclusive cumulative sum .* \[\[7, 5\], \[3, 4\]\], "
        r"i.e. \[0, 35\], got \[0, 34\]",
    ),
    (
        "non-positive",
        (VALUE, torch.tensor([[-7, -5], [3, 4]]), STARTS, LOCATIONS, WEIGHTS),
        r"spatial_shapes must hold \(height, width\) pairs of positive 32-bit ints, got "
        r"\[\[-7, -5\], \[3, 4\]\]",
    ),
    (
        "value rank",
        (VALUE[0], SHAPES, STARTS, LOCATIONS, WEIGHTS),
        r"value must have shape \(batch, len_in, heads, head_dim\), got \[47, 3, 4\]",
    ),
    (
        "heads",
        (VALUE, SHAPES, STARTS, LOCATIONS[:, :, :2], WEIGHTS[:, :, :2]),
        r"sampling_locations has 2 heads \(dim 2\) but value has 3 \(dim 2\); shapes "
        r"\[2, 6, 2, 2, 4, 2\] and \[2, 47, 3, 4\]",
    ),
    (
        "levels",
        (VALUE, SHAPES[:1], STARTS[:1], LOCATIONS, WEIGHTS),
        r"sampling_locations has 2 levels \(dim 3\) but spatial_shapes has 1 \(dim 0\)",
    ),
    (
        "points",
        (VALUE, SHAPES, STARTS, LOCATIONS, WEIGHTS[..., :2]),
        r"attention_weights has 2 points \(dim 4\) but sampling_locations has 4",
    ),
    (
        "start levels",
        (VALUE, SHAPES, STARTS[:1], LOCATIONS, WEIGHTS),
        r"level_start_index has 1 levels \(dim 0\) but spatial_shapes has 2",
    ),
    (
        "shapes dtype",
        (VALUE, SHAPES.int(), STARTS, LOCATIONS, WEIGHTS),
        r"spatial_shapes must be an int64 tensor, got Int",
    ),
    (
        "locations dtype",
        (VALUE, SHAPES, STARTS, LOCATIONS.double(), WEIGHTS),
        r"sampling_locations must have value's dtype Float, got Double",
    ),
    (
        "too many levels",
        (
            VALUE,
            SHAPES.repeat(9, 1),
            STARTS.repeat(9),
            LOCATIONS.repeat(1, 1, 1, 9, 1, 1),
            WEIGHTS.repeat(1, 1, 1, 9, 1),
        ),
        r"spatial_shapes must describe 1 to 16 levels, got 18",
    ),
]


@requires_native
@pytest.mark.parametrize("name,args,message", RAW, ids=[c[0] for c in RAW])
def test_raw_forward_op_raises_value_error(name, args, message):
    with pytest.raises(ValueError, match=message):
        torch.ops.dinat_m2f.ms_deform_attn(*args)
    grad_output = torch.zeros(args[0].shape[0], args[3].shape[1] if args[3].dim() > 1 else 1, 12)
    with pytest.raises(
        ValueError, match=message.replace("ms_deform_attn:", "ms_deform_attn_backward:")
    ):
        torch.ops.dinat_m2f.ms_deform_attn_backward(grad_output, *args)


@requires_native
def test_raw_backward_op_checks_grad_output():
    ops = torch.ops.dinat_m2f
    with pytest.raises(
        ValueError,
        match=r"grad_output must have the output's shape .* = "
        r"\[2, 6, 12\], got \[2, 6, 11\]",
    ):
        ops.ms_deform_attn_backward(
            torch.zeros(2, 6, 11), VALUE, SHAPES, STARTS, LOCATIONS, WEIGHTS
        )
    with pytest.raises(ValueError, match=r"grad_output must have value's dtype Float, got Double"):
        ops.ms_deform_attn_backward(
            torch.zeros(2, 6, 12, dtype=torch.float64), VALUE, SHAPES, STARTS, LOCATIONS, WEIGHTS
        )
