"""The MSDeformAttn module (Mask2Former's names, Deformable DETR's initialisation and forward)
and the pure-PyTorch fallback of ms_deform_attn."""

import importlib
import math
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

import dinat_m2f.ops.library as library
from dinat_m2f.layers import MSDeformAttn, ms_deform_attn
from dinat_m2f.ops.ms_deform_attn.reference import ms_deform_attn_reference
from tests.conftest import requires_native

LEVEL_SHAPES = [(8, 6), (4, 3), (2, 2)]


def pyramid(batch=2, d_model=32, len_q=None, seed=0, dtype=torch.float64):
    """query, reference points (2-d), input_flatten, spatial shapes, level start index."""
    g = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(LEVEL_SHAPES)
    sizes = shapes.prod(1)
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    len_in = int(sizes.sum())
    len_q = len_in if len_q is None else len_q
    inputs = torch.randn(batch, len_in, d_model, generator=g, dtype=dtype)
    query = torch.randn(batch, len_q, d_model, generator=g, dtype=dtype)
    reference = torch.rand(batch, len_q, len(LEVEL_SHAPES), 2, generator=g, dtype=dtype)
    return query, reference, inputs, shapes, starts


def randomised(module, seed=1):
    """The module with every parameter random (the initialisation zeroes offsets' weights)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
    return module


def test_parameter_names_and_shapes_match_mask2former():
    module = MSDeformAttn(d_model=256, n_levels=3, n_heads=8, n_points=4)
    shapes = {name: tuple(p.shape) for name, p in module.state_dict().items()}
    assert shapes == {
        "sampling_offsets.weight": (192, 256),
        "sampling_offsets.bias": (192,),
        "attention_weights.weight": (96, 256),
        "attention_weights.bias": (96,),
        "value_proj.weight": (256, 256),
        "value_proj.bias": (256,),
        "output_proj.weight": (256, 256),
        "output_proj.bias": (256,),
    }
    assert MSDeformAttn().sampling_offsets.out_features == 8 * 4 * 4 * 2  # defaults


def test_deformable_detr_initialisation():
    module = MSDeformAttn(d_model=64, n_levels=2, n_heads=8, n_points=3)
    assert not module.sampling_offsets.weight.any()
    assert not module.attention_weights.weight.any() and not module.attention_weights.bias.any()
    assert not module.value_proj.bias.any() and not module.output_proj.bias.any()
    assert module.value_proj.weight.abs().max() <= math.sqrt(6 / (64 + 64))
    bias = module.sampling_offsets.bias.view(8, 2, 3, 2)
    # head 0 points right, head 2 down (+y), head 5 up-left; point p at distance p + 1
    torch.testing.assert_close(bias[0, 0], torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]))
    torch.testing.assert_close(bias[2, 1, 1], torch.tensor([0.0, 2.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(bias[5, 0, 2], torch.tensor([-3.0, -3.0]), atol=1e-6, rtol=0)
    assert torch.equal(bias[:, 0], bias[:, 1])  # the same for every level


def test_bad_configuration_is_a_value_error():
    with pytest.raises(
        ValueError,
        match=r"d_model must be divisible by n_heads, got "
        r"d_model=100, n_heads=8",
    ):
        MSDeformAttn(d_model=100, n_heads=8)
    with pytest.raises(ValueError, match=r"n_points must be an int >= 1, got 0"):
        MSDeformAttn(n_points=0)


def test_bad_forward_input_is_a_value_error():
    module = MSDeformAttn(d_model=32, n_levels=3, n_heads=4, n_points=2).double()
    query, reference, inputs, shapes, starts = pyramid(len_q=5)
    with pytest.raises(ValueError, match=r"query must have shape \(batch, length, d_model=32\)"):
        module(query[..., :16], reference, inputs, shapes, starts)
    with pytest.raises(
        ValueError,
        match=r"reference_points must have shape .* = \(2, 5, 3, 2 or "
        r"4\) .* got \(2, 5, 3, 3\)",
    ):
        module(query, torch.rand(2, 5, 3, 3, dtype=torch.float64), inputs, shapes, starts)
    with pytest.raises(
        ValueError,
        match=r"input_spatial_shapes must have shape \(n_levels=3, "
        r"2\), got \(2, 2\)",
    ):
        module(query, reference, inputs, shapes[:2], starts[:2])
    with pytest.raises(ValueError, match=r"spatial_shapes .* hold 64 tokens .* len_in = 63"):
        module(query, reference, inputs[:, :63], shapes, starts)


def written_out(module, query, reference, inputs, shapes, starts, mask=None):
    """Deformable DETR's forward written out step by step around the grid_sample reference."""
    batch, len_q, _ = query.shape
    heads, levels, points = module.n_heads, module.n_levels, module.n_points
    value = inputs @ module.value_proj.weight.T + module.value_proj.bias
    if mask is not None:
        value = value * (~mask)[..., None]
    value = value.reshape(batch, inputs.shape[1], heads, -1)
    offsets = query @ module.sampling_offsets.weight.T + module.sampling_offsets.bias
    offsets = offsets.reshape(batch, len_q, heads, levels, points, 2)
    logits = query @ module.attention_weights.weight.T + module.attention_weights.bias
    weights = logits.reshape(batch, len_q, heads, -1).softmax(-1)
    weights = weights.reshape(batch, len_q, heads, levels, points)
    locations = written_out_locations(offsets, reference, shapes)
    out = ms_deform_attn_reference(value, shapes, starts, locations, weights)
    return out @ module.output_proj.weight.T + module.output_proj.bias


