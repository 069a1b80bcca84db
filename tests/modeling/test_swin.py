"""D2SwinTransformer (MODEL.SWIN): the Swin release's parameter names and shapes, so that
Mask2Former's Swin checkpoints load with no missing or unexpected key; the window attention
and its shifted-window mask against hand-written versions; outputs equal to Mask2Former's
swin.py (golden values); any input size."""

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.modeling import build_backbone, build_model

import dinat_m2f.modeling  # noqa: F401
from dinat_m2f.checkpoint import load_model_weights
from dinat_m2f.config import add_maskformer2_config
from dinat_m2f.modeling.backbone.swin import (
    SwinTransformer,
    WindowAttention,
    relative_position_index,
    shifted_window_mask,
)

from .mask2former_tiny import tiny_mask2former_cfg


def swin_cfg(**swin):
    cfg = get_cfg()
    add_maskformer2_config(cfg)
    cfg.MODEL.BACKBONE.NAME = "D2SwinTransformer"
    for key, value in swin.items():
        setattr(cfg.MODEL.SWIN, key, value)
    return cfg


def release_names(embed, depths, heads, window, mlp_ratio=4.0, ape_side=None):
    """name -> shape of a Swin backbone in the Swin release's naming (as Mask2Former saves it),
    written from the architecture: patch embedding, blocks, patch merging, output norms."""
    names = {
        "patch_embed.proj.weight": (embed, 3, 4, 4),
        "patch_embed.proj.bias": (embed,),
        "patch_embed.norm.weight": (embed,),
        "patch_embed.norm.bias": (embed,),
    }
    if ape_side:
        names["absolute_pos_embed"] = (1, embed, ape_side, ape_side)
    for i, depth in enumerate(depths):
        dim, hidden = embed * 2**i, int(embed * 2**i * mlp_ratio)
        for j in range(depth):
            p = f"layers.{i}.blocks.{j}."
            names.update(
                {
                    p + "norm1.weight": (dim,),
                    p + "norm1.bias": (dim,),
                    p + "attn.relative_position_bias_table": ((2 * window - 1) ** 2, heads[i]),
                    p + "attn.relative_position_index": (window * window, window * window),
                    p + "attn.qkv.weight": (3 * dim, dim),
                    p + "attn.qkv.bias": (3 * dim,),
                    p + "attn.proj.weight": (dim, dim),
                    p + "attn.proj.bias": (dim,),
                    p + "norm2.weight": (dim,),
                    p + "norm2.bias": (dim,),
                    p + "mlp.fc1.weight": (hidden, dim),
                    p + "mlp.fc1.bias": (hidden,),
                    p + "mlp.fc2.weight": (dim, hidden),
                    p + "mlp.fc2.bias": (dim,),
                }
            )
        if i < len(depths) - 1:
            names[f"layers.{i}.downsample.reduction.weight"] = (2 * dim, 4 * dim)
            names[f"layers.{i}.downsample.norm.weight"] = (4 * dim,)
            names[f"layers.{i}.downsample.norm.bias"] = (4 * dim,)
        names[f"norm{i}.weight"] = (dim,)
        names[f"norm{i}.bias"] = (dim,)
    return names


def test_swin_t_has_the_release_names_and_shapes():
    backbone = build_backbone(swin_cfg())  # Mask2Former's MODEL.SWIN defaults: Swin-T
    shapes = {k: tuple(v.shape) for k, v in backbone.state_dict().items()}
    assert shapes == release_names(96, [2, 2, 6, 2], [3, 6, 12, 24], 7)
    assert sum(p.numel() for p in backbone.parameters()) == pytest.approx(27.52e6, abs=0.01e6)
    with_ape = build_backbone(
        swin_cfg(
            APE=True, PRETRAIN_IMG_SIZE=384, WINDOW_SIZE=12, EMBED_DIM=32, NUM_HEADS=[1, 2, 4, 8]
        )
    )
    shapes = {k: tuple(v.shape) for k, v in with_ape.state_dict().items()}
    assert shapes == release_names(32, [2, 2, 6, 2], [1, 2, 4, 8], 12, ape_side=96)


