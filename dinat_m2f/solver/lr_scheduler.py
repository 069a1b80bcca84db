"""Learning-rate schedules: detectron2's, plus "WarmupPolyLR" (the poly decay with warmup the
paper uses on ADE20K and Cityscapes)."""

from __future__ import annotations

import torch
from detectron2.solver import build_lr_scheduler as build_detectron2_lr_scheduler
from detectron2.solver.lr_scheduler import LRMultiplier
from fvcore.common.param_scheduler import ParamScheduler


class PolyParamScheduler(ParamScheduler):
    """(1 - where) ** power, floored at constant_ending, times a warmup factor over the first
    warmup_length of training (linear from warmup_factor to 1, or constant warmup_factor).
    `where` in [0, 1] is the share of training done. As Mask2Former's WarmupPolyLR, the warmup
    multiplies the poly factor rather than ramping towards it."""

    def __init__(
        self,
        power: float,
        constant_ending: float = 0.0,
        warmup_factor: float = 1.0,
        warmup_length: float = 0.0,
        warmup_method: str = "linear",
    ) -> None:
        if power <= 0:
            raise ValueError(f"SOLVER.POLY_LR_POWER must be > 0, got {power}")
        if not 0 <= constant_ending < 1:
            raise ValueError(
                f"SOLVER.POLY_LR_CONSTANT_ENDING must be in [0, 1), got {constant_ending}"
            )
        if warmup_method not in ("linear", "constant"):
            raise ValueError(f"SOLVER.WARMUP_METHOD={warmup_method!r}; use 'linear' or 'constant'")
        self.power = power
        self.constant_ending = constant_ending
        self.warmup_factor = warmup_factor
        self.warmup_length = warmup_length
        self.warmup_method = warmup_method

    def __call__(self, where: float) -> float:
        warmup = 1.0
        if where < self.warmup_length:
            if self.warmup_method == "constant":
                warmup = self.warmup_factor
            else:
                alpha = where / self.warmup_length
                warmup = self.warmup_factor * (1 - alpha) + alpha
        return warmup * max((1.0 - where) ** self.power, self.constant_ending)


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer):
    """SOLVER.LR_SCHEDULER_NAME: "WarmupPolyLR" here, anything else detectron2's builder."""
    s = cfg.SOLVER
    if s.LR_SCHEDULER_NAME != "WarmupPolyLR":
        return build_detectron2_lr_scheduler(cfg, optimizer)
    if s.MAX_ITER <= 0:
        raise ValueError(f"SOLVER.MAX_ITER must be > 0 for WarmupPolyLR, got {s.MAX_ITER}")
    schedule = PolyParamScheduler(
        s.POLY_LR_POWER,
        s.POLY_LR_CONSTANT_ENDING,
        s.WARMUP_FACTOR,
        min(s.WARMUP_ITERS / s.MAX_ITER, 1.0),
        s.WARMUP_METHOD,
    )
    return LRMultiplier(optimizer, multiplier=schedule, max_iter=s.MAX_ITER)
