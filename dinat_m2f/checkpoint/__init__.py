"""Checkpoints: strict loading of trained weights into a built model (`load_model_weights`),
and loading / converting the official and Hugging Face DiNAT checkpoints."""

from .dinat_weights import (
    convert_to_official,
    load_state_dict_file,
    official_backbone_state_dict,
    resize_rpb,
)
from .model_weights import WeightsError, load_model_weights

__all__ = [
    "WeightsError",
    "convert_to_official",
    "load_model_weights",
    "load_state_dict_file",
    "official_backbone_state_dict",
    "resize_rpb",
]
