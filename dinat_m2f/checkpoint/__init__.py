"""Loading and converting the checkpoints users already have."""

from .dinat_weights import (
    convert_to_official,
    load_state_dict_file,
    official_backbone_state_dict,
    resize_rpb,
)

__all__ = ["convert_to_official", "load_state_dict_file", "official_backbone_state_dict", "resize_rpb"]