def test_mask2former_swin_checkpoint_loads_with_no_missing_or_unexpected_key(tmp_path):
    """A Mask2Former + Swin checkpoint in its released layout (a .pkl of numpy arrays whose
    state dict keeps the version metadata) loads strictly into the model its config builds."""
    cfg = tiny_mask2former_cfg()
    cfg.MODEL.BACKBONE.NAME = "D2SwinTransformer"
    cfg.MODEL.SWIN.EMBED_DIM = 32
    cfg.MODEL.SWIN.NUM_HEADS = [1, 2, 4, 8]
    cfg.MODEL.SWIN.DEPTHS = [2, 2, 2, 2]
    torch.manual_seed(0)
    saved = build_model(cfg)
    state = saved.state_dict()
    for key in state:
        state[key] = state[key].numpy()  # in place: keeps the OrderedDict and its _metadata
    path = tmp_path / "model_final_swin.pkl"
    path.write_bytes(pickle.dumps({"model": state, "__author__": "Mask2Former"}))
    torch.manual_seed(1)
    model = build_model(cfg)
    load_model_weights(model, str(path))  # strict: raises on any missing / unexpected key
    for key, value in model.state_dict().items():
        assert np.array_equal(value.numpy(), state[key]), key


def test_relative_position_index_is_the_release_formula():
    window = 3
    index = relative_position_index(window)
    coords = [(y, x) for y in range(window) for x in range(window)]
    for i, (yi, xi) in enumerate(coords):
        for j, (yj, xj) in enumerate(coords):
            assert index[i, j] == (yi - yj + window - 1) * (2 * window - 1) + (xi - xj + window - 1)


def test_window_attention_is_softmax_attention_with_the_bias():
    torch.manual_seed(0)
    attn = WindowAttention(8, window_size=3, num_heads=2).eval()
    x = torch.randn(4, 9, 8)
    q, k, v = attn.qkv(x).view(4, 9, 3, 2, 4).permute(2, 0, 3, 1, 4)
    bias = attn.relative_position_bias_table[relative_position_index(3).view(-1)].view(9, 9, 2)
    logits = (q * 4**-0.5) @ k.transpose(-2, -1) + bias.permute(2, 0, 1)
    mask = torch.zeros(2, 9, 9)
    mask[1, :, 5:] = -100.0
    expected = []
    for masked in (None, mask):
        full = logits if masked is None else logits + masked.repeat(2, 1, 1)[:, None]
        out = (full.softmax(-1) @ v).transpose(1, 2).reshape(4, 9, 8)
        expected.append(attn.proj(out))
    torch.testing.assert_close(attn(x), expected[0])
    torch.testing.assert_close(attn(x, mask), expected[1])


def test_shifted_window_mask_separates_the_wrapped_regions():
    mask = shifted_window_mask(8, 8, window=4, shift=2, device="cpu")
    assert mask.shape == (4, 16, 16)
    assert (mask[0] == 0).all()  # the top-left window holds one region only
    # the bottom-right window holds 4 regions: tokens see only their own region
    last = mask[3].view(4, 4, 4, 4)
    assert last[0, 0, 0, 0] == 0 and last[0, 0, 0, 3] == -100 and last[0, 0, 3, 3] == -100
    assert last[3, 3, 2, 2] == 0 and last[3, 3, 1, 1] == -100


