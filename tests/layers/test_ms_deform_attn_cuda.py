"""CUDA kernels of multi-scale deformable attention vs the CPU kernels in float64, per dtype,
forward and backward: on a real GPU (skipped without one) and on the emulated device
(tests/devices.py), which runs the same kernels and launch code on CPU threads in CI.

Inputs are rounded to the tested dtype first, so the comparison measures the kernels' error,
not the inputs' rounding; sampling locations keep off the pixel edges where a location's
gradient jumps (`off_pixel_edges`: first seen on an H200, where Mask2Former's case has a sample
that float32 rounds across an edge, on the GPU and the CPU alike). Tolerances (max abs error
relative to max(1, max |reference|)): float32 1e-5, float16 4e-3, bfloat16 2e-2, float64 1e-10.
"""

import pytest
import torch

from dinat_m2f.benchmarks.accuracy import off_pixel_edges
from dinat_m2f.layers import MSDeformAttn, ms_deform_attn
from tests import devices
from tests.conftest import requires_native
from tests.layers.test_ms_deform_attn import CASES, LARGE, case_id, make_inputs

TOLERANCE = {torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 2e-2, torch.float64: 1e-10}
# Mask2Former's 640-input encoder (80x80, 40x40, 20x20) with a slice of its queries: many
# queries hit the same pixels, which exercises the atomic grad_value accumulation.
MASK2FORMER = ([(80, 80), (40, 40), (20, 20)], 8, 32, 4, 3000)
# The same on the emulated device, scaled down: 40 queries on 8x8 / 4x4 / 2x2 maps still
# share pixels, so grad_value's atomics collide.
MASK2FORMER_SMALL = ([(8, 8), (4, 4), (2, 2)], 2, 32, 4, 40)


def run(inputs, device, dtype):
    value, shapes, starts, locations, weights = (
        (x.to(device, dtype) if x.is_floating_point() else x.to(device)).requires_grad_(
            x.is_floating_point()
        )
        for x in inputs
    )
    out = ms_deform_attn(value, shapes, starts, locations, weights)
    g = torch.Generator().manual_seed(1)
    grad_out = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out)
    grads = torch.autograd.grad(out, (value, locations, weights), grad_out)
    return [out, *grads]


@pytest.mark.parametrize("dtype", list(TOLERANCE), ids=str)
@pytest.mark.parametrize(
    "backend,case",
    devices.cases(CASES + [LARGE, MASK2FORMER], CASES + [MASK2FORMER_SMALL], case_id),
)
def test_cuda_matches_cpu(backend, case, dtype):
    value, shapes, starts, locations, weights = make_inputs(case, batch=2)
    inputs = value, shapes, starts, off_pixel_edges(locations, shapes), weights
    rounded = [x.to(dtype).double() if x.is_floating_point() else x for x in inputs]
    expected = run(rounded, "cpu", torch.float64)
    device = devices.device(backend)
    with devices.on(backend):
        got = run(rounded, device, dtype)
    for name, a, b in zip(["out", "grad_value", "grad_locations", "grad_weights"], got, expected):
        assert a.device.type == device.type and a.dtype == dtype
        err = (a.double().cpu() - b).abs().max().item() / max(1.0, b.abs().max().item())
        assert err <= TOLERANCE[dtype], f"{name}: relative max error {err:.2e}"


