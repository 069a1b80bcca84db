"""Strict loading of trained weights (`load_model_weights`): what fits loads exactly, and every
way a checkpoint can fail to fit is an error naming the path and the keys."""

import logging

import pytest
import torch
from torch import nn

from dinat_m2f.checkpoint import WeightsError, load_model_weights


class Net(nn.Module):
    """`trunk` has the same shape in every Net; `head` depends on the number of classes."""

    def __init__(self, num_classes: int = 3, extra: int = 0) -> None:
        super().__init__()
        self.trunk = nn.Linear(4, 4)
        self.head = nn.Linear(4, num_classes)
        self.extras = nn.ModuleList(nn.Linear(1, 1, bias=False) for _ in range(extra))


def _save(tmp_path, model: nn.Module, name: str = "ckpt.pth") -> str:
    path = str(tmp_path / name)
    torch.save({"model": model.state_dict()}, path)
    return path


def _copy(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_a_checkpoint_that_fits_loads_every_tensor(tmp_path):
    torch.manual_seed(0)
    saved = Net()
    path = _save(tmp_path, saved)
    torch.manual_seed(1)
    model = Net()
    load_model_weights(model, path)
    for key, value in saved.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_other_shapes_are_an_error_naming_the_key_and_both_shapes(tmp_path):
    path = _save(tmp_path, Net(num_classes=5))
    with pytest.raises(WeightsError) as info:
        load_model_weights(Net(num_classes=3), path, partial_option="--allow-partial-weights")
    message = str(info.value)
    assert f"MODEL.WEIGHTS {path} does not fit the model" in message
    assert "head.weight: (5, 4) vs (3, 4)" in message and "head.bias: (5,) vs (3,)" in message
    assert "trunk" not in message  # it fits
    assert "pass --allow-partial-weights" in message
    # without a switch to suggest, none is suggested
    with pytest.raises(WeightsError) as info:
        load_model_weights(Net(num_classes=3), path)
    assert "pass " not in str(info.value)


def test_missing_and_unexpected_keys_are_errors(tmp_path):
    path = _save(tmp_path, Net(extra=2))
    with pytest.raises(WeightsError, match=r"not in the model \(2\):\n    extras.0.weight"):
        load_model_weights(Net(), path)
    path = _save(tmp_path, Net(), "small.pth")
    missing = r"missing in the checkpoint \(1\):\n    extras.0.weight"
    with pytest.raises(WeightsError, match=missing):
        load_model_weights(Net(extra=1), path)


def test_long_key_lists_are_cut_with_a_count(tmp_path):
    path = _save(tmp_path, Net(extra=25))
    with pytest.raises(WeightsError) as info:
        load_model_weights(Net(), path)
    message = str(info.value)
    assert "not in the model (25):" in message and "... and 5 more" in message
    assert message.count("extras.") == 20


def test_allow_partial_loads_what_fits_and_warns(tmp_path, caplog):
    torch.manual_seed(0)
    saved = Net(num_classes=5)
    path = _save(tmp_path, saved)
    torch.manual_seed(1)
    model = Net(num_classes=3)
    head_before = _copy(model.head)
    with caplog.at_level(logging.WARNING, logger="dinat_m2f.checkpoint.model_weights"):
        load_model_weights(model, path, allow_partial=True, partial_option="--partial")
    assert torch.equal(model.trunk.weight, saved.trunk.weight)
    assert torch.equal(model.trunk.bias, saved.trunk.bias)
    for key, value in head_before.items():  # skipped: keeps its own values
        assert torch.equal(model.head.state_dict()[key], value), key
    assert "head.weight: (5, 4) vs (3, 4)" in caplog.text and "--partial" in caplog.text


def test_empty_path(caplog):
    model = Net()
    before = _copy(model)
    with pytest.raises(WeightsError, match="MODEL.WEIGHTS is empty") as info:
        load_model_weights(model, "", partial_option="--allow-partial-weights")
    assert "--allow-partial-weights" in str(info.value)
    with caplog.at_level(logging.WARNING, logger="dinat_m2f.checkpoint.model_weights"):
        load_model_weights(model, "", allow_partial=True)
    assert "random initialisation" in caplog.text
    for key, value in before.items():
        assert torch.equal(model.state_dict()[key], value), key


def test_missing_and_unreadable_files_name_the_path_and_the_source(tmp_path):
    missing = str(tmp_path / "nope.pth")
    with pytest.raises(WeightsError, match=f"MODEL.WEIGHTS file not found: {missing}"):
        load_model_weights(Net(), missing)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=f"cannot load the last checkpoint {junk}: "):
        load_model_weights(Net(), str(junk), source="the last checkpoint")
