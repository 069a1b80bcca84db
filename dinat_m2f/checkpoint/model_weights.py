"""Loading a trained detectron2 checkpoint into a built model, strictly.

detectron2's checkpointer initialises the model from scratch when the path is empty, asserts
when the file is missing, and only logs parameters it skips because their shapes differ, model
keys the checkpoint lacks and checkpoint keys the model lacks: a checkpoint of another config
then runs with random heads and no error. `load_model_weights` makes all of those a
`WeightsError` naming the path or the keys. The demo, `train_net.py --eval-only` and the tools
load trained weights through it. (Training's MODEL.WEIGHTS is a pretrained backbone that
leaves the head random on purpose, so the trainer keeps detectron2's lenient loading.)
Files are read by the project's checkpointer (`checkpointer.py`): plain data only.
"""

from __future__ import annotations

import logging
import os

import torch

from .checkpointer import DetectionCheckpointer, WeightsError

__all__ = ["WeightsError", "load_model_weights"]

logger = logging.getLogger(__name__)

_MAX_KEYS_LISTED = 20


class _RecordingCheckpointer(DetectionCheckpointer):
    """A DetectionCheckpointer that keeps the incompatible keys it would only log (and lists
    them all, so it does not stop at "nothing fits")."""

    require_some_weights = False

    incompatible = None

    def _load_model(self, checkpoint):
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible


def _key_list(title: str, keys: list[str]) -> str:
    shown = "\n    ".join(keys[:_MAX_KEYS_LISTED])
    hidden = len(keys) - _MAX_KEYS_LISTED
    more = f"\n    ... and {hidden} more" if hidden > 0 else ""
    return f"  {title} ({len(keys)}):\n    {shown}{more}"


def load_model_weights(
    model: torch.nn.Module,
    path: str,
    *,
    allow_partial: bool = False,
    partial_option: str | None = None,
    source: str = "MODEL.WEIGHTS",
) -> None:
    """Loads the checkpoint `path` into `model`, or raises `WeightsError`.

    Args:
        model: the model built from the config (a DDP wrapper is fine).
        path: a checkpoint file or URL detectron2 can read; "" is an error.
        allow_partial: make an empty path and keys that do not fit warnings instead of errors
            (skipped parameters keep their random values).
        partial_option: the caller's switch that sets `allow_partial` (e.g.
            "--allow-partial-weights"), suggested in the errors; None: none is suggested.
        source: where `path` came from, named in the messages.
    """
    if not path:
        if allow_partial:
            logger.warning("%s is empty: the model keeps its random initialisation", source)
            return
        hint = ""
        if partial_option:
            hint = f", or pass {partial_option} to run a randomly initialised model"
        raise WeightsError(
            f"{source} is empty: trained weights are needed; set {source} to a checkpoint such "
            f"as /path/to/model_final.pth{hint}"
        )
    if "://" not in path and not os.path.isfile(path):
        raise WeightsError(f"{source} file not found: {path}")
    checkpointer = _RecordingCheckpointer(model)
    try:
        checkpointer.load(path)
    except WeightsError:
        raise
    except Exception as e:  # unreadable, not a checkpoint, not downloadable, ...
        raise WeightsError(f"cannot load {source} {path}: {type(e).__name__}: {e}") from e
    incompatible = checkpointer.incompatible
    if incompatible is None:
        return
    problems = []
    if incompatible.incorrect_shapes:
        problems.append(
            _key_list(
                "shapes differ (checkpoint vs model)",
                [f"{k}: {tuple(a)} vs {tuple(b)}" for k, a, b in incompatible.incorrect_shapes],
            )
        )
    if incompatible.missing_keys:
        problems.append(_key_list("missing in the checkpoint", list(incompatible.missing_keys)))
    if incompatible.unexpected_keys:
        problems.append(_key_list("not in the model", list(incompatible.unexpected_keys)))
    if not problems:
        return
    message = (
        f"{source} {path} does not fit the model built from the config "
        "(a different config or NUM_CLASSES?):\n" + "\n".join(problems)
    )
    if allow_partial:
        switch = partial_option or "allow_partial"
        logger.warning("%s\n(%s: going on with what fits)", message, switch)
        return
    if partial_option:
        message += f"\npass {partial_option} to run with them anyway"
    raise WeightsError(message)
