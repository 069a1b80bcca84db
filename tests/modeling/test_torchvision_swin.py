"""D2TorchvisionSwin: torchvision's Swin as a registered detectron2 backbone (res2..res5,
strides 4..32, widths C..8C, LayerNorm'd, channels-first), its MODEL.TVSWIN keys, and
Mask2Former running on it."""

import pytest
import torch
import torchvision
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, build_backbone, build_model

import dinat_m2f.modeling  # noqa: F401  (registers the backbones and the model)
from dinat_m2f.config import add_tvswin_config
from dinat_m2f.engine.setup import load_cfg
from dinat_m2f.modeling.backbone.torchvision_swin import (
    SWIN_VARIANTS,
    D2TorchvisionSwin,
    build_swin_features,
)

from .mask2former_tiny import NUM_CLASSES, tiny_mask2former_cfg
from .test_mask2former_model import _batch

NAMES = ["res2", "res3", "res4", "res5"]


def swin_cfg(**tvswin):
    cfg = get_cfg()
    add_tvswin_config(cfg)
    cfg.MODEL.BACKBONE.NAME = "D2TorchvisionSwin"
    cfg.MODEL.TVSWIN.DROP_PATH_RATE = 0.0
    for key, value in tvswin.items():
        cfg.MODEL.TVSWIN[key] = value
    return cfg


@pytest.fixture(scope="module")
def swin_t():
    torch.manual_seed(0)
    return build_backbone(swin_cfg()).eval()


def test_registered_and_built_from_cfg(swin_t):
    assert BACKBONE_REGISTRY.get("D2TorchvisionSwin") is D2TorchvisionSwin
    assert isinstance(swin_t, D2TorchvisionSwin)
    assert swin_t.size_divisibility == 32 and swin_t.window_size == 7


def test_add_tvswin_config_defaults_and_idempotence():
    cfg = swin_cfg()
    c = cfg.MODEL.TVSWIN
    assert (c.VARIANT, c.WINDOW_SIZE, c.WEIGHTS_IMAGENET) == ("swin_t", 0, "")
    assert list(c.OUT_FEATURES) == NAMES
    c.VARIANT = "swin_s"
    add_tvswin_config(cfg)  # a second call keeps what is there
    assert cfg.MODEL.TVSWIN.VARIANT == "swin_s"


@pytest.mark.parametrize("size", [(224, 224), (230, 301), (100, 61)])
def test_shapes_strides_channels(swin_t, size):
    """224: 56/28/14/7; other sizes: ceil(side / stride) (input padded to the patch size,
    odd maps padded before merging, windows padded inside the attention)."""
    height, width = size
    with torch.no_grad():
        out = swin_t(torch.randn(1, 3, height, width))
    shapes = swin_t.output_shape()
    assert list(out) == list(shapes) == NAMES
    for i, name in enumerate(NAMES):
        stride = 4 * 2**i
        assert shapes[name] == ShapeSpec(channels=96 * 2**i, stride=stride)
        assert out[name].shape == (1, 96 * 2**i, -(-height // stride), -(-width // stride))
        assert out[name].is_contiguous() and torch.isfinite(out[name]).all()


def test_same_network_as_torchvision(swin_t):
    """The stages are torchvision's swin_t (same names and shapes, so its checkpoints load),
    and res5 is the LayerNorm'd output of torchvision's `features`."""
    torch.manual_seed(1)
    reference = torchvision.models.swin_t().features.eval()
    ours = swin_t.features.state_dict()
    theirs = reference.state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    swin_t.features.load_state_dict(theirs)
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        expected = swin_t.norm3(reference(x)).permute(0, 3, 1, 2)
        got = swin_t(x)["res5"]
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("variant", ["swin_v2_t"])
def test_v2_matches_torchvision_names(variant):
    features, widths = build_swin_features(variant, 0, 0.0)
    reference = getattr(torchvision.models, variant)().features
    assert {k: v.shape for k, v in features.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }
    assert widths == [96, 192, 384, 768]


def test_swin_l_hyperparameters():
    assert SWIN_VARIANTS["swin_l"] == (192, (2, 2, 18, 2), (6, 12, 24, 48), 7, False)


def test_out_features_subset_and_window():
    torch.manual_seed(0)
    backbone = build_backbone(swin_cfg(OUT_FEATURES=["res3", "res5"], WINDOW_SIZE=5)).eval()
    assert hasattr(backbone, "norm1") and not hasattr(backbone, "norm0")
    assert backbone.features[1][0].attn.window_size == [5, 5]
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 64, 64))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "res3": (1, 192, 8, 8),
        "res5": (1, 768, 2, 2),
    }


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(VARIANT="swin_xl"), "MODEL.TVSWIN.VARIANT"),
        (dict(OUT_FEATURES=["res6"]), "MODEL.TVSWIN.OUT_FEATURES"),
        (dict(WEIGHTS_IMAGENET="IMAGENET9K"), "Swin_T_Weights"),
        (dict(WEIGHTS_IMAGENET="IMAGENET1K_V1", WINDOW_SIZE=12), "WINDOW_SIZE=12"),
        (dict(VARIANT="swin_v2_t", WEIGHTS_IMAGENET="Swin_T_Weights.V7"), "Swin_V2_T_Weights"),
        (dict(VARIANT="swin_l", WEIGHTS_IMAGENET="IMAGENET1K_V1"), "no swin_l weights"),
    ],
)
def test_bad_settings_are_named_before_any_download(settings, message):
    with pytest.raises(ValueError, match=message):
        build_backbone(swin_cfg(**settings))


