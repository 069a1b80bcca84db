"""Checkpoint files that survive a kill at any moment.

fvcore's `Checkpointer.save` writes `model_XXXXXXX.pth` in place and then overwrites the
`last_checkpoint` pointer in place: a `kill -9` (or a full disk, or a node failure) in either
write leaves a truncated file that `--resume` then loads or fails on. Here:

- every file (checkpoint and pointer) is written to `<name>.<pid>.<random>.partial` in the
  same folder, flushed, fsync'ed and renamed over its final name (`os.replace`, atomic on
  POSIX file systems), and the folder is fsync'ed; the pointer is written only after its
  checkpoint is complete, so it only ever names complete files;
- no checkpoint holding NaN or infinite weights is written (`check_finite_weights`);
- on resume, the pointer's file is checked (exists, a complete zip archive as `torch.save`
  writes it); when it is missing or damaged (a file written by another tool, a disk error)
  the newest complete checkpoint of the folder is used instead, with a warning naming both;
  left-over `.partial` files of interrupted writes are removed, each named in the log.

`TrainingCheckpointer` is the project's safe `DetectionCheckpointer` (checkpointer.py:
files read as plain data only) with these files; the mixin
`AtomicCheckpointFiles` can be combined with another checkpointer class.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import zipfile
from collections.abc import Callable
from typing import BinaryIO

import torch

from .checkpointer import DetectionCheckpointer
from .finite_weights import check_finite_weights

logger = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"
POINTER = "last_checkpoint"
# <final name>.<pid>.<8 hex digits>.partial, as written by `atomic_write`
_PARTIAL_RE = re.compile(r"^(?P<final>.+)\.\d+\.[0-9a-f]{8}" + re.escape(PARTIAL_SUFFIX) + "$")
_ITERATION_RE = re.compile(r"_(\d+)\.pth$")


class CheckpointFileError(RuntimeError):
    """`--resume` found a pointer to checkpoints of which none is complete."""


def _fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems do not support fsync on directories
    finally:
        os.close(fd)


def atomic_write(path: str, write: Callable[[BinaryIO], None]) -> None:
    """Writes a file so that `path` is either its old version or the complete new one.

    `write(f)` writes the content into a temporary file next to `path`, which is then
    flushed, fsync'ed and renamed over `path`; the folder is fsync'ed so that the rename is
    durable. On an exception the temporary file is removed; after a kill it stays as
    `<path>.<pid>.<random>.partial` (`remove_partial_files` deletes it)."""
    directory = os.path.dirname(os.path.abspath(path))
    temporary = f"{path}.{os.getpid()}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}"
    try:
        with open(temporary, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.remove(temporary)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def checkpoint_file_problem(path: str) -> str | None:
    """Why `path` is not a complete checkpoint ("does not exist", "is truncated ..."), or
    None. Zip archives (what `torch.save` writes) are checked for their central directory and
    for every entry lying inside the file; other formats only for being non-empty."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return "does not exist"
    except OSError as error:
        return f"cannot be read ({error})"
    if size == 0:
        return "is empty"
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic != b"PK\x03\x04":
            return None  # not a zip archive (legacy torch.save or pickle): not checkable here
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            if not any(i.filename.endswith("data.pkl") for i in infos):
                return "is not a torch.save archive (no data.pkl)"
            for info in infos:
                if info.header_offset + info.compress_size > size:
                    return f"is truncated ({info.filename} extends past the end of the file)"
    except zipfile.BadZipFile as error:
        return f"is truncated or damaged ({error})"
    except OSError as error:
        return f"cannot be read ({error})"
    return None


def _recency(path: str) -> tuple[float, float]:
    """Sort key of checkpoint files: the iteration in the name (model_final last), then mtime."""
    name = os.path.basename(path)
    match = _ITERATION_RE.search(name)
    iteration = (
        float("inf") if name.endswith("_final.pth") else (float(match.group(1)) if match else -1.0)
    )
    try:
        mtime = os.path.getmtime(path)
    except OSError:
        mtime = 0.0
    return iteration, mtime


