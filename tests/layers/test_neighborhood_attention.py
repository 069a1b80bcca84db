"""NeighborhoodAttention2D: the module's computation (against the brute-force oracle, any
size from 1x1 up), padding of small inputs, dropout path, argument errors and repr."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from dinat_m2f.layers import NeighborhoodAttention2D
from tests import na_brute_force as brute


def manual_forward(module, x):
    """The module's computation written out with the brute-force oracle."""
    batch, height, width, dim = x.shape
    kh, kw = module.kernel_size
    dh, dw = module.dilation
    pad_h, pad_w = max(0, kh * dh - height), max(0, kw * dw - width)
    x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    qkv = module.qkv(x).reshape(*x.shape[:3], 3, module.num_heads, module.head_dim)
    q, k, v = qkv.unbind(3)
    out = brute.na(q, k, v, module.kernel_size, module.dilation, module.rpb, scale=module.scale)
    out = out.reshape(*x.shape[:3], dim)[:, :height, :width]
    return module.proj(out)


@pytest.mark.parametrize(
    "size,kernel,dilation",
    [((12, 13), 3, 2), ((14, 14), 7, 2), ((5, 9), 7, 1), ((3, 4), 3, 2), ((9, 30), (5, 3), (2, 4))],
)
def test_module_matches_manual_computation(size, kernel, dilation):
    torch.manual_seed(0)
    module = NeighborhoodAttention2D(32, 4, kernel, dilation).double().eval()
    x = torch.randn(2, *size, 32, dtype=torch.float64, requires_grad=True)
    out = module(x)
    assert out.shape == x.shape
    expected = manual_forward(module, x)
    torch.testing.assert_close(out, expected)
    grad = torch.randn_like(out)
    params = [x, module.rpb, module.qkv.weight, module.qkv.bias]
    got = torch.autograd.grad(out, params, grad)
    want = torch.autograd.grad(expected, params, grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


@settings(max_examples=25, deadline=None, database=None, derandomize=True)
@given(
    height=st.integers(1, 24),
    width=st.integers(1, 24),
    kernel=st.sampled_from([3, 5, 7]),
    dilation=st.tuples(st.integers(1, 4), st.integers(1, 4)),
)
def test_any_size_is_padded_attended_and_cropped(height, width, kernel, dilation):
    """From 1x1 up, maps smaller than kernel x dilation on one axis or both: the DiNAT rule
    (zero-pad the bottom/right to kernel x dilation, attend, crop), against the oracle."""
    torch.manual_seed(height * 100 + width)
    module = NeighborhoodAttention2D(8, 2, kernel, dilation).double().eval()
    x = torch.randn(1, height, width, 8, dtype=torch.float64, requires_grad=True)
    out = module(x)
    expected = manual_forward(module, x)
    torch.testing.assert_close(out, expected)
    grad = torch.randn_like(out)
    torch.testing.assert_close(
        torch.autograd.grad(out, x, grad)[0], torch.autograd.grad(expected, x, grad)[0]
    )


@pytest.mark.parametrize("qkv_bias", [True, False])
def test_only_real_tokens_are_projected(qkv_bias):
    """A 5x5 map under a 7x7 kernel is padded to 7x7, but the qkv projection sees the 25 real
    tokens only; the 24 padded ones get what a zero token projects to (the bias, or zero)."""
    torch.manual_seed(0)
    module = NeighborhoodAttention2D(16, 2, 7, qkv_bias=qkv_bias).double().eval()
    if qkv_bias:
        torch.nn.init.normal_(module.qkv.bias)  # nn.Linear's small init would hide a wrong fill
    seen = []
    module.qkv.register_forward_hook(lambda mod, args, out: seen.append(tuple(args[0].shape)))
    x = torch.randn(2, 5, 5, 16, dtype=torch.float64)
    out = module(x)
    assert seen == [(2, 5, 5, 16)]
    torch.testing.assert_close(out, manual_forward(module, x))


def test_module_without_rpb_and_custom_scale():
    module = NeighborhoodAttention2D(16, 2, 5, 1, qkv_bias=False, qk_scale=0.2, rel_pos_bias=False)
    module = module.double()
    assert module.rpb is None and module.qkv.bias is None and module.scale == 0.2
    x = torch.randn(1, 8, 8, 16, dtype=torch.float64)
    torch.testing.assert_close(module(x), manual_forward(module, x))


def test_attention_dropout_path_is_used_in_training():
    torch.manual_seed(0)
    module = NeighborhoodAttention2D(16, 2, 3, attn_drop=0.5).double()
    x = torch.randn(1, 9, 9, 16, dtype=torch.float64)
    module.eval()
    reference = module(x)
    module.train()
    torch.manual_seed(1)
    dropped = module(x)
    assert not torch.allclose(dropped, reference)
    module.attn_drop.p = 0.0
    torch.testing.assert_close(module(x), reference)


def test_module_arguments_are_checked():
    with pytest.raises(
        ValueError, match=r"num_heads must be >= 1 and divide dim, got dim=30, num_heads=4"
    ):
        NeighborhoodAttention2D(30, 4, 7)
    with pytest.raises(ValueError, match=r"kernel_size must be odd and >= 3 .*got 6"):
        NeighborhoodAttention2D(32, 4, 6)
    with pytest.raises(ValueError, match=r"dilation must be >= 1, got 0"):
        NeighborhoodAttention2D(32, 4, 7, dilation=0)
    module = NeighborhoodAttention2D(32, 4, 7)
    with pytest.raises(
        ValueError, match=r"input must have shape \(batch, height, width, 32\), got \(1, 8, 8, 16\)"
    ):
        module(torch.randn(1, 8, 8, 16))


def test_extra_repr_and_parameter_names():
    module = NeighborhoodAttention2D(64, 2, 11, dilation=(2, 3))
    text = repr(module)
    assert "dim=64, num_heads=2, head_dim=32, kernel_size=(11, 11), dilation=(2, 3)" in text
    assert "rel_pos_bias=True" in text
    # names of the released NAT/DiNAT checkpoints
    assert sorted(module.state_dict()) == [
        "proj.bias",
        "proj.weight",
        "qkv.bias",
        "qkv.weight",
        "rpb",
    ]
    assert module.rpb.shape == (2, 21, 21)


def test_module_under_autocast_uses_the_low_precision_path():
    torch.manual_seed(0)
    module = NeighborhoodAttention2D(32, 2, 5, 2)
    x = torch.randn(1, 12, 12, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(x)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert module.rpb.grad is not None and module.rpb.grad.dtype == torch.float32
    torch.testing.assert_close(out.float(), module(x), rtol=0.05, atol=0.05)
