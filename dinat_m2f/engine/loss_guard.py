"""Stopping training on a NaN or infinite loss.

detectron2 checks the summed loss only on the main process, only every
`gather_metric_period` iterations, and names no term. Here every process checks every loss
term of every iteration before the optimizer step (so the weights stay finite), all processes
agree (so none waits forever in the next all-reduce), and the error names the iteration and
the non-finite terms. Non-finite weights are never written either
(checkpoint/finite_weights.py, which holds the errors' base `NonFiniteError`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from detectron2.engine import SimpleTrainer
from detectron2.utils import comm

from ..checkpoint.finite_weights import NonFiniteError
from .amp import DeviceAMPTrainer


class NonFiniteLossError(NonFiniteError):
    """A loss term was NaN or infinite; training stopped before the optimizer step."""


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


class _FiniteLossCheck:
    """Mixin for detectron2's SimpleTrainer / our DeviceAMPTrainer: `_write_metrics` runs after
    the backward and before the optimizer step in their `run_step`; the check is placed there."""

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


class FiniteLossAMPTrainer(_FiniteLossCheck, DeviceAMPTrainer):
    """DeviceAMPTrainer (GPU or CPU) that stops on a non-finite loss term (see the module
    docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        if kwargs.get("async_write_metrics"):
            raise ValueError("the finite-loss check needs async_write_metrics=False")
        super().__init__(*args, **kwargs)
