"""The project's `DetectionCheckpointer`: it reads the checkpoint layouts users have (ours,
detectron2's model-zoo `.pkl`, the DiNAT release's converter output, Caffe2 blobs, pycls) as
plain data only, stops on weights that fit nothing, and exchanges MaskFormerHead checkpoints
with Mask2Former through the state-dict version metadata (`_version = 2`)."""

import collections
import logging

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from torch import nn

import dinat_m2f.modeling  # noqa: F401
from dinat_m2f.checkpoint import DetectionCheckpointer, UnsafeCheckpointError, WeightsError
from dinat_m2f.modeling.meta_arch.mask_former_head import (
    MaskFormerHead,
    rename_v1_pixel_decoder_keys,
)
from tests.checkpoint.test_safe_load import CreatesMarker, write_pickle
from tests.modeling.mask2former_tiny import tiny_mask2former_cfg


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.backbone(x))


def weights_equal(model: nn.Module, expected: dict) -> None:
    state = model.state_dict()
    for key, value in expected.items():
        assert torch.equal(state[key], torch.as_tensor(value)), key


def test_model_zoo_pkl_with_numpy_arrays_loads(tmp_path):
    """detectron2's / Mask2Former's released layout: {"model": numpy arrays, "__author__"}."""
    torch.manual_seed(0)
    source = Net()
    arrays = {k: v.numpy().copy() for k, v in source.state_dict().items()}
    path = write_pickle(tmp_path / "model_final.pkl", {"model": arrays, "__author__": "Bowen"}, 2)
    model = Net()
    DetectionCheckpointer(model).load(path)
    weights_equal(model, arrays)


def test_official_dinat_converter_pkl_maps_imagenet_names_onto_the_backbone(tmp_path):
    """The DiNAT release's converter pickles {"model": <ImageNet state dict of tensors>,
    "__author__": "third_party", "matching_heuristics": True}: keys without `backbone.`."""
    torch.manual_seed(1)
    imagenet = Net().backbone.state_dict()
    path = write_pickle(
        tmp_path / "dinat_large_in22k_224.pkl",
        {"model": imagenet, "__author__": "third_party", "matching_heuristics": True},
    )
    model = Net()
    DetectionCheckpointer(model).load(path)
    weights_equal(model, {f"backbone.{k}": v for k, v in imagenet.items()})


def test_caffe2_blobs_and_pycls_layouts(tmp_path):
    torch.manual_seed(2)
    state = {k: v.numpy().copy() for k, v in Net().state_dict().items()}
    blobs = dict(state, **{"head.weight_momentum": np.zeros((2, 4), np.float32)})
    model = Net()
    DetectionCheckpointer(model).load(write_pickle(tmp_path / "c2.pkl", {"blobs": blobs}, 2))
    weights_equal(model, state)

    pycls = tmp_path / "model.pyth"
    torch.save({"model_state": {k: torch.from_numpy(v) for k, v in state.items()}}, pycls)
    model = Net()
    DetectionCheckpointer(model).load(str(pycls))
    weights_equal(model, state)
    torch.save({"not_model_state": {}}, pycls)
    with pytest.raises(WeightsError, match=r"model\.pyth: a pycls .pyth checkpoint holds"):
        DetectionCheckpointer(Net()).load(str(pycls))


def test_our_checkpoints_save_and_resume_through_the_safe_loader(tmp_path):
    torch.manual_seed(3)
    model = Net()
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 3)).sum().backward()
    optimizer.step()
    checkpointer = DetectionCheckpointer(model, str(tmp_path), optimizer=optimizer)
    checkpointer.save("model_0000001", iteration=1)
    restored, restored_opt = Net(), torch.optim.AdamW(Net().parameters())
    checkpointer = DetectionCheckpointer(restored, str(tmp_path), optimizer=restored_opt)
    extra = checkpointer.resume_or_load("", resume=True)
    assert extra["iteration"] == 1
    weights_equal(restored, model.state_dict())
    assert restored_opt.state_dict()["state"][0]["step"] == 1


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_the_checkpointer_refuses_objects_and_runs_none(tmp_path, suffix):
    marker = tmp_path / "marker"
    content = {"model": {"head.weight": CreatesMarker(marker)}, "__author__": "x"}
    path = tmp_path / f"evil{suffix}"
    write_pickle(path, content) if suffix == ".pkl" else torch.save(content, path)
    with pytest.raises(UnsafeCheckpointError, match=rf"evil\{suffix}: refused to load"):
        DetectionCheckpointer(Net()).load(str(path))
    assert not marker.exists()


def test_weights_of_another_architecture_are_an_error_naming_keys(tmp_path):
    other = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
    path = tmp_path / "other.pth"
    torch.save({"model": other.state_dict()}, path)
    with pytest.raises(
        WeightsError,
        match=r"none of the 7 weights of the checkpoint fits the model"
        r".*'0\.weight'.*'backbone\.0\.weight'",
    ):
        DetectionCheckpointer(Net()).load(str(path))
    # same names, other shapes: nothing fits either
    torch.save({"model": {"head.weight": torch.zeros(5, 5)}}, path)
    with pytest.raises(WeightsError, match=r"none of the 1 weights"):
        DetectionCheckpointer(Net()).load(str(path))
    # one fitting tensor is enough (a pretrained backbone leaves the head random)
    torch.save({"model": {"head.bias": torch.ones(2), "extra": torch.ones(1)}}, path)
    model = Net()
    DetectionCheckpointer(model).load(str(path))
    assert torch.equal(model.head.bias, torch.ones(2))


