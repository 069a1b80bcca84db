"""The transformer decoder's sublayers against attention, LayerNorm and MLP written out by hand
(float64, the layers' own weights), post-norm and pre-norm; masked cross-attention ignores the
masked keys; the checkpoint names Mask2Former uses."""

import pytest
import torch

from dinat_m2f.modeling.transformer_decoder.decoder_layers import (
    MLP,
    CrossAttentionLayer,
    FFNLayer,
    SelfAttentionLayer,
)

C, HEADS = 8, 2


def layer_norm(x, norm):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def attention(query, key, value, mha, blocked=None):
    """Multi-head attention of (L, N, C) sequences with `mha`'s weights.

    q/k/v = x @ W^T + b with W the three row blocks of in_proj_weight; per head,
    softmax(q k^T / sqrt(head dim)) over the keys, with `blocked` (N * heads, L, S) keys
    excluded; heads concatenated, then out_proj."""
    w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    b_q, b_k, b_v = mha.in_proj_bias.chunk(3)
    q, k, v = query @ w_q.T + b_q, key @ w_k.T + b_k, value @ w_v.T + b_v
    length, batch, channels = q.shape
    head_dim = channels // mha.num_heads
    out = torch.empty_like(q)
    for n in range(batch):
        for h in range(mha.num_heads):
            cols = slice(h * head_dim, (h + 1) * head_dim)
            logits = q[:, n, cols] @ k[:, n, cols].T / head_dim**0.5
            if blocked is not None:
                logits = logits.masked_fill(blocked[n * mha.num_heads + h], float("-inf"))
            out[:, n, cols] = logits.softmax(-1) @ v[:, n, cols]
    return out @ mha.out_proj.weight.T + mha.out_proj.bias


