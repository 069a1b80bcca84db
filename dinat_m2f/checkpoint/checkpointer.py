"""The project's detectron2 checkpointer: detectron2's `DetectionCheckpointer`, reading every
file through `load_plain_data` (plain data only) instead of plain `pickle.load` (`.pkl`)
and fvcore's `torch.load` (everything else).

It understands the same formats as detectron2's: `.pkl` in detectron2's model-zoo layout
(`{"model": ..., "__author__": ...}`, e.g. Mask2Former's releases and the DiNAT release's
converter output, whose `"matching_heuristics": True` maps ImageNet names onto `backbone.*`),
Caffe2 / Detectron `.pkl` (`blobs`), pycls `.pyth` (`model_state`) and torch files (with
`?matching_heuristics=True` in the path). Saving is detectron2's: `torch.save` of the model's
state dict, which keeps its version metadata (MaskFormerHead's `_version = 2`).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs

from detectron2.checkpoint import DetectionCheckpointer as _D2DetectionCheckpointer

from .safe_load import load_plain_data

__all__ = ["DetectionCheckpointer", "WeightsError"]

logger = logging.getLogger(__name__)

_KEYS_SHOWN = 5


class WeightsError(RuntimeError):
    """The weights are missing, unreadable, or do not fit the model built from the config."""


class DetectionCheckpointer(_D2DetectionCheckpointer):
    """detectron2's DetectionCheckpointer with safe file reading (module docstring), and an
    error instead of a warning when a checkpoint's weights fit nothing in the model (e.g.
    MODEL.WEIGHTS of another architecture: detectron2 would only log every key and train from
    scratch); `require_some_weights = False` turns that check off."""

    require_some_weights = True

    def _load_file(self, filename: str) -> dict[str, Any]:
        data = load_plain_data(filename)
        if not isinstance(data, dict):
            raise WeightsError(
                f"{filename}: a checkpoint holds a dict, this file a {type(data).__name__}"
            )
        if filename.endswith(".pkl"):
            if "model" in data and "__author__" in data:  # detectron2's model-zoo layout
                self.logger.info("Reading a file from '%s'", data["__author__"])
                return data
            # Caffe2 / Detectron: bare blobs (detection models wrap them in "blobs")
            blobs = data.get("blobs", data)
            weights = {k: v for k, v in blobs.items() if not k.endswith("_momentum")}
            return {"model": weights, "__author__": "Caffe2", "matching_heuristics": True}
        if filename.endswith(".pyth"):  # pycls
            if "model_state" not in data:
                raise WeightsError(
                    f"{filename}: a pycls .pyth checkpoint holds 'model_state'; "
                    f"this one has {sorted(data)[:_KEYS_SHOWN]}"
                )
            weights = {
                k: v
                for k, v in data["model_state"].items()
                if not k.endswith("num_batches_tracked")
            }
            return {"model": weights, "__author__": "pycls", "matching_heuristics": True}
        if "model" not in data:
            data = {"model": data}
        parsed = self._parsed_url_during_load
        queries = parse_qs(parsed.query) if parsed is not None else {}
        if queries.pop("matching_heuristics", ["False"]) == ["True"]:
            data["matching_heuristics"] = True
        if queries:
            raise WeightsError(
                f"{filename}: unsupported query {queries} in the checkpoint path "
                "(only ?matching_heuristics=True)"
            )
        return data

    def _torch_load(self, f: str) -> Any:
        return load_plain_data(f)

    def _load_model(self, checkpoint: dict[str, Any]):
        weights = checkpoint.get("model")
        names = list(weights) if isinstance(weights, dict) else []
        incompatible = super()._load_model(checkpoint)
        if self.require_some_weights and names and incompatible is not None:
            # detectron2 drops pixel_mean / pixel_std from the missing keys (set by the config)
            not_loaded = set(incompatible.missing_keys) | {"pixel_mean", "pixel_std"}
            if all(k in not_loaded for k in self.model.state_dict()):
                raise WeightsError(
                    f"none of the {len(names)} weights of the checkpoint fits the model (another "
                    f"architecture?); checkpoint keys: {names[:_KEYS_SHOWN]}, model keys: "
                    f"{list(self.model.state_dict())[:_KEYS_SHOWN]}"
                )
        return incompatible
