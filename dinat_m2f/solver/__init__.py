"""Optimizer and learning-rate schedules of the training recipe."""

from .lr_scheduler import PolyParamScheduler, build_lr_scheduler
from .optimizer import build_optimizer, optimizer_param_groups

__all__ = ["PolyParamScheduler", "build_lr_scheduler", "build_optimizer", "optimizer_param_groups"]
