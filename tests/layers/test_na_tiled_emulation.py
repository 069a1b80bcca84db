"""The CUDA tiled QK/AV kernels (native/na/na_device.cuh, na_tiled.h), run on the emulated
device by the test-only ops `dinat_m2f_testing::na_{qk,av}_tiled` with a given tile and
head-dim chunk, agree with the CPU kernels for DiNAT's sizes (kernel 3..13, head dim 32/64),
dilations, borders, partial tiles and head-dim chunks. The tiles and chunks fit the 48 KB of
shared memory a launch gets (the emulated device refuses more, as a GPU does; float64
accumulates in 8 bytes)."""

import pytest
import torch

from tests.conftest import requires_emulated_device

pytestmark = requires_emulated_device

testing = torch.ops.dinat_m2f_testing

# (spatial, kernel, dilation, heads, dim, tile, chunk)
CASES = [
    ((9, 10), (3, 3), (1, 1), 2, 32, 8, 32),
    ((13, 17), (3, 5), (2, 3), 1, 32, 4, 16),
    ((15, 16), (7, 7), (1, 1), 2, 64, 6, 16),
    ((29, 31), (7, 7), (4, 3), 1, 32, 4, 32),
    ((20, 23), (9, 9), (2, 2), 1, 64, 2, 24),
    ((22, 24), (11, 11), (2, 1), 2, 32, 4, 16),
    ((13, 13), (13, 13), (1, 1), 1, 64, 3, 16),
    ((27, 40), (13, 11), (2, 3), 1, 32, 3, 8),
]


def ids(case):
    return f"L{case[0]}-k{case[1]}-d{case[2]}-D{case[4]}-t{case[5]}-c{case[6]}"


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_tiled_programs_match_plain_kernels(case):
    spatial, kernel, dilation, heads, dim, tile, chunk = case
    g = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(2, *spatial, heads, dim, generator=g, dtype=torch.float64) for _ in range(3)
    )
    rpb = torch.randn(heads, *(2 * x - 1 for x in kernel), generator=g, dtype=torch.float64)
    ops, ks, ds = torch.ops.dinat_m2f, list(kernel), list(dilation)

    for bias in (rpb, None):
        expected = ops.na_qk(q, k, bias, ks, ds)
        got = testing.na_qk_tiled(q, k, bias, ks, ds, tile, chunk)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)

    attn = expected.softmax(-1)
    torch.testing.assert_close(
        testing.na_av_tiled(attn, v, ks, ds, tile, chunk),
        ops.na_av(attn, v, ks, ds),
        rtol=1e-12,
        atol=1e-12,
    )


def test_tiled_programs_in_half_precision_accumulate_in_float():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 16, 16, 2, 64, generator=g) for _ in range(3))
    ops = torch.ops.dinat_m2f
    half = [x.to(torch.bfloat16) for x in (q, k, v)]
    logits = testing.na_qk_tiled(half[0], half[1], None, [7, 7], [2, 2], 8, 16)
    expected = ops.na_qk(*(x.float() for x in half[:2]), None, [7, 7], [2, 2])
    torch.testing.assert_close(logits.float(), expected, rtol=1e-2, atol=5e-2)


def test_emulation_ops_pass_opcheck():
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 9, 11, 2, 32, generator=g) for _ in range(3))
    attn = torch.randn(1, 9, 11, 2, 9, generator=g)
    torch.library.opcheck(testing.na_qk_tiled.default, (q, k, None, [3, 3], [2, 3], 4, 16))
    torch.library.opcheck(testing.na_av_tiled.default, (attn, v, [3, 3], [2, 3], 4, 16))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("dim", [32, 64])
@pytest.mark.parametrize("kernel", [3, 5, 7, 9, 11, 13])
def test_tile_plans_the_cuda_launch_chooses(kernel, dim, dtype):
    """tile = chunk = 0 runs the tile and chunk the CUDA launch picks for this shape and dtype
    (within the 48 KB shared-memory budget, checked in C++)."""
    g = torch.Generator().manual_seed(kernel)
    side = 2 * kernel + 3
    q, k, v = (torch.randn(1, side, side + 4, 2, dim, generator=g, dtype=dtype) for _ in range(3))
    rpb = torch.randn(2, 2 * kernel - 1, 2 * kernel - 1, generator=g, dtype=dtype)
    ops, ks, ds = torch.ops.dinat_m2f, [kernel, kernel], [2, 1]
    logits = ops.na_qk(q, k, rpb, ks, ds)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(testing.na_qk_tiled(q, k, rpb, ks, ds, 0, 0), logits, **tol)
    attn = logits.softmax(-1)
    torch.testing.assert_close(
        testing.na_av_tiled(attn, v, ks, ds, 0, 0), ops.na_av(attn, v, ks, ds), **tol
    )


def test_tile_plan_refuses_shapes_outside_the_tiled_kernels():
    q = torch.randn(1, 20, 20, 2, 16)
    with pytest.raises(
        ValueError, match=r"need 2D, kernel_size 3..13 and head dim 32 or 64 .*head dim 16"
    ):
        torch.ops.dinat_m2f_testing.na_qk_tiled(q, q, None, [3, 3], [1, 1], 0, 0)
    q = torch.randn(1, 40, 40, 2, 32)
    with pytest.raises(ValueError, match=r"kernel 15x15"):
        torch.ops.dinat_m2f_testing.na_qk_tiled(q, q, None, [15, 15], [1, 1], 0, 0)


def test_tile_over_the_shared_memory_budget_is_refused_like_on_a_gpu():
    q = torch.randn(1, 27, 40, 1, 32, dtype=torch.float64)
    # tile 8, chunk 32: 185,152 bytes of shared memory for float64 accumulators
    with pytest.raises(
        ValueError, match=r"185152 bytes of dynamic shared memory \(at most 49152\)"
    ):
        testing.na_qk_tiled(q, q, None, [13, 11], [2, 3], 8, 32)
