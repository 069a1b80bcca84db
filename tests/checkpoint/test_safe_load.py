"""`load_plain_data`, the one way the project reads checkpoint files: plain data of every
kind and the real checkpoint layouts load; anything else is refused, naming the file and the
global, and none of it runs."""

import collections
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from dinat_m2f.checkpoint import CheckpointReadError, UnsafeCheckpointError, load_plain_data
from dinat_m2f.checkpoint.safe_load import ALLOWED_GLOBALS


class CreatesMarker:
    """Unpickling it creates a file: how a malicious checkpoint would run code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def write_hostile_checkpoint(folder, suffix: str, marker) -> Path:
    """A checkpoint `evil<suffix>` (".pkl": plain pickle, else torch.save) in `folder` whose
    loading would create the file `marker`: a model weight that is a CreatesMarker."""
    evil = Path(folder) / f"evil{suffix}"
    content = {
        "model": {"backbone.patch_embed.norm.weight": CreatesMarker(marker)},
        "__author__": "x",
    }
    if suffix == ".pkl":
        evil.write_bytes(pickle.dumps(content))
    else:
        torch.save(content, evil)
    return evil


class RunsCommand:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def write_pickle(path, obj, protocol=pickle.DEFAULT_PROTOCOL):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return str(path)


PLAIN = {
    "array": np.arange(6, dtype=np.float32).reshape(2, 3),
    "int_array": np.array([1, 2, 3], dtype=np.int64),
    "empty": np.zeros((0, 4)),
    "strings": np.array(["ab", "c"]),
    "scalar": np.float32(1.5),
    "numbers": [1, 2.5, True, None, 3 + 0j],
    "nested": {"tuple": (1, "two", b"three"), "list": [[], {}]},
}


def assert_plain_equal(actual, expected):
    assert type(actual) is type(expected), (actual, expected)
    if isinstance(expected, np.ndarray):
        np.testing.assert_array_equal(actual, expected)
        assert actual.dtype == expected.dtype
    elif isinstance(expected, dict):
        assert actual.keys() == expected.keys()
        for key in expected:
            assert_plain_equal(actual[key], expected[key])
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected):
            assert_plain_equal(a, e)
    else:
        assert actual == expected


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_data_pickles_load_at_every_protocol(tmp_path, protocol):
    path = write_pickle(tmp_path / "plain.pkl", PLAIN, protocol)
    assert_plain_equal(load_plain_data(path), PLAIN)


def test_tensors_pickled_with_plain_pickle_keep_values_views_and_metadata(tmp_path):
    """What the DiNAT release's converter writes: a torch state dict (an OrderedDict whose
    `_metadata` carries the module versions) pickled with `pickle`, not torch.save."""
    base = torch.arange(12, dtype=torch.float16).view(3, 4)
    state = collections.OrderedDict(
        w=base.t(), b=torch.ones(3, dtype=torch.bfloat16), i=torch.tensor(7)
    )
    state._metadata = collections.OrderedDict({"": {"version": 1}, "sem_seg_head": {"version": 2}})
    path = write_pickle(
        tmp_path / "converted.pkl",
        {"model": state, "__author__": "third_party", "matching_heuristics": True},
    )
    data = load_plain_data(path)
    assert data["__author__"] == "third_party" and data["matching_heuristics"] is True
    loaded = data["model"]
    assert isinstance(loaded, collections.OrderedDict) and list(loaded) == ["w", "b", "i"]
    for key, value in state.items():
        assert torch.equal(loaded[key], value) and loaded[key].dtype == value.dtype, key
    assert loaded["w"].stride() == (1, 4)
    assert loaded._metadata == state._metadata


def test_torch_files_load_weights_only_with_numpy(tmp_path):
    path = tmp_path / "model_0000009.pth"
    torch.save({"model": {"w": torch.ones(2)}, "iteration": 9, "np": np.arange(3)}, path)
    data = load_plain_data(path)
    assert data["iteration"] == 9 and torch.equal(data["model"]["w"], torch.ones(2))
    np.testing.assert_array_equal(data["np"], np.arange(3))
    # a torch zip archive named .pkl is read as what it is
    renamed = tmp_path / "really_torch.pkl"
    os.rename(path, renamed)
    assert load_plain_data(renamed)["iteration"] == 9


@pytest.mark.parametrize("payload", [CreatesMarker, RunsCommand], ids=["open", "os.system"])
@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_objects_are_refused_naming_file_and_global_and_never_run(tmp_path, payload, suffix):
    marker = tmp_path / "marker"
    path = tmp_path / f"evil{suffix}"
    content = {"model": {"w": torch.zeros(1), "x": payload(marker)}, "__author__": "x"}
    if suffix == ".pkl":
        write_pickle(path, content)
    else:
        torch.save(content, path)
    with pytest.raises(UnsafeCheckpointError) as info:
        load_plain_data(path)
    refused = {
        CreatesMarker: ("io.open", "builtins.open"),
        RunsCommand: ("posix.system", "os.system"),
    }
    assert info.value.refused in refused[payload]
    assert info.value.path == str(path)
    message = str(info.value)
    assert str(path) in message and info.value.refused in message and "plain data only" in message
    assert isinstance(info.value, pickle.UnpicklingError) and isinstance(info.value, ValueError)
    assert not marker.exists()


def test_python2_module_names_are_mapped_before_the_allow_list(tmp_path):
    """Protocol-2 pickles name builtins `__builtin__`: mapped like pickle does, then checked."""
    path = write_pickle(tmp_path / "p2.pkl", {"b": b"", "x": CreatesMarker(tmp_path / "m")}, 2)
    with pytest.raises(UnsafeCheckpointError, match=r"'io\.open'"):
        load_plain_data(path)
    assert not (tmp_path / "m").exists()


def test_hand_written_pickles_of_other_globals_are_refused(tmp_path):
    """Globals reached without a __reduce__ (GLOBAL + REDUCE opcodes written by hand), and
    persistent ids, are refused too."""
    marker = tmp_path / "marker"
    program = b"cbuiltins\nexec\n(V" + f"open('{marker}', 'w')".encode() + b"\ntR."
    path = tmp_path / "exec.pkl"
    path.write_bytes(program)
    with pytest.raises(UnsafeCheckpointError, match=r"refused to load 'builtins\.exec'"):
        load_plain_data(path)
    persistent = tmp_path / "pid.pkl"
    persistent.write_bytes(b"P0\n.")
    with pytest.raises(UnsafeCheckpointError, match=r"persistent id"):
        load_plain_data(persistent)
    assert not marker.exists()


def test_only_plain_data_builders_are_allowed():
    """The allow-list, spelled out: a review of any change to it starts here."""
    assert set(ALLOWED_GLOBALS) == {
        ("collections", "OrderedDict"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("builtins", "complex"),
        ("_codecs", "encode"),
        ("builtins", "bytes"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch.storage", "_load_from_bytes"),
    }


def test_bytes_builders_take_latin1_text_only(tmp_path):
    program = b"\x80\x02c_codecs\nencode\nX\x02\x00\x00\x00abX\x05\x00\x00\x00utf-8\x86R."
    path = tmp_path / "utf8.pkl"
    path.write_bytes(program)
    with pytest.raises(CheckpointReadError, match=r"only latin1 text"):
        load_plain_data(path)


def test_missing_and_broken_files_are_read_errors_naming_the_path(tmp_path):
    with pytest.raises(CheckpointReadError, match=r"nope\.pkl: cannot read the checkpoint: no"):
        load_plain_data(tmp_path / "nope.pkl")
    for name in ("junk.pkl", "junk.pth"):
        junk = tmp_path / name
        junk.write_bytes(b"not a checkpoint at all")
        with pytest.raises(CheckpointReadError, match=rf"{name}: cannot read the checkpoint"):
            load_plain_data(junk)
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(pickle.dumps({"a": [1, 2, 3]})[:-3])
    with pytest.raises(CheckpointReadError, match=r"truncated\.pkl"):
        load_plain_data(truncated)