def test_a_file_that_is_no_dict_is_an_error(tmp_path):
    path = write_pickle(tmp_path / "list.pkl", [1, 2])
    with pytest.raises(WeightsError, match=r"list\.pkl: a checkpoint holds a dict, this file a"):
        DetectionCheckpointer(Net()).load(path)


# --- MaskFormerHead version 2 ---------------------------------------------------------------


def test_rename_rule_is_mask2formers():
    """Every key holding "sem_seg_head" (anywhere in the state dict) and not starting with the
    predictor's prefix has each occurrence of the prefix replaced."""
    keys = {
        "sem_seg_head.adapter_1.weight": "sem_seg_head.pixel_decoder.adapter_1.weight",
        "sem_seg_head.mask_features.bias": "sem_seg_head.pixel_decoder.mask_features.bias",
        "sem_seg_head.predictor.class_embed.weight": "sem_seg_head.predictor.class_embed.weight",
        "backbone.norm0.weight": "backbone.norm0.weight",
        # a version-2 key is renamed again: the version metadata is what prevents it
        "sem_seg_head.pixel_decoder.layer_1.weight": (
            "sem_seg_head.pixel_decoder.pixel_decoder.layer_1.weight"
        ),
    }
    state = {k: torch.zeros(1) for k in keys}
    assert rename_v1_pixel_decoder_keys(state, "sem_seg_head.")
    assert sorted(state) == sorted(keys.values())
    assert not rename_v1_pixel_decoder_keys({"backbone.x": torch.zeros(1)}, "sem_seg_head.")


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model(tiny_mask2former_cfg())


def test_saved_checkpoints_carry_version_2_and_load_back_unchanged(tiny_model, tmp_path, caplog):
    assert MaskFormerHead._version == 2
    DetectionCheckpointer(tiny_model, str(tmp_path)).save("model_final")
    saved = torch.load(tmp_path / "model_final.pth", weights_only=True)["model"]
    assert saved._metadata["sem_seg_head"]["version"] == 2
    torch.manual_seed(1)
    fresh = build_model(tiny_mask2former_cfg())
    with caplog.at_level(logging.WARNING):
        DetectionCheckpointer(fresh).load(str(tmp_path / "model_final.pth"))
    weights_equal(fresh, tiny_model.state_dict())
    assert "version" not in caplog.text


def old_pixel_decoder_names(state: dict) -> dict:
    """A MaskFormer (version 1) state dict: the pixel decoder directly under sem_seg_head."""
    return {k.replace("sem_seg_head.pixel_decoder.", "sem_seg_head."): v for k, v in state.items()}


def test_version_1_state_dicts_get_the_pixel_decoder_renamed(tiny_model, tmp_path, caplog):
    state = tiny_model.state_dict()
    old = collections.OrderedDict(old_pixel_decoder_names(state))
    old._metadata = collections.OrderedDict({"sem_seg_head": {"version": 1}})
    path = tmp_path / "v1.pth"
    torch.save({"model": old}, path)
    torch.manual_seed(1)
    fresh = build_model(tiny_mask2former_cfg())
    with caplog.at_level(logging.WARNING, logger="dinat_m2f.modeling.meta_arch.mask_former_head"):
        DetectionCheckpointer(fresh).load(str(path))
    weights_equal(fresh, state)
    assert "state dict of version 1 (< 2): pixel decoder keys renamed" in caplog.text

    # a .pkl of plain dicts has no metadata at all: version None, renamed the same way
    arrays = {k: v.numpy() for k, v in old_pixel_decoder_names(state).items()}
    pkl = write_pickle(tmp_path / "v1.pkl", {"model": arrays, "__author__": "MaskFormer"})
    torch.manual_seed(2)
    fresh = build_model(tiny_mask2former_cfg())
    DetectionCheckpointer(fresh).load(pkl)
    weights_equal(fresh, state)


def test_version_2_names_need_version_2_metadata(tiny_model, tmp_path):
    """As in Mask2Former: current names in a dict without version metadata are taken for
    version 1 and renamed once more, so the pixel decoder does not load. Checkpoints saved by
    our checkpointer (or Mask2Former's) carry the metadata; `.pkl` conversions must keep it
    (the safe loader keeps OrderedDict._metadata)."""
    state = tiny_model.state_dict()
    path = write_pickle(
        tmp_path / "no_metadata.pkl", {"model": {k: v for k, v in state.items()}, "__author__": "x"}
    )
    torch.manual_seed(1)
    fresh = build_model(tiny_mask2former_cfg())
    incompatible = DetectionCheckpointer(fresh)._load_model(
        DetectionCheckpointer(fresh)._load_file(path)
    )
    assert any(k.startswith("sem_seg_head.pixel_decoder.") for k in incompatible.missing_keys)
    assert any(
        k.startswith("sem_seg_head.pixel_decoder.pixel_decoder.")
        for k in incompatible.unexpected_keys
    )

    with_metadata = write_pickle(
        tmp_path / "with_metadata.pkl", {"model": state, "__author__": "x"}
    )  # the OrderedDict itself
    fresh = build_model(tiny_mask2former_cfg())
    DetectionCheckpointer(fresh).load(with_metadata)
    weights_equal(fresh, state)