def fill(model):
    """Deterministic weights from each parameter's name (independent of init order)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            seed = sum(ord(c) for c in name) % 97
            v = torch.sin(torch.arange(p.numel(), dtype=torch.float64) * 0.37 + seed) * 0.2
            if (
                name.endswith("norm.weight")
                or ".norm1.weight" in name
                or ".norm2.weight" in name
                or name.startswith("norm")
                and name.endswith("weight")
            ):
                v = 1.0 + v
            p.copy_(v.view_as(p).to(p.dtype))
    return model


def deterministic_input(h, w):
    return torch.cos(torch.arange(3 * h * w, dtype=torch.float64) * 0.013).view(1, 3, h, w).float()


# Outputs of Mask2Former's mask2former/modeling/backbone/swin.py (commit 9b0651c) with the
# weights of `fill` on `deterministic_input`: per level (shape, sum, sum of |x|, first values).
GOLDEN = {
    "w7": (
        dict(embed_dim=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8], window_size=7),
        (70, 90),
        [
            ((1, 32, 18, 23), 293.571271, 11012.350317, [-0.6316646, -0.6127282, -0.5947488]),
            ((1, 64, 9, 12), 178.171837, 5643.897295, [-0.5477858, -0.5470266, -0.5475218]),
            ((1, 128, 5, 6), 55.100458, 3259.724771, [-0.9738311, -0.9738521, -0.9739087]),
            ((1, 256, 3, 3), 0.812386, 1917.274689, [0.0358603, 0.0396663, 0.0347441]),
        ],
    ),
    "w5_ape": (
        dict(
            embed_dim=32,
            depths=[2, 2, 2, 2],
            num_heads=[2, 2, 4, 4],
            window_size=5,
            ape=True,
            pretrain_img_size=64,
        ),
        (61, 47),
        [
            ((1, 32, 16, 12), 128.485403, 5073.102830, [-0.9312329, -0.8983517, -0.9577021]),
            ((1, 64, 8, 6), 79.336631, 2499.880160, [-0.5281334, -0.5777565, -0.6301800]),
            ((1, 128, 4, 3), 22.076097, 1304.552795, [-0.9723020, -0.9745870, -0.9751872]),
            ((1, 256, 2, 2), 1.817062, 886.377914, [-0.2500093, -0.2494970, -0.2489841]),
        ],
    ),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_outputs_equal_mask2formers_swin(name):
    settings, size, levels = GOLDEN[name]
    model = fill(SwinTransformer(**settings).eval())
    with torch.no_grad():
        outs = model.forward_features(deterministic_input(*size))
    for i, (shape, total, magnitude, first) in enumerate(levels):
        out = outs[i].double()
        assert tuple(out.shape) == shape
        assert out.sum().item() == pytest.approx(total, rel=1e-4, abs=1e-2)
        assert out.abs().sum().item() == pytest.approx(magnitude, rel=1e-5)
        torch.testing.assert_close(
            out.flatten()[:3].float(), torch.tensor(first), rtol=0, atol=1e-5
        )


@pytest.mark.parametrize("size", [(64, 64), (61, 93), (17, 23)])
def test_any_input_size_and_strides(size):
    torch.manual_seed(0)
    cfg = swin_cfg(EMBED_DIM=32, NUM_HEADS=[1, 2, 4, 8], DEPTHS=[2, 2, 2, 2])
    backbone = build_backbone(cfg).eval()
    shapes = backbone.output_shape()
    assert [s.stride for s in shapes.values()] == [4, 8, 16, 32]
    assert backbone.size_divisibility == 32
    with torch.no_grad():
        outs = backbone(torch.randn(1, 3, *size))
    side = [-(-s // 4) for s in size]  # the patch embedding pads up, so does each merging
    for name, out in outs.items():
        assert out.shape == (1, shapes[name].channels, *side), name
        side = [-(-s // 2) for s in side]


def test_training_gradients_and_activation_checkpointing():
    torch.manual_seed(0)
    plain = build_backbone(
        swin_cfg(EMBED_DIM=32, NUM_HEADS=[1, 2, 4, 8], DEPTHS=[2, 2, 2, 2], DROP_PATH_RATE=0.0)
    ).train()
    ckpt = build_backbone(
        swin_cfg(
            EMBED_DIM=32,
            NUM_HEADS=[1, 2, 4, 8],
            DEPTHS=[2, 2, 2, 2],
            DROP_PATH_RATE=0.0,
            USE_CHECKPOINT=True,
        )
    ).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 40, 56)
    for model in (plain, ckpt):
        sum(o.square().mean() for o in model(x).values()).backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters()):
        assert a.grad is not None, name
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)


def test_bad_settings_name_the_key():
    with pytest.raises(ValueError, match=r"MODEL\.SWIN\.DEPTHS \[2, 2\] and MODEL\.SWIN\.NUM_H"):
        build_backbone(swin_cfg(DEPTHS=[2, 2]))
    with pytest.raises(ValueError, match=r"MODEL\.SWIN\.WINDOW_SIZE=0"):
        build_backbone(swin_cfg(WINDOW_SIZE=0))
    with pytest.raises(ValueError, match=r"D2SwinTransformer: input must be"):
        build_backbone(swin_cfg(EMBED_DIM=32, NUM_HEADS=[1, 2, 4, 8]))(torch.randn(3, 32, 32))


def test_absolute_position_embedding_is_interpolated_bicubically():
    torch.manual_seed(0)
    model = SwinTransformer(
        embed_dim=16,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 2, 2],
        window_size=3,
        ape=True,
        pretrain_img_size=32,
        out_indices=(0,),
    ).eval()
    x = torch.randn(1, 3, 20, 28)
    tokens = model.patch_embed(x)
    pos = F.interpolate(model.absolute_pos_embed, size=(5, 7), mode="bicubic")
    without = SwinTransformer(
        embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=3, out_indices=(0,)
    ).eval()
    state = {k: v for k, v in model.state_dict().items() if k != "absolute_pos_embed"}
    without.load_state_dict(state)
    level0, _ = model.layers[0](tokens + pos.permute(0, 2, 3, 1))
    with torch.no_grad():
        torch.testing.assert_close(
            model.forward_features(x)[0], model.norm0(level0).permute(0, 3, 1, 2)
        )
        assert not torch.allclose(model.forward_features(x)[0], without.forward_features(x)[0])