def written_out_locations(offsets, reference, shapes):
    """Sampling locations from (batch, len_q, heads, levels, points, 2) offsets, one level and
    point at a time, with Deformable DETR's operations in its order."""
    points = offsets.shape[4]
    locations = torch.empty_like(offsets)
    for level, (height, width) in enumerate(shapes.tolist()):
        for p in range(points):
            if reference.shape[-1] == 2:
                step = offsets[:, :, :, level, p] / torch.tensor([width, height]).to(offsets)
                locations[:, :, :, level, p] = reference[:, :, None, level] + step
            else:
                box = reference[:, :, None, level]
                step = offsets[:, :, :, level, p] / points * box[..., 2:] * 0.5
                locations[:, :, :, level, p] = box[..., :2] + step
    return locations


def with_boxes(reference):
    """The reference points with random box sizes appended: (cx, cy, w, h)."""
    g = torch.Generator().manual_seed(5)
    size = torch.rand(reference.shape, generator=g, dtype=reference.dtype) * 0.5
    return torch.cat([reference, size], dim=-1)


@requires_native
@pytest.mark.parametrize("reference_kind", ["points", "boxes"])
def test_forward_equals_the_computation_written_out(reference_kind):
    module = randomised(MSDeformAttn(d_model=32, n_levels=3, n_heads=4, n_points=2).double())
    query, reference, inputs, shapes, starts = pyramid()
    if reference_kind == "boxes":
        reference = with_boxes(reference)
    mask = torch.zeros(inputs.shape[:2], dtype=torch.bool)
    mask[1, -10:] = True
    out = module(query, reference, inputs, shapes, starts, mask)
    assert out.shape == query.shape
    expected = written_out(module, query, reference, inputs, shapes, starts, mask)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    # the padding mask matters
    assert not torch.allclose(out[1], module(query, reference, inputs, shapes, starts)[1])


@pytest.mark.parametrize("reference_kind", ["points", "boxes"])
def test_sampling_locations_and_weights_have_deformable_detrs_bits(reference_kind, monkeypatch):
    """In float32 the module hands the op exactly the locations and weights of Deformable
    DETR's operations (its reshaped broadcasts are a speed-up, not another formula)."""
    module = randomised(MSDeformAttn(d_model=32, n_levels=3, n_heads=4, n_points=2))
    query, reference, inputs, shapes, starts = pyramid(dtype=torch.float32, seed=3)
    query = query * 40  # offsets of many pixels, so that every quotient rounds
    if reference_kind == "boxes":
        reference = with_boxes(reference)
    handed = {}

    def capture(value, spatial_shapes, level_start_index, locations, weights):
        handed.update(locations=locations, weights=weights)
        return value.new_zeros(value.shape[0], locations.shape[1], value.shape[2] * value.shape[3])

    # the package exports the function under the module's name: reach the module itself
    module_file = importlib.import_module("dinat_m2f.layers.ms_deform_attn")
    monkeypatch.setattr(module_file, "ms_deform_attn", capture)
    module(query, reference, inputs, shapes, starts)
    batch, len_q, _ = query.shape
    offsets = module.sampling_offsets(query).view(batch, len_q, 4, 3, 2, 2)
    logits = module.attention_weights(query).view(batch, len_q, 4, 6)
    assert torch.equal(handed["locations"], written_out_locations(offsets, reference, shapes))
    assert torch.equal(handed["weights"], logits.softmax(-1).view(batch, len_q, 4, 3, 2))


