"""DiNAT / NAT / DiNAT_s backbones: shapes and strides from the config, parameter and FLOP
counts against the paper, any input size, native vs pure-PyTorch outputs, dilation lists,
frozen stages, activation checkpointing."""

from typing import NamedTuple

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_backbone

import dinat_m2f.modeling  # noqa: F401
import dinat_m2f.ops.library as library
from dinat_m2f.config import add_dinat_config
from dinat_m2f.modeling.backbone import blocks, dinat
from dinat_m2f.modeling.flop_count import flop_count_analysis
from dinat_m2f.ops.na import dispatch
from tests.conftest import DINAT_MINI_OPTS, requires_native


def mini_cfg(*opts):
    cfg = get_cfg()
    add_dinat_config(cfg)
    cfg.MODEL.BACKBONE.NAME = "D2DiNAT"
    cfg.merge_from_list(DINAT_MINI_OPTS + list(opts))
    return cfg


@pytest.mark.parametrize("size", [(64, 64), (67, 93), (17, 23), (32, 200)])
def test_output_shapes_and_strides_follow_the_config(size):
    torch.manual_seed(0)
    backbone = build_backbone(mini_cfg()).eval()
    shapes = backbone.output_shape()
    assert list(shapes) == ["res2", "res3", "res4", "res5"]
    assert [s.stride for s in shapes.values()] == [4, 8, 16, 32]
    assert [s.channels for s in shapes.values()] == [64, 128, 256, 512]
    assert backbone.size_divisibility == 32
    with torch.no_grad():
        outs = backbone(torch.randn(2, 3, *size))
    for name, out in outs.items():
        stride = shapes[name].stride
        expected = tuple(-(-s // stride) for s in size)  # each stride-2 conv rounds up
        assert out.shape == (2, shapes[name].channels, *expected), name
        assert torch.isfinite(out).all()


def test_out_features_subset_and_config_spellings():
    cfg = mini_cfg("MODEL.DiNAT.OUT_FEATURES", "['res3', 'res5']", "MODEL.DINAT.EMBED_DIM", "32")
    backbone = build_backbone(cfg)
    assert list(backbone.output_shape()) == ["res3", "res5"]
    assert backbone.output_shape()["res5"].channels == 256
    assert not hasattr(backbone, "norm0")
    with pytest.raises(ValueError, match=r"MODEL.DINAT.OUT_FEATURES must name features among"):
        build_backbone(mini_cfg("MODEL.DINAT.OUT_FEATURES", "['p3']"))


@pytest.mark.parametrize(
    "constructor,params,gflops",
    [
        (dinat.dinat_mini, 20e6, 2.7),
        (dinat.dinat_tiny, 28e6, 4.3),
        (dinat.dinat_small, 51e6, 7.8),
        (dinat.dinat_base, 90e6, 13.7),
        (dinat.nat_mini, 20e6, 2.7),
    ],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
def test_parameters_and_flops_match_the_paper(constructor, params, gflops):
    model = constructor(num_classes=1000, out_indices=()).eval()
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - params) / params < 0.03, count
    with torch.no_grad():
        flops = flop_count_analysis(model, torch.randn(1, 3, 224, 224)).total()
    assert abs(flops / 1e9 - gflops) / gflops < 0.03, flops


@pytest.mark.parametrize("backend", ["unfused", "auto"])
def test_na_flops_are_counted(monkeypatch, backend):
    """Without the NA handles the count would miss k*k*dim per token and head; the same
    count whether qk and av run as two ops or as the fused CPU op ("auto")."""
    monkeypatch.setenv(dispatch.BACKEND_ENV, backend)
    model = dinat.dinat_mini(num_classes=1000, out_indices=()).eval()
    analysis = flop_count_analysis(model, torch.randn(1, 3, 224, 224))
    by_op = analysis.by_operator()
    # level 0: 56*56 tokens, 2 heads, 49 neighbors, head dim 32, 3 blocks; qk and av each
    level0 = 56 * 56 * 2 * 49 * 32 * 3
    if "na_fused" in by_op:
        assert backend == "auto" and by_op["na_fused"] >= 2 * level0
        assert "na_qk" not in by_op
    else:
        assert by_op["na_qk"] >= level0 and by_op["na_av"] >= level0
    monkeypatch.setenv(dispatch.BACKEND_ENV, "unfused")
    unfused = flop_count_analysis(model, torch.randn(1, 3, 224, 224)).by_operator()
    assert sum(n for op, n in by_op.items() if op.startswith("na_")) == sum(
        n for op, n in unfused.items() if op.startswith("na_")
    )


def test_large_variants_and_dinat_s():
    large = dinat.dinat_large_k11()
    assert large.levels[0].blocks[0].attn.rpb.shape == (6, 21, 21)
    assert large.dilations == dinat.MASK2FORMER_K11
    assert 195e6 < sum(p.numel() for p in large.parameters()) < 205e6
    tiny_s = dinat.dinat_s_tiny()
    assert tiny_s.dilations == [[1, 8], [1, 4], [1, 2, 1, 2, 1, 2], [1, 1]]
    assert isinstance(tiny_s.levels[0].downsample, blocks.PatchMerging)
    outs = tiny_s.forward_features(torch.randn(1, 3, 61, 45))
    assert [tuple(o.shape[1:]) for o in outs.values()] == [
        (96, 16, 12),
        (192, 8, 6),
        (384, 4, 3),
        (768, 2, 2),
    ]
    backbone = build_backbone(
        mini_cfg("MODEL.BACKBONE.NAME", "D2DiNATs", "MODEL.DINAT.MLP_RATIO", "4.0")
    )
    assert isinstance(backbone.patch_embed, blocks.PatchEmbed)


@pytest.mark.parametrize(
    "dilations,message",
    [
        ([[1, 2, 1], [1, 2, 1, 2]], r"dilations must have one list per level \(4 for depths"),
        (
            [[1, 2], [1, 2, 1, 2], [1] * 6, [1] * 5],
            r"dilations\[0\] must have one entry per block of level 0 \(depth 3\), got 2",
        ),
        (
            [[1, 0, 1], [1, 2, 1, 2], [1] * 6, [1] * 5],
            r"dilations\[0\] must hold ints >= 1, got \[1, 0, 1\]",
        ),
    ],
)
def test_dilation_lists_are_validated(dilations, message):
    with pytest.raises(ValueError, match=message):
        dinat.dinat_mini(dilations=dilations)


def test_dilations_change_at_test_time_with_the_same_weights():
    torch.manual_seed(0)
    trained = build_backbone(mini_cfg()).eval()
    nat_dilations = "[[1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]"
    other = build_backbone(mini_cfg("MODEL.DINAT.DILATIONS", nat_dilations)).eval()
    other.load_state_dict(trained.state_dict())  # strict: no weight depends on dilation
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        a, b = trained(x)["res2"], other(x)["res2"]
    assert not torch.allclose(a, b)


@requires_native
def test_native_and_pure_pytorch_backbones_agree(monkeypatch):
    torch.manual_seed(0)
    backbone = build_backbone(mini_cfg()).double().eval()
    x = torch.randn(1, 3, 96, 80, dtype=torch.float64)
    with torch.no_grad():
        ours = backbone(x)
        monkeypatch.setitem(library.NATIVE_DEVICES, "na", ())
        with pytest.warns(RuntimeWarning, match="not built for cpu tensors"):
            reference = backbone(x)
    for name in ours:
        torch.testing.assert_close(ours[name], reference[name], rtol=1e-10, atol=1e-10)


# MODEL.DINAT.FROZEN_STAGES -> the frozen modules, numbered as the DiNAT release's D2DiNAT
# (Swin's numbering: 1 would be Swin's absolute position embedding, which DiNAT lacks)
FROZEN = {
    -1: [],
    0: ["patch_embed"],
    1: ["patch_embed"],
    2: ["patch_embed", "levels.0"],
    3: ["patch_embed", "levels.0", "levels.1"],
    4: ["patch_embed", "levels.0", "levels.1", "levels.2"],
    5: ["patch_embed", "levels.0", "levels.1", "levels.2", "levels.3"],
}


@pytest.mark.parametrize("stages", sorted(FROZEN))
def test_frozen_stages_are_numbered_like_the_release_and_work_for_every_value(stages):
    """The release's code freezes the tokenizer for 0 and levels[0..k-2] for k >= 2 (and fails
    there, reaching for a missing `pos_drop`); here every value works."""
    backbone = build_backbone(
        mini_cfg("MODEL.DINAT.FROZEN_STAGES", str(stages), "MODEL.DINAT.DROP_PATH_RATE", "0.3")
    )
    backbone.train()
    frozen = [backbone.get_submodule(name) for name in FROZEN[stages]]
    trained = [
        backbone.get_submodule(f"levels.{i}")
        for i in range(4)
        if f"levels.{i}" not in FROZEN[stages]
    ]
    assert all(not m.training for m in frozen) and all(m.training for m in trained)
    assert backbone.pos_drop.training == (stages < 2)
    outs = backbone(torch.randn(2, 3, 64, 64))
    sum(o.sum() for o in outs.values()).backward()
    for module in frozen:
        for name, p in module.named_parameters():
            assert not p.requires_grad and p.grad is None, name
    for module in trained + [backbone.norm0, backbone.norm3]:
        assert all(p.grad is not None for p in module.parameters())


def test_frozen_stages_out_of_range_is_an_error_naming_the_range():
    with pytest.raises(ValueError, match=r"frozen_stages must be in -1..5 .*got 6"):
        dinat.dinat_mini(frozen_stages=6)
    with pytest.raises(ValueError, match=r"MODEL.DINAT.FROZEN_STAGES=-2 must be in -1..5"):
        build_backbone(mini_cfg("MODEL.DINAT.FROZEN_STAGES", "-2"))


def test_activation_checkpointing_gives_identical_gradients():
    torch.manual_seed(0)
    plain = build_backbone(mini_cfg("MODEL.DINAT.DROP_PATH_RATE", "0.0")).train()
    ckpt = build_backbone(
        mini_cfg("MODEL.DINAT.DROP_PATH_RATE", "0.0", "MODEL.DINAT.USE_CHECKPOINT", "True")
    ).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 72)
    grads = []
    for model in (plain, ckpt):
        outs = model(x)
        sum((o * o).mean() for o in outs.values()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-6)


class Release(NamedTuple):
    """A model of the DiNAT release, as its constructor builds it."""

    embed_dim: int
    depths: list[int]
    num_heads: list[int]
    mlp_ratio: float
    drop_path_rate: float
    layer_scale: float | None
    kernel_size: int
    dilations: list[list[int]] | None


# The DiNAT release's ImageNet models (classification/dinat.py and nat.py of
# SHI-Labs/Neighborhood-Attention-Transformer@d334f5b)
_D224_MINI = [[1, 8, 1], [1, 4, 1, 4], [1, 2, 1, 2, 1, 2], [1] * 5]
_D224 = [[1, 8, 1], [1, 4, 1, 4], [1, 2] * 9, [1] * 5]
_D384 = [[1, 13, 1], [1, 6, 1, 6], [1, 3] * 9, [1] * 5]
_DEEP = [3, 4, 18, 5]
RELEASE_VARIANTS = {
    "dinat_mini": Release(64, [3, 4, 6, 5], [2, 4, 8, 16], 3, 0.2, None, 7, _D224_MINI),
    "dinat_tiny": Release(64, _DEEP, [2, 4, 8, 16], 3, 0.2, None, 7, _D224),
    "dinat_small": Release(96, _DEEP, [3, 6, 12, 24], 2, 0.3, None, 7, _D224),
    "dinat_base": Release(128, _DEEP, [4, 8, 16, 32], 2, 0.5, 1e-5, 7, _D224),
    "dinat_large": Release(192, _DEEP, [6, 12, 24, 48], 2, 0.35, None, 7, _D224),
    "dinat_large_384": Release(192, _DEEP, [6, 12, 24, 48], 2, 0.35, None, 7, _D384),
    "dinat_large_384_11x11": Release(192, _DEEP, [6, 12, 24, 48], 2, 0.35, None, 11, _D224),
    "dinat_large_21k": Release(192, _DEEP, [6, 12, 24, 48], 2, 0.2, None, 7, _D224),
    "dinat_large_21k_11x11": Release(192, _DEEP, [6, 12, 24, 48], 2, 0.2, None, 11, _D224),
    "nat_mini": Release(64, [3, 4, 6, 5], [2, 4, 8, 16], 3, 0.2, None, 7, None),
    "nat_tiny": Release(64, _DEEP, [2, 4, 8, 16], 3, 0.2, None, 7, None),
    "nat_small": Release(96, _DEEP, [3, 6, 12, 24], 2, 0.3, 1e-5, 7, None),
    "nat_base": Release(128, _DEEP, [4, 8, 16, 32], 2, 0.5, 1e-5, 7, None),
}


@pytest.mark.parametrize("name", sorted(RELEASE_VARIANTS))
def test_named_constructors_build_the_release_models(name, monkeypatch):
    """Each constructor asks DiNAT for the release's architecture (recorded, not built: the
    Large ones take seconds each)."""
    from dinat_m2f.modeling.backbone import MODEL_CONSTRUCTORS

    asked = {}
    monkeypatch.setattr(dinat, "DiNAT", lambda **settings: asked.update(settings))
    MODEL_CONSTRUCTORS[name]()
    release = RELEASE_VARIANTS[name]
    assert asked["embed_dim"] == release.embed_dim and list(asked["depths"]) == release.depths
    assert list(asked["num_heads"]) == release.num_heads
    assert asked["mlp_ratio"] == release.mlp_ratio
    assert asked["drop_path_rate"] == release.drop_path_rate
    assert asked["layer_scale"] == release.layer_scale
    assert asked["kernel_size"] == release.kernel_size
    assert asked.get("dilations") == release.dilations


def test_a_release_variant_builds_with_its_dilations_and_layer_scale():
    model = dinat.nat_small(num_classes=1000, out_indices=())
    assert model.dilations == [[1] * d for d in _DEEP]
    assert model.levels[2].blocks[0].gamma1.shape == (384,)
    assert abs(sum(p.numel() for p in model.parameters()) / 1e6 - 51) < 1  # NAT-S: 51M
