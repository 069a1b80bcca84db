"""Checkpoint files (dinat_m2f.checkpoint.atomic_files): atomic writes, a pointer that only
names complete files, recovery from a damaged pointer or file, left-over partial files, and no
checkpoint with non-finite weights (also not from the interrupt checkpoint)."""

import logging
import os

import pytest
import torch
from torch import nn

from dinat_m2f.checkpoint.atomic_files import (
    CheckpointFileError,
    TrainingCheckpointer,
    atomic_write,
    checkpoint_file_problem,
    partial_files,
)
from dinat_m2f.checkpoint.finite_weights import NonFiniteWeightsError
from dinat_m2f.engine.interrupt_checkpoint import CheckpointOnInterrupt

from ..log_capture import captured_log


def _checkpointer(folder, value: float = 1.0) -> TrainingCheckpointer:
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.fill_(value)
    return TrainingCheckpointer(model, str(folder))


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path):
    path = str(tmp_path / "model.pth")
    atomic_write(path, lambda f: f.write(b"old"))

    def failing(f):
        f.write(b"half of the new")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, failing)
    assert open(path, "rb").read() == b"old"
    assert os.listdir(tmp_path) == ["model.pth"]  # no temporary file left behind


def test_save_writes_complete_files_and_the_pointer_last(tmp_path):
    ck = _checkpointer(tmp_path)
    ck.save("model_0000004", iteration=4)
    assert open(tmp_path / "last_checkpoint").read() == "model_0000004.pth"
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000004.pth"]
    assert checkpoint_file_problem(str(tmp_path / "model_0000004.pth")) is None
    assert ck.get_checkpoint_file() == str(tmp_path / "model_0000004.pth")


def test_truncated_and_empty_files_are_recognised(tmp_path):
    ck = _checkpointer(tmp_path)
    ck.save("model_0000004", iteration=4)
    data = open(tmp_path / "model_0000004.pth", "rb").read()
    for cut in (len(data) // 2, len(data) - 10, 100):
        (tmp_path / "cut.pth").write_bytes(data[:cut])
        problem = checkpoint_file_problem(str(tmp_path / "cut.pth"))
        assert problem is not None and "truncated" in problem, (cut, problem)
    (tmp_path / "empty.pth").write_bytes(b"")
    assert checkpoint_file_problem(str(tmp_path / "empty.pth")) == "is empty"
    assert checkpoint_file_problem(str(tmp_path / "absent.pth")) == "does not exist"


@pytest.mark.parametrize("damage", ["missing", "truncated", "empty pointer"])
def test_resume_falls_back_to_the_newest_complete_checkpoint(tmp_path, damage):
    ck = _checkpointer(tmp_path, 1.0)
    ck.save("model_0000004", iteration=4)
    with torch.no_grad():
        ck.model.weight.fill_(2.0)
    ck.save("model_0000009", iteration=9)
    newest = tmp_path / "model_0000009.pth"
    if damage == "missing":
        newest.unlink()
    elif damage == "truncated":  # as a non-atomic writer killed mid-write would leave it
        newest.write_bytes(newest.read_bytes()[:300])
    else:
        (tmp_path / "last_checkpoint").write_text("")

    fresh = _checkpointer(tmp_path, 0.0)
    with captured_log("dinat_m2f.checkpoint.atomic_files", logging.WARNING) as log:
        assert fresh.has_checkpoint()
        extra = fresh.resume_or_load("", resume=True)
    expected = "model_0000009.pth" if damage == "empty pointer" else "model_0000004.pth"
    assert extra["iteration"] == int(expected[6:13])
    assert torch.all(fresh.model.weight == (2.0 if damage == "empty pointer" else 1.0))
    warning = " ".join(log)
    assert len(log) == 1  # once, although the pointer is read three times
    assert f"resuming from {tmp_path / expected}, the newest complete checkpoint" in warning
    if damage != "empty pointer":
        assert "names model_0000009.pth, which" in warning
        assert ("does not exist" if damage == "missing" else "truncated") in warning


def test_a_pointer_to_nothing_complete_is_an_error_naming_the_file(tmp_path):
    ck = _checkpointer(tmp_path)
    ck.save("model_0000004", iteration=4)
    (tmp_path / "model_0000004.pth").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointFileError, match="names model_0000004.pth, which is truncated"):
        _checkpointer(tmp_path).resume_or_load("", resume=True)


def test_left_over_partial_files_are_removed_on_resume_and_never_loaded(tmp_path):
    ck = _checkpointer(tmp_path, 1.0)
    ck.save("model_0000004", iteration=4)
    # a write killed halfway (what atomic_write leaves after a kill -9)
    partial = tmp_path / f"model_0000009.pth.{os.getpid()}.0123abcd.partial"
    partial.write_bytes((tmp_path / "model_0000004.pth").read_bytes()[:200])
    pointer_partial = tmp_path / "last_checkpoint.77.89abcdef.partial"
    pointer_partial.write_bytes(b"model_00")
    assert partial_files(str(tmp_path)) == sorted([str(pointer_partial), str(partial)])

    fresh = _checkpointer(tmp_path, 0.0)
    with captured_log("dinat_m2f.checkpoint.atomic_files", logging.WARNING) as messages:
        extra = fresh.resume_or_load("", resume=True)
    assert extra["iteration"] == 4
    assert not partial.exists() and not pointer_partial.exists()
    log = "\n".join(messages)
    assert f"removed {partial}: an incomplete write of model_0000009.pth" in log
    assert f"removed {pointer_partial}: an incomplete write of last_checkpoint" in log


def test_no_checkpoint_with_non_finite_weights_is_written(tmp_path):
    ck = _checkpointer(tmp_path)
    ck.save("model_0000004", iteration=4)
    before = sorted(os.listdir(tmp_path))
    with torch.no_grad():
        ck.model.bias[1] = float("nan")
        ck.model.weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteWeightsError) as error:
        ck.save("model_0000009", iteration=9)
    message = str(error.value)
    assert f"checkpoint {tmp_path / 'model_0000009.pth'}: not written" in message
    assert "2 of 2 weights hold NaN or infinite values: weight, bias" in message
    assert sorted(os.listdir(tmp_path)) == before
    assert open(tmp_path / "last_checkpoint").read() == "model_0000004.pth"


def test_the_interrupt_checkpoint_refuses_non_finite_weights(tmp_path):
    ck = _checkpointer(tmp_path)
    with torch.no_grad():
        ck.model.weight[1, 2] = float("nan")
    hook = CheckpointOnInterrupt(ck)
    hook.trainer = type("T", (), {"iter": 7})()
    hook._signum = 15  # SIGTERM received during iteration 7
    with pytest.raises(NonFiniteWeightsError, match="model_interrupted_0000007.pth: not written"):
        hook.after_step()
    assert os.listdir(tmp_path) == []
