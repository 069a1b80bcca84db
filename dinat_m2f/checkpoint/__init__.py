"""Checkpoints: the one safe way this project reads checkpoint files (`load_plain_data`:
plain data only), the detectron2 checkpointer built on it (`DetectionCheckpointer`), the
training checkpointer's atomic, finite, checked files (atomic_files.py, finite_weights.py),
strict loading of trained weights into a built model (`load_model_weights`), and loading /
converting the official and Hugging Face DiNAT checkpoints."""

from .checkpointer import DetectionCheckpointer, WeightsError
from .dinat_weights import (
    convert_to_official,
    load_state_dict_file,
    official_backbone_state_dict,
    resize_rpb,
)
from .model_weights import load_model_weights
from .safe_load import CheckpointReadError, UnsafeCheckpointError, load_plain_data

__all__ = [
    "CheckpointReadError",
    "DetectionCheckpointer",
    "UnsafeCheckpointError",
    "WeightsError",
    "convert_to_official",
    "load_plain_data",
    "load_model_weights",
    "load_state_dict_file",
    "official_backbone_state_dict",
    "resize_rpb",
]