@requires_native
def test_module_backward_reaches_every_parameter():
    module = randomised(MSDeformAttn(d_model=32, n_levels=3, n_heads=4, n_points=2))
    query, reference, inputs, shapes, starts = pyramid(dtype=torch.float32)
    module(query, reference, inputs, shapes, starts).square().sum().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@requires_native
def test_module_under_autocast_runs_in_bfloat16():
    module = randomised(MSDeformAttn(d_model=32, n_levels=3, n_heads=4, n_points=2))
    query, reference, inputs, shapes, starts = pyramid(dtype=torch.float32)
    expected = module(query, reference, inputs, shapes, starts)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(query, reference, inputs, shapes, starts)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, rtol=0.1, atol=0.1)


# ---------------------------------------------------------------------------------------------
# fallback


@requires_native
def test_fallback_warns_once_and_matches_native(monkeypatch):
    query, reference, inputs, shapes, starts = pyramid(len_q=7)
    g = torch.Generator().manual_seed(3)
    value = torch.randn(2, inputs.shape[1], 4, 8, generator=g, dtype=torch.float64)
    locations = torch.rand(2, 7, 4, 3, 2, 2, generator=g, dtype=torch.float64) * 1.2 - 0.1
    weights = torch.rand(2, 7, 4, 3, 2, generator=g, dtype=torch.float64)
    leaves = [x.requires_grad_() for x in (value, locations, weights)]

    def run():
        out = ms_deform_attn(leaves[0], shapes, starts, leaves[1], leaves[2])
        return [out, *torch.autograd.grad(out.sin().sum(), leaves)]

    native_results = run()
    monkeypatch.setitem(library.NATIVE_DEVICES, "ms_deform_attn", ())
    monkeypatch.setattr(library, "_warned", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fallback_results = run()
        run()
    ours = [str(w.message) for w in caught if "dinat_m2f" in str(w.message)]
    assert len(ours) == 1
    assert "multi-scale deformable attention kernels are not built for cpu tensors" in ours[0]
    for a, b in zip(fallback_results, native_results):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FORCED = textwrap.dedent(
    """
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import torch
        import dinat_m2f.layers as L
        torch.manual_seed(0)
        module = L.MSDeformAttn(d_model=16, n_levels=2, n_heads=2, n_points=3).double()
        shapes = torch.tensor([[5, 4], [3, 2]])
        starts = torch.tensor([0, 20])
        inputs = torch.randn(1, 26, 16, dtype=torch.float64)
        reference = torch.rand(1, 26, 2, 2, dtype=torch.float64)
        out = module(inputs, reference, inputs, shapes, starts)
    print("BACKENDS", L.native_backends("ms_deform_attn"))
    print("WARNINGS", sum("dinat_m2f" in str(w.message) for w in caught))
    print("SUM", repr(float(out.sum())))
    """
)


@requires_native
def test_environment_variable_forces_pure_pytorch_with_same_results():
    def run(**env):
        result = subprocess.run(
            [sys.executable, "-c", FORCED],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "DINAT_M2F_REQUIRE_NATIVE": "0", **env},
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    forced, normal = run(DINAT_M2F_DISABLE_NATIVE="1"), run()
    assert "BACKENDS ()" in forced and "'CPU'" in normal
    assert "WARNINGS 0" in forced and "WARNINGS 0" in normal  # forcing it is not a surprise
    sums = [float(out.split("SUM ")[1]) for out in (forced, normal)]
    assert sums[0] == pytest.approx(sums[1], rel=1e-12, abs=1e-12)


def test_reference_handles_reduced_precision_and_empty_batch():
    query, reference, inputs, shapes, starts = pyramid(len_q=4)
    value = torch.randn(0, inputs.shape[1], 2, 4)
    out = ms_deform_attn_reference(
        value, shapes, starts, torch.rand(0, 4, 2, 3, 1, 2), torch.rand(0, 4, 2, 3, 1)
    )
    assert out.shape == (0, 4, 8)
    value = torch.randn(1, inputs.shape[1], 2, 4).bfloat16()
    locations, weights = (
        torch.rand(1, 4, 2, 3, 1, 2).bfloat16(),
        torch.rand(1, 4, 2, 3, 1).bfloat16(),
    )
    out = ms_deform_attn_reference(value, shapes, starts, locations, weights)
    expected = ms_deform_attn_reference(
        value.double(), shapes, starts, locations.double(), weights.double()
    )
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), expected, rtol=1e-2, atol=1e-2)