def partial_files(directory: str) -> list[str]:
    """The left-over temporary files of interrupted `atomic_write`s in `directory`."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted(os.path.join(directory, n) for n in names if _PARTIAL_RE.match(n))


def remove_partial_files(directory: str) -> list[str]:
    """Deletes `partial_files(directory)`, logging each; returns their paths."""
    removed = []
    for path in partial_files(directory):
        try:
            os.remove(path)
        except OSError as error:
            logger.warning("could not remove the partial file %s: %s", path, error)
            continue
        final = _PARTIAL_RE.match(os.path.basename(path)).group("final")
        logger.warning(
            "removed %s: an incomplete write of %s that was interrupted (a killed run); the "
            "complete files are kept",
            path,
            final,
        )
        removed.append(path)
    return removed


class AtomicCheckpointFiles:
    """Mixin for fvcore / detectron2 checkpointers: atomic checkpoint and pointer writes, no
    non-finite weights, a checked pointer on resume (see the module docstring)."""

    def _is_local(self) -> bool:
        return bool(self.save_dir) and "://" not in self.save_dir

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        model_state = self.model.state_dict()
        check_finite_weights(model_state, f"checkpoint {save_file}")
        if not self._is_local():  # remote storage (PathManager): no rename, upstream's way
            return super().save(name, **kwargs)
        data = {"model": model_state}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        self.logger.info("Saving checkpoint to %s", save_file)
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if not self._is_local():
            return super().tag_last_checkpoint(last_filename_basename)
        pointer = os.path.join(self.save_dir, POINTER)
        atomic_write(pointer, lambda f: f.write(last_filename_basename.encode()))

    def _warn_once(self, message: str) -> None:
        warned = self.__dict__.setdefault("_checkpoint_warnings", set())
        if message not in warned:
            warned.add(message)
            logger.warning(message)

    def newest_complete_checkpoint(self, exclude: str = "") -> str:
        """The newest complete `*.pth` file of save_dir other than `exclude` ("" if none)."""
        try:
            names = os.listdir(self.save_dir)
        except OSError:
            return ""
        paths = [os.path.join(self.save_dir, n) for n in names if n.endswith(".pth")]
        for path in sorted(paths, key=_recency, reverse=True):
            if os.path.abspath(path) != os.path.abspath(exclude or "") and not (
                checkpoint_file_problem(path)
            ):
                return path
        return ""

    def get_checkpoint_file(self) -> str:
        """The file `last_checkpoint` names when it is complete; else (a missing, empty or
        truncated file) the newest complete checkpoint, with a warning naming both; "" when
        there is no pointer. Raises CheckpointFileError for a pointer and no complete file."""
        if not self._is_local():
            return super().get_checkpoint_file()
        pointer = os.path.join(self.save_dir, POINTER)
        try:
            with open(pointer) as f:
                name = f.read().strip()
        except FileNotFoundError:
            return ""
        except OSError as error:
            name, problem = "", f"cannot be read ({error})"
        else:
            problem = None if name else "is empty"
        if name:
            path = os.path.join(self.save_dir, name)
            problem = checkpoint_file_problem(path)
            if problem is None:
                return path
            what = f"{pointer} names {name}, which {problem}"
        else:
            path, what = "", f"{pointer} {problem}"
        fallback = self.newest_complete_checkpoint(exclude=path)
        if not fallback:
            raise CheckpointFileError(
                f"cannot resume: {what}, and {self.save_dir} holds no other complete "
                "checkpoint; remove last_checkpoint to start from MODEL.WEIGHTS, or restore "
                "the file"
            )
        self._warn_once(f"{what}; resuming from {fallback}, the newest complete checkpoint")
        return fallback

    def has_checkpoint(self) -> bool:
        if not self._is_local():
            return super().has_checkpoint()
        return bool(self.get_checkpoint_file())

    def resume_or_load(self, path: str, *, resume: bool = True):
        if resume and self.save_to_disk and self._is_local():
            remove_partial_files(self.save_dir)
        return super().resume_or_load(path, resume=resume)


class TrainingCheckpointer(AtomicCheckpointFiles, DetectionCheckpointer):
    """detectron2's DetectionCheckpointer with atomic, finite, checked files."""
