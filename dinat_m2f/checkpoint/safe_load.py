"""The one place where this project reads pickled files (checkpoints, the ADE20K-Full index):
`load_plain_data`.

Checkpoints are pickles, and unpickling can run any code the file asks for. This function
builds plain data only: tensors, numpy arrays, dicts, lists, tuples, numbers, strings, None
and OrderedDict (with its `_metadata`, which carries the state-dict versions). A file that asks
for anything else is refused with `UnsafeCheckpointError`, naming the file and the refused
global, before that global is ever called.

- `.pkl` files (detectron2's model zoo, Mask2Former's releases, the DiNAT release's converter,
  Caffe2 / Detectron pickles written by Python 2) go through `RestrictedUnpickler`, whose
  allow-list is `ALLOWED_GLOBALS`. Tensors pickled with plain `pickle` carry their storage as
  torch-serialized bytes; those bytes are read with `torch.load(weights_only=True)`.
- Every other file (`.pth`, `.pt`, `.bin`, `.pyth`, and a `.pkl` that is really a torch zip
  archive) goes through `torch.load(weights_only=True)`, with numpy arrays allowed as well.

Everything that loads weights or other pickles (the checkpointer of the trainer and of
`--eval-only`, the demo, `tools/convert_pretrained.py`, the dataset preparation scripts) calls
this function.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import os
import pickle
import re
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

__all__ = [
    "ALLOWED_GLOBALS",
    "CheckpointReadError",
    "RestrictedUnpickler",
    "UnsafeCheckpointError",
    "load_plain_data",
]

PLAIN_DATA = "tensors, numpy arrays, dicts, lists, tuples, numbers, strings, None and OrderedDict"


class UnsafeCheckpointError(pickle.UnpicklingError, ValueError):
    """A checkpoint file asks to build something other than plain data (it could run code)."""

    def __init__(self, path: str, refused: str) -> None:
        self.path, self.refused = str(path), refused
        super().__init__(
            f"{path}: refused to load '{refused}': checkpoints are read as plain data only "
            f"({PLAIN_DATA}), and this file asks for something else, which could run code "
            "while loading. If the file is yours and you trust it, load it once yourself and "
            "save its state dict with torch.save."
        )


class CheckpointReadError(ValueError):
    """A checkpoint file is missing, truncated or not a checkpoint at all."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = str(path)
        super().__init__(f"{path}: cannot read the checkpoint: {problem}")


def _latin1_bytes(*args) -> bytes:
    """`_codecs.encode(text, "latin1")` / `bytes(text, "latin1")` / `bytes()`: how protocol-2
    pickles spell bytes (numpy arrays' data). Nothing else is accepted."""
    if not args:
        return b""
    latin1 = ("latin1", "latin-1", "iso-8859-1", "iso8859-1")
    if len(args) == 2 and isinstance(args[0], str) and str(args[1]).lower() in latin1:
        return args[0].encode("latin1")
    raise pickle.UnpicklingError(f"bytes from {args!r:.80} (only latin1 text is accepted)")


def _storage_from_bytes(data: bytes):
    """`torch.storage._load_from_bytes`, weights-only (the original calls torch.load with
    weights_only=False on bytes that come from the file)."""
    if not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError(f"tensor storage from a {type(data).__name__}, not bytes")
    storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError(f"tensor storage bytes hold a {type(storage).__name__}")
    return storage


def _rebuild_tensor(storage, offset, size, stride, requires_grad, hooks, *metadata):
    """`torch._utils._rebuild_tensor_v2` for a storage built by `_storage_from_bytes`, without
    backward hooks (a plain tensor has none)."""
    if not isinstance(storage, torch.TypedStorage):
        raise pickle.UnpicklingError(f"a tensor rebuilt from a {type(storage).__name__}")
    if hooks:
        raise pickle.UnpicklingError("a tensor with backward hooks")
    return torch._utils._rebuild_tensor_v2(
        storage, offset, size, stride, requires_grad, collections.OrderedDict()
    )


