"""Multi-scale deformable attention and its gradients: native kernels vs the grid_sample path
vs a brute-force oracle (float64), gradcheck, opcheck, reduced precision against float64,
empty and non-contiguous inputs, and torch.compile."""

import pytest
import torch

from dinat_m2f.layers import ms_deform_attn
from dinat_m2f.ops.ms_deform_attn.reference import ms_deform_attn_reference
from tests.conftest import requires_native
from tests.ms_deform_attn_brute_force import ms_deform_attn_brute_force

pytestmark = requires_native

# (level shapes (H, W), heads, head_dim, points, len_q)
CASES = [
    ([(7, 5)], 1, 4, 1, 6),
    ([(6, 8), (3, 4)], 2, 8, 3, 5),
    ([(7, 5), (4, 3), (2, 2)], 3, 5, 4, 4),
    ([(9, 7), (5, 4), (3, 2), (1, 1)], 2, 16, 2, 3),
    ([(1, 9), (11, 1)], 4, 3, 2, 7),
]
# Mask2Former-like: 8 heads of 32 channels, 4 points, 3 levels (too large for the oracle)
LARGE = ([(16, 12), (8, 6), (4, 3)], 8, 32, 4, 50)


def case_id(case):
    shapes, heads, dim, points, len_q = case
    return f"{'+'.join(f'{h}x{w}' for h, w in shapes)}-h{heads}-D{dim}-P{points}-q{len_q}"


def make_inputs(case, batch=2, seed=0, dtype=torch.float64):
    """value, spatial_shapes, level_start_index, locations, weights. Locations are spread over
    [-0.25, 1.25] (a fifth of them partly or wholly off the map), plus some far outside."""
    shapes, heads, dim, points, len_q = case
    g = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(shapes, dtype=torch.int64)
    sizes = spatial_shapes.prod(1)
    level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    levels = len(shapes)
    value = torch.randn(batch, int(sizes.sum()), heads, dim, generator=g, dtype=dtype)
    loc_shape = (batch, len_q, heads, levels, points, 2)
    locations = torch.rand(loc_shape, generator=g, dtype=dtype) * 1.5 - 0.25
    locations.view(-1, 2)[::7] = torch.tensor([-3.0, 0.5], dtype=dtype)  # wholly outside
    weights = torch.rand(loc_shape[:-1], generator=g, dtype=dtype)
    return value, spatial_shapes, level_start_index, locations, weights


def outputs_and_grads(fn, inputs, seed=1):
    """Output and the gradients of value, locations and weights for a random output grad."""
    value, shapes, starts, locations, weights = (
        x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs
    )
    out = fn(value, shapes, starts, locations, weights)
    g = torch.Generator().manual_seed(seed)
    grad_out = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.dtype)
    grads = torch.autograd.grad(out, (value, locations, weights), grad_out)
    return [out.detach(), *grads]


NAMES = ["out", "grad_value", "grad_locations", "grad_weights"]


def assert_all_close(got, expected, rtol=1e-10, atol=1e-10):
    for name, a, b in zip(NAMES, got, expected):
        torch.testing.assert_close(
            a, b, rtol=rtol, atol=atol, msg=lambda m, name=name: f"{name}: {m}"
        )


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_native_reference_and_brute_force_agree(case):
    inputs = make_inputs(case)
    native = outputs_and_grads(ms_deform_attn, inputs)
    assert native[0].shape == (2, case[4], case[1] * case[2])
    assert_all_close(native, outputs_and_grads(ms_deform_attn_reference, inputs))
    assert_all_close(native, outputs_and_grads(ms_deform_attn_brute_force, inputs))


def test_native_and_reference_agree_on_mask2former_like_shapes():
    inputs = make_inputs(LARGE, batch=2)
    assert_all_close(
        outputs_and_grads(ms_deform_attn, inputs),
        outputs_and_grads(ms_deform_attn_reference, inputs),
    )


