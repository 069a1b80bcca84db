"""Never writing non-finite weights: `check_finite_weights` (what the checkpoint writer,
atomic_files.py, calls before writing) and `NonFiniteError`, the base of this error and of
the training loss guard's (engine/loss_guard.py), which train_net.py reports."""

from __future__ import annotations

from collections.abc import Mapping

import torch


class NonFiniteError(FloatingPointError):
    """A NaN or infinity stopped training or a checkpoint write (a FloatingPointError, like
    detectron2's own check)."""


class NonFiniteWeightsError(NonFiniteError):
    """A checkpoint was not written because some weights are NaN or infinite."""


def check_finite_weights(state_dict: Mapping[str, object], what: str) -> None:
    """Raises NonFiniteWeightsError naming the floating-point entries of `state_dict` that
    hold a NaN or infinity; `what` says what was about to happen (e.g. the file to write)."""
    bad = []
    for key, value in state_dict.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel():
            if not bool(torch.isfinite(value.detach()).all()):
                bad.append(key)
    if bad:
        shown = ", ".join(bad[:8]) + (f" (+{len(bad) - 8} more)" if len(bad) > 8 else "")
        raise NonFiniteWeightsError(
            f"{what}: not written, {len(bad)} of {len(state_dict)} weights hold NaN or "
            f"infinite values: {shown}; the last complete checkpoint is unchanged"
        )