def _numpy(module: str, name: str) -> Any:
    """numpy's own function behind a (numpy 1 or 2) module path of its pickles."""
    core = getattr(np, "_core", None) or np.core
    return getattr(getattr(core, module.rpartition(".")[2]), name)


# (module, name) -> what the unpickler uses for it. Each entry builds plain data only.
ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    # numpy arrays and scalars (numpy 1 and 2 module names; Python 2 pickles say numpy.core)
    **{
        (f"{core}.{module}", name): _numpy(module, name)
        for core in ("numpy.core", "numpy._core")
        for module, name in (
            ("multiarray", "_reconstruct"),
            ("multiarray", "scalar"),
            ("numeric", "_frombuffer"),
        )  # _frombuffer: protocol 5
    },
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # bytes in protocol-2 pickles
    ("builtins", "complex"): complex,
    ("_codecs", "encode"): _latin1_bytes,
    ("builtins", "bytes"): _latin1_bytes,
    # tensors pickled with plain pickle (the DiNAT release's converter writes those)
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
}


class RestrictedUnpickler(pickle.Unpickler):
    """pickle.Unpickler that resolves only `ALLOWED_GLOBALS` and no persistent ids; Python 2
    strings are decoded as latin1 (as detectron2 reads its model zoo)."""

    def __init__(self, file, path: str) -> None:
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (__builtin__, copy_reg, ...) mapped as pickle's own find_class does
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(self._path, f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeCheckpointError(self._path, f"persistent id {pid!r:.80}")


def _numpy_globals_for_torch() -> list:
    """What torch's weights-only unpickler needs besides tensors to read numpy arrays."""
    core = getattr(np, "_core", None) or np.core
    dtypes = [type(np.dtype(t)) for t in np.sctypeDict.values() if np.dtype(t).kind in "biufcSUV?"]
    return [
        core.multiarray._reconstruct,
        core.multiarray.scalar,
        np.ndarray,
        np.dtype,
        *sorted(set(dtypes), key=str),
    ]


# how torch's weights-only unpickler names what it refused, and what it could not parse
_REFUSED_GLOBAL = re.compile(r"\bGLOBAL ([\w.]+)")
_DETAIL = re.compile(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\n|$)", re.S)


def _torch_load(path: str) -> Any:
    try:
        with torch.serialization.safe_globals(_numpy_globals_for_torch()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        text = str(error)
        match = _REFUSED_GLOBAL.search(text)
        if match:
            raise UnsafeCheckpointError(path, match.group(1)) from None
        detail = _DETAIL.search(text)
        detail = detail.group(1)[:160] if detail else _first_line(error)
        if "Unsupported operand" in detail:  # bytes that are no pickle opcode: not a checkpoint
            raise CheckpointReadError(path, f"not a torch checkpoint ({detail})") from None
        raise UnsafeCheckpointError(path, detail) from None
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, TypeError) as error:
        raise CheckpointReadError(path, f"{type(error).__name__}: {_first_line(error)}") from error


def _first_line(error: Exception) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:200]


def load_plain_data(path: str | os.PathLike) -> Any:
    """The content of a local pickle or `torch.save` file (a checkpoint, the ADE20K-Full index),
    built from plain data only (module docstring).

    Raises:
        UnsafeCheckpointError: the file asks for anything but plain data (nothing of it is run).
        CheckpointReadError: the file is missing or is not a readable checkpoint.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointReadError(path, "no such file")
    if not path.endswith(".pkl") or zipfile.is_zipfile(path):
        return _torch_load(path)
    with open(path, "rb") as f:
        try:
            return RestrictedUnpickler(f, path).load()
        except UnsafeCheckpointError:
            raise
        except (
            pickle.UnpicklingError,
            EOFError,
            ValueError,
            TypeError,
            AttributeError,
            IndexError,
            KeyError,
            RuntimeError,
        ) as error:
            raise CheckpointReadError(
                path, f"not a readable pickle ({type(error).__name__}: {str(error)[:200]})"
            ) from error