def _randomise(module):
    """Random values for every parameter (LayerNorm's too, so that it is not the identity)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return module.double().eval()


@pytest.mark.parametrize("pre_norm", [False, True])
def test_self_attention_layer(pre_norm):
    layer = _randomise(SelfAttentionLayer(C, HEADS, normalize_before=pre_norm))
    tgt, pos = torch.randn(5, 3, C, dtype=torch.float64), torch.randn(5, 3, C, dtype=torch.float64)
    out = layer(tgt, query_pos=pos)
    if pre_norm:
        x = layer_norm(tgt, layer.norm)
        expected = tgt + attention(x + pos, x + pos, x, layer.self_attn)
    else:
        attended = attention(tgt + pos, tgt + pos, tgt, layer.self_attn)
        expected = layer_norm(tgt + attended, layer.norm)
    torch.testing.assert_close(out, expected)
    # no position: queries and keys are the inputs themselves
    torch.testing.assert_close(layer(tgt), layer(tgt, query_pos=torch.zeros_like(tgt)))


@pytest.mark.parametrize("pre_norm", [False, True])
def test_cross_attention_layer_with_a_mask_per_head(pre_norm):
    layer = _randomise(CrossAttentionLayer(C, HEADS, normalize_before=pre_norm))
    q_len, s_len, batch = 4, 6, 2
    tgt = torch.randn(q_len, batch, C, dtype=torch.float64)
    query_pos = torch.randn_like(tgt)
    memory = torch.randn(s_len, batch, C, dtype=torch.float64)
    pos = torch.randn_like(memory)
    blocked = torch.rand(batch * HEADS, q_len, s_len) < 0.5
    blocked[..., 0] = False  # every query keeps at least one key
    out = layer(tgt, memory, memory_mask=blocked, pos=pos, query_pos=query_pos)
    x = layer_norm(tgt, layer.norm) if pre_norm else tgt
    attended = attention(x + query_pos, memory + pos, memory, layer.multihead_attn, blocked)
    expected = tgt + attended if pre_norm else layer_norm(tgt + attended, layer.norm)
    torch.testing.assert_close(out, expected)


def test_masked_keys_do_not_change_the_output():
    layer = _randomise(CrossAttentionLayer(C, HEADS))
    tgt = torch.randn(2, 1, C, dtype=torch.float64)
    memory = torch.randn(5, 1, C, dtype=torch.float64)
    # query 0 sees keys 0 and 2 only (in both heads); query 1 sees every key
    blocked = torch.zeros(HEADS, 2, 5, dtype=torch.bool)
    blocked[:, 0] = torch.tensor([False, True, False, True, True])
    out = layer(tgt, memory, memory_mask=blocked)
    changed = memory.clone()
    changed[[1, 3, 4]] = 10 * torch.randn(3, 1, C, dtype=torch.float64)
    out_changed = layer(tgt, changed, memory_mask=blocked)
    torch.testing.assert_close(out_changed[0], out[0])  # only masked keys changed
    assert not torch.allclose(out_changed[1], out[1])  # the unmasked query sees the change
    # and the same holds for keys masked by padding
    padding = torch.tensor([[False, True, False, True, True]])
    padded = layer(tgt, memory, memory_key_padding_mask=padding)
    padded_changed = layer(tgt, changed, memory_key_padding_mask=padding)
    torch.testing.assert_close(padded_changed, padded)


@pytest.mark.parametrize("pre_norm", [False, True])
def test_ffn_layer(pre_norm):
    layer = _randomise(FFNLayer(C, dim_feedforward=16, normalize_before=pre_norm))
    tgt = torch.randn(3, 2, C, dtype=torch.float64)

    def mlp(x):
        hidden = (x @ layer.linear1.weight.T + layer.linear1.bias).clamp(min=0)
        return hidden @ layer.linear2.weight.T + layer.linear2.bias

    if pre_norm:
        expected = tgt + mlp(layer_norm(tgt, layer.norm))
    else:
        expected = layer_norm(tgt + mlp(tgt), layer.norm)
    torch.testing.assert_close(layer(tgt), expected)


def test_mlp_has_relu_between_layers_but_not_after_the_last():
    mlp = _randomise(MLP(4, 6, 3, num_layers=3))
    x = torch.randn(5, 4, dtype=torch.float64)
    h = (x @ mlp.layers[0].weight.T + mlp.layers[0].bias).clamp(min=0)
    h = (h @ mlp.layers[1].weight.T + mlp.layers[1].bias).clamp(min=0)
    expected = h @ mlp.layers[2].weight.T + mlp.layers[2].bias
    out = mlp(x)
    torch.testing.assert_close(out, expected)
    assert (out < 0).any()  # the last layer's output is not rectified
    assert [tuple(layer.weight.shape) for layer in mlp.layers] == [(6, 4), (6, 6), (3, 6)]


def test_dropout_is_inactive_in_eval_and_active_in_training():
    layer = SelfAttentionLayer(C, HEADS, dropout=0.5).double()
    tgt = torch.randn(4, 2, C, dtype=torch.float64)
    layer.eval()
    torch.testing.assert_close(layer(tgt), layer(tgt))
    layer.train()
    torch.manual_seed(0)
    first = layer(tgt)
    torch.manual_seed(1)
    assert not torch.allclose(first, layer(tgt))


def test_parameter_names_are_mask2formers():
    assert set(SelfAttentionLayer(C, HEADS).state_dict()) == {
        "self_attn.in_proj_weight", "self_attn.in_proj_bias", "self_attn.out_proj.weight",
        "self_attn.out_proj.bias", "norm.weight", "norm.bias",
    }  # fmt: skip
    assert set(CrossAttentionLayer(C, HEADS).state_dict()) == {
        "multihead_attn.in_proj_weight", "multihead_attn.in_proj_bias",
        "multihead_attn.out_proj.weight", "multihead_attn.out_proj.bias",
        "norm.weight", "norm.bias",
    }  # fmt: skip
    assert set(FFNLayer(C, 16).state_dict()) == {
        "linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias",
        "norm.weight", "norm.bias",
    }  # fmt: skip
    assert set(MLP(4, 6, 3, 2).state_dict()) == {
        "layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias",
    }  # fmt: skip
