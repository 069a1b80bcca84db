"""Training and evaluation loop (detectron2 trainer with the project's builders)."""

from .interrupt_checkpoint import CheckpointOnInterrupt, TrainingInterrupted
from .setup import setup_cfg
from .trainer import Trainer, run_evaluation

__all__ = ["CheckpointOnInterrupt", "Trainer", "TrainingInterrupted", "run_evaluation", "setup_cfg"]