def test_sampling_matches_pixels_and_padding():
    """A location at a pixel centre reads that pixel; half a pixel past the border reads half
    of it; a location wholly outside the map reads zero."""
    value = torch.arange(12, dtype=torch.float64).reshape(1, 12, 1, 1)  # one 3x4 map
    shapes, starts = torch.tensor([[3, 4]]), torch.tensor([0])

    def at(x, y):
        locations = torch.tensor([x, y], dtype=torch.float64).reshape(1, 1, 1, 1, 1, 2)
        return ms_deform_attn(
            value, shapes, starts, locations, torch.ones(1, 1, 1, 1, 1, dtype=torch.float64)
        )

    assert at((2 + 0.5) / 4, (1 + 0.5) / 3).item() == 6.0  # row 1, column 2
    assert at(0.0, (1 + 0.5) / 3).item() == 0.5 * 4 and at(1.0, 0.5 / 3).item() == 0.5 * 3
    assert at(2 / 4, 1.0 / 3).item() == pytest.approx((1 + 2 + 5 + 6) / 4)  # between 4 pixels
    assert at(-0.3, 0.5).item() == 0.0 and at(0.5, 1.4).item() == 0.0


def relative_errors(got, expected):
    """Max error of each output relative to max(1, max |expected|)."""
    return {
        name: (a.double() - b).abs().max().item() / max(1.0, b.abs().max().item())
        for name, a, b in zip(NAMES, got, expected)
    }


@pytest.mark.parametrize("isa", ["baseline", "avx2"])
@pytest.mark.parametrize("case", [*CASES, LARGE], ids=case_id)
def test_float32_builds_match_float64(case, isa, monkeypatch):
    """float32 runs a build for AVX2 + FMA where the CPU has them, the baseline build
    elsewhere (DINAT_M2F_CPU_ISA picks one): both against float64 on the same rounded
    inputs, float64 checked against the brute-force oracle above."""
    monkeypatch.setenv("DINAT_M2F_CPU_ISA", isa)
    rounded = [x.float() if x.is_floating_point() else x for x in make_inputs(case)]
    got = outputs_and_grads(ms_deform_attn, rounded)
    expected = outputs_and_grads(
        ms_deform_attn, [x.double() if x.is_floating_point() else x for x in rounded]
    )
    for name, err in relative_errors(got, expected).items():
        assert err <= 1e-5, f"{name}: relative max error {err:.2e}"


@pytest.mark.skipif(
    torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"), reason="no AVX2 here"
)
def test_float32_runs_the_avx2_build_where_the_cpu_has_it(monkeypatch):
    """The AVX2 build sums with fused multiply-adds, so its float32 results differ from the
    baseline build's in the last bits: it is the one that runs by default."""
    inputs = [x.float() if x.is_floating_point() else x for x in make_inputs(LARGE)]
    default = outputs_and_grads(ms_deform_attn, inputs)
    monkeypatch.setenv("DINAT_M2F_CPU_ISA", "baseline")
    baseline = outputs_and_grads(ms_deform_attn, inputs)
    for name, a, b in zip(NAMES, default, baseline):
        assert not torch.equal(a, b), name


@pytest.mark.parametrize("case", [CASES[2], CASES[4]], ids=case_id)
def test_gradcheck_native_op(case):
    value, shapes, starts, locations, weights = make_inputs(case, batch=1, seed=3)
    # random locations lie off the pixel centres' lines (where bilinear weights have kinks)
    value, locations, weights = (x.requires_grad_() for x in (value, locations, weights))

    def fn(value, locations, weights):
        return torch.ops.dinat_m2f.ms_deform_attn(value, shapes, starts, locations, weights)

    assert torch.autograd.gradcheck(fn, (value, locations, weights), eps=1e-6, atol=1e-6)


def test_opcheck_both_ops():
    value, shapes, starts, locations, weights = make_inputs(CASES[2], dtype=torch.float32)
    ops = torch.ops.dinat_m2f
    args = (
        value.requires_grad_(),
        shapes,
        starts,
        locations.requires_grad_(),
        weights.requires_grad_(),
    )
    torch.library.opcheck(ops.ms_deform_attn.default, args)
    grad_out = torch.randn(2, CASES[2][4], CASES[2][1] * CASES[2][2])
    detached = [x.detach() for x in args]
    torch.library.opcheck(ops.ms_deform_attn_backward.default, (grad_out, *detached))


