"""Training and evaluation loop (detectron2 trainer with the project's builders)."""

from .interrupt_checkpoint import CheckpointOnInterrupt, TrainingInterrupted
from .setup import setup_cfg
from .trainer import Trainer, load_weights_for_evaluation, run_evaluation

__all__ = [
    "CheckpointOnInterrupt",
    "Trainer",
    "TrainingInterrupted",
    "load_weights_for_evaluation",
    "run_evaluation",
    "setup_cfg",
]