@requires_native  # the CPU kernel's float32 arithmetic, not the grid_sample fallback's
def test_off_pixel_edges_is_why_float32_location_gradients_match():
    """Mask2Former's case on the CPU kernel, float32 against float64: as generated, one
    sample's location gradient lands in the next cell (the error the H200 showed for CUDA);
    off the edges, within float32's tolerance. The moved coordinates keep the margin, and
    none moves by more than the margin."""
    value, shapes, starts, locations, weights = make_inputs(MASK2FORMER, batch=2)
    errors = {}
    for label, loc in [("as made", locations), ("off edges", off_pixel_edges(locations, shapes))]:
        rounded = [x.float().double() for x in (value, loc, weights)]
        inputs = rounded[0], shapes, starts, rounded[1], rounded[2]
        got, expected = run(inputs, "cpu", torch.float32), run(inputs, "cpu", torch.float64)
        errors[label] = (got[2].double() - expected[2]).abs().max() / expected[2].abs().max()
    assert errors["as made"] > 1e-4 and errors["off edges"] < TOLERANCE[torch.float32]
    size = shapes.flip(1).double().view(-1, 1, 2)
    before, after = locations * size - 0.5, off_pixel_edges(locations, shapes) * size - 0.5
    assert (after - after.round()).abs().min() >= 0.99e-4
    assert (after - before).abs().max() <= 1e-4 * (1 + 1e-6)
    assert torch.equal(after != before, (before - before.round()).abs() < 1e-4)
    # x goes with the width, y with the height: on a 3-high, 5-wide map, x = 0.5 is the edge
    # 2.0 and y = 0.5 the edge 1.0, both moved; x = 0.3 (1.0 px wide, 0.4 px high) moves only
    # along the width, y = 0.3 not at all
    locations = torch.tensor([[[0.5, 0.5], [0.3, 0.3]]], dtype=torch.float64)
    moved = off_pixel_edges(locations, torch.tensor([[3, 5]])) != locations
    assert moved.tolist() == [[[True, True], [True, False]]]


@pytest.mark.parametrize("backend", devices.backends())
def test_cuda_float64_matches_cpu_exactly_enough_and_index_tensors_may_stay_on_cpu(backend):
    inputs = make_inputs(LARGE if backend == "cuda" else CASES[3], batch=2)
    expected = run(inputs, "cpu", torch.float64)
    value, shapes, starts, locations, weights = inputs
    device = devices.device(backend)
    with devices.on(backend):
        on_gpu = run(inputs, device, torch.float64)
        with_cpu_shapes = ms_deform_attn(
            value.to(device), shapes, starts, locations.to(device), weights.to(device)
        )
    torch.testing.assert_close(with_cpu_shapes.cpu(), expected[0], rtol=1e-12, atol=1e-12)
    for a, b in zip(on_gpu, expected):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", devices.backends())
def test_cuda_gradcheck_float64(backend):
    device = devices.device(backend)
    value, shapes, starts, locations, weights = (
        # the emulated device runs every numerical-Jacobian forward with real threads: a
        # smaller case
        x.to(device)
        for x in make_inputs(CASES[2 if backend == "cuda" else 0], batch=1, seed=3)
    )

    def fn(value, locations, weights):
        return ms_deform_attn(value, shapes, starts, locations, weights)

    leaves = [x.requires_grad_() for x in (value, locations, weights)]
    with devices.on(backend):
        assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", devices.backends())
def test_cuda_empty_batch_non_contiguous_and_module(backend):
    device = devices.device(backend)
    inputs = make_inputs(CASES[2], dtype=torch.float32)
    value, shapes, starts, locations, weights = inputs
    expected = ms_deform_attn(*inputs)
    module = MSDeformAttn(d_model=64, n_levels=3, n_heads=8, n_points=4)
    query = torch.randn(2, 21, 64)
    spatial = torch.tensor([[4, 3], [2, 3], [1, 3]])
    level_starts = torch.tensor([0, 12, 18])
    reference = torch.rand(2, 21, 3, 2)
    expected_module = module(query, reference, query, spatial, level_starts)
    with devices.on(backend):
        empty = [x.to(device) for x in make_inputs(CASES[1], batch=0)]
        assert ms_deform_attn(*empty).shape == (0, 5, 16)
        value_nc = value.to(device).transpose(0, 1).contiguous().transpose(0, 1)
        out = ms_deform_attn(
            value_nc,
            shapes.to(device),
            starts.to(device),
            locations.to(device),
            weights.to(device),
        )
        got = module.to(device)(
            query.to(device),
            reference.to(device),
            query.to(device),
            spatial.to(device),
            level_starts.to(device),
        )
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.cpu(), expected_module, rtol=1e-4, atol=1e-4)
