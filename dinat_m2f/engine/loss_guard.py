"""Stopping training on a NaN or infinite loss, and never writing non-finite weights.

detectron2 checks the summed loss only on the main process, only every
`gather_metric_period` iterations, and names no term. Here every process checks every loss
term of every iteration before the optimizer step (so the weights stay finite), all processes
agree (so none waits forever in the next all-reduce), and the error names the iteration and
the non-finite terms. `check_finite_weights` is what the checkpointer calls before writing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from detectron2.engine import AMPTrainer, SimpleTrainer
from detectron2.utils import comm


class NonFiniteError(FloatingPointError):
    """Base of the errors below (a FloatingPointError, like detectron2's own check)."""


class NonFiniteLossError(NonFiniteError):
    """A loss term was NaN or infinite; training stopped before the optimizer step."""


class NonFiniteWeightsError(NonFiniteError):
    """A checkpoint was not written because some weights are NaN or infinite."""


def _describe(values: Mapping[str, float], limit: int = 8) -> str:
    items = [f"{k}={v}" for k, v in sorted(values.items())]
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def nonfinite_loss_terms(loss_dict: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """The terms of `loss_dict` (name -> scalar tensor) that are NaN or +-inf, as floats.

    One device synchronisation when all terms are finite (the usual case)."""
    if not loss_dict:
        return {}
    values = torch.stack([v.detach().float().reshape(()) for v in loss_dict.values()])
    if bool(torch.isfinite(values).all()):
        return {}
    return {k: float(v) for k, v in zip(loss_dict, values.cpu().tolist()) if not math.isfinite(v)}


def check_finite_losses(loss_dict: Mapping[str, torch.Tensor], iteration: int) -> None:
    """Raises NonFiniteLossError on every process when any process has a non-finite term.

    The message names the iteration, each non-finite term with its value and the process
    (rank) where it happened."""
    bad = nonfinite_loss_terms(loss_dict)
    if comm.get_world_size() > 1:
        per_rank = comm.all_gather(bad)
    else:
        per_rank = [bad]
    if not any(per_rank):
        return
    where = "; ".join(
        f"rank {rank}: {_describe(terms)}" if len(per_rank) > 1 else _describe(terms)
        for rank, terms in enumerate(per_rank)
        if terms
    )
    raise NonFiniteLossError(
        f"non-finite loss at iteration {iteration}: {where} (of {len(loss_dict)} loss terms); "
        "training stopped before the optimizer step, so the weights and the checkpoints are "
        "finite. Lower SOLVER.BASE_LR, enable SOLVER.CLIP_GRADIENTS or check the inputs of this "
        "iteration, then continue with --resume from the last checkpoint"
    )


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


class _FiniteLossCheck:
    """Mixin for detectron2's SimpleTrainer / AMPTrainer: `_write_metrics` runs after the
    backward and before the optimizer step in their `run_step`; the check is placed there."""

    def run_step(self) -> None:
        try:
            super().run_step()
        except NonFiniteError:
            raise
        except FloatingPointError as error:  # e.g. the matcher's cost of non-finite predictions
            raise NonFiniteLossError(
                f"non-finite values at iteration {self.iter}: {error}; training stopped before "
                "the optimizer step, so the checkpoints are finite. Lower SOLVER.BASE_LR or "
                "enable SOLVER.CLIP_GRADIENTS, then continue with --resume"
            ) from error

    def _write_metrics(self, loss_dict, data_time, prefix="", iter=None):
        check_finite_losses(loss_dict, self.iter if iter is None else iter)
        super()._write_metrics(loss_dict, data_time, prefix=prefix, iter=iter)


class FiniteLossSimpleTrainer(_FiniteLossCheck, SimpleTrainer):
    """SimpleTrainer that stops on a non-finite loss term (see the module docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        if kwargs.get("async_write_metrics"):
            raise ValueError("the finite-loss check needs async_write_metrics=False")
        super().__init__(*args, **kwargs)


class FiniteLossAMPTrainer(_FiniteLossCheck, AMPTrainer):
    """AMPTrainer that stops on a non-finite loss term (see the module docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        if kwargs.get("async_write_metrics"):
            raise ValueError("the finite-loss check needs async_write_metrics=False")
        super().__init__(*args, **kwargs)