@pytest.mark.parametrize(
    "dtype,tolerance",
    [(torch.float32, 1e-5), (torch.bfloat16, 2e-2), (torch.float16, 4e-3)],
    ids=str,
)
def test_reduced_precision_matches_float64(dtype, tolerance):
    """The kernels accumulate in float32: compared with float64 on the same (rounded)
    inputs, the error is the output's own rounding (max error relative to max(1, max|ref|))."""
    rounded = [x.to(dtype) if x.is_floating_point() else x for x in make_inputs(LARGE)]
    got = outputs_and_grads(ms_deform_attn, rounded)
    expected = outputs_and_grads(
        ms_deform_attn, [x.double() if x.is_floating_point() else x for x in rounded]
    )
    assert all(a.dtype == dtype for a in got)
    for name, err in relative_errors(got, expected).items():
        assert err <= tolerance, f"{name}: relative max error {err:.2e}"


def test_empty_batch_and_queries():
    for batch, len_q in [(0, 5), (2, 0)]:
        value, shapes, starts, locations, weights = make_inputs(
            (CASES[1][0], 2, 8, 3, len_q), batch=batch
        )
        value.requires_grad_()
        locations.requires_grad_()
        out = ms_deform_attn(value, shapes, starts, locations, weights)
        assert out.shape == (batch, len_q, 16)
        out.sum().backward()
        assert value.grad.shape == value.shape and not value.grad.any()
        assert locations.grad.shape == locations.shape


def test_non_contiguous_inputs_and_cpu_index_tensors():
    value, shapes, starts, locations, weights = make_inputs(CASES[2])
    # the same values in other memory layouts
    value_nc = value.transpose(0, 1).contiguous().transpose(0, 1)
    locations_nc = locations.flip(-1).contiguous().flip(-1)
    weights_nc = weights.transpose(1, 2).contiguous().transpose(1, 2)
    shapes_nc = shapes.t().contiguous().t()
    assert not (value_nc.is_contiguous() or weights_nc.is_contiguous() or shapes_nc.is_contiguous())
    inputs_nc = [value_nc, shapes_nc, starts, locations_nc, weights_nc]
    assert_all_close(
        outputs_and_grads(ms_deform_attn, inputs_nc),
        outputs_and_grads(ms_deform_attn, [value, shapes, starts, locations, weights]),
        rtol=0,
        atol=0,
    )


def test_zero_weights_and_points_outside_give_zero_gradients_there():
    value, shapes, starts, locations, weights = make_inputs(CASES[1], batch=1)
    locations = torch.full_like(locations, 5.0).requires_grad_()  # every point off the maps
    value.requires_grad_()
    weights.requires_grad_()
    out = ms_deform_attn(value, shapes, starts, locations, weights)
    out.sum().backward()
    assert not out.any() and not value.grad.any() and not locations.grad.any()
    assert not weights.grad.any()


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compile_fullgraph(backend):
    torch._dynamo.reset()

    def attention(value, shapes, starts, locations, weights):
        return ms_deform_attn(value, shapes, starts, locations.sigmoid(), weights.softmax(-1)) * 2

    compiled = torch.compile(attention, fullgraph=True, backend=backend)
    inputs = make_inputs(CASES[2], dtype=torch.float32)
    got = outputs_and_grads(compiled, inputs)
    expected = outputs_and_grads(attention, inputs)
    assert_all_close(got, expected, rtol=1e-5, atol=1e-5)


def test_compile_records_the_native_op_without_graph_breaks():
    torch._dynamo.reset()
    inputs = make_inputs(CASES[1], dtype=torch.float32)
    explanation = torch._dynamo.explain(ms_deform_attn)(*inputs)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    assert "dinat_m2f.ms_deform_attn" in explanation.graphs[0].code