def _hub_cache(monkeypatch, tmp_path, weights) -> str:
    """torch hub's cache in tmp_path; the path where `weights` is cached."""
    import os

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    path = tmp_path / "hub" / "checkpoints" / os.path.basename(weights.url)
    path.parent.mkdir(parents=True)
    return str(path)


def test_imagenet_weights_load_into_the_stages(monkeypatch, tmp_path):
    """WEIGHTS_IMAGENET loads torchvision's checkpoint (here a state dict of torchvision's own
    swin_t, put in torch hub's cache so nothing is downloaded) into `features`."""
    weights = torchvision.models.Swin_T_Weights.IMAGENET1K_V1
    cached = _hub_cache(monkeypatch, tmp_path, weights)
    torch.manual_seed(2)
    state = torchvision.models.swin_t().state_dict()
    torch.save(state, cached)
    backbone = build_backbone(swin_cfg(WEIGHTS_IMAGENET="Swin_T_Weights.IMAGENET1K_V1"))
    for key, value in backbone.features.state_dict().items():
        torch.testing.assert_close(value, state["features." + key])


class _CreatesMarker:
    """Unpickling it would create a file (how a malicious checkpoint runs code)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_imagenet_weights_are_read_as_plain_data_only(monkeypatch, tmp_path):
    """The torchvision checkpoint goes through the project's safe loader like every other
    checkpoint: a cached file that asks for an object is refused, and nothing of it runs."""
    from dinat_m2f.checkpoint import UnsafeCheckpointError

    weights = torchvision.models.Swin_T_Weights.IMAGENET1K_V1
    cached = _hub_cache(monkeypatch, tmp_path, weights)
    marker = tmp_path / "marker"
    torch.save({"features.0.0.weight": _CreatesMarker(marker)}, cached)
    with pytest.raises(UnsafeCheckpointError, match=r"refused to load '(builtins|io)\.open'"):
        build_backbone(swin_cfg(WEIGHTS_IMAGENET="Swin_T_Weights.IMAGENET1K_V1"))
    assert not marker.exists()


def test_bad_input_rank(swin_t):
    with pytest.raises(ValueError, match=r"\(batch, channels, height, width\)"):
        swin_t(torch.randn(3, 64, 64))


def test_load_cfg_reads_the_swin_configs():
    cfg = load_cfg(
        "configs/ade20k/semantic-segmentation/swin/maskformer2_tvswin_tiny_bs16_160k_res512.yaml",
        ["MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "False"],
    )
    assert cfg.MODEL.BACKBONE.NAME == "D2TorchvisionSwin" and cfg.MODEL.TVSWIN.VARIANT == "swin_t"


def test_mask2former_on_swin_trains_and_infers():
    cfg = tiny_mask2former_cfg()
    add_tvswin_config(cfg)
    cfg.MODEL.BACKBONE.NAME = "D2TorchvisionSwin"
    cfg.MODEL.TVSWIN.DROP_PATH_RATE = 0.0
    torch.manual_seed(0)
    model = build_model(cfg)
    assert isinstance(model.backbone, D2TorchvisionSwin)
    batch = _batch(torch.Generator().manual_seed(0))
    model.train()
    losses = model(batch)
    assert losses and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.backbone.features[0][0].weight.grad is not None
    model.eval()
    with torch.no_grad():
        results = model([{k: v for k, v in x.items() if k != "instances"} for x in batch])
    assert results[0]["sem_seg"].shape == (NUM_CLASSES, 64, 96)
    assert results[1]["sem_seg"].shape == (NUM_CLASSES, 80, 64)
