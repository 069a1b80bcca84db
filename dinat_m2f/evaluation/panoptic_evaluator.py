"""detectron2 evaluator for panoptic segmentation: detectron2's COCOPanopticEvaluator contract,
with PQ computed by `panoptic_quality` instead of panopticapi."""

from __future__ import annotations

import io
import itertools
import json
import logging
import os
import tempfile
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from PIL import Image

from ..data.broken_samples import skipped_image_ids
from ..panoptic_ids import id2rgb
from .panoptic_quality import pq_compute
from .panoptic_tables import summary_table

logger = logging.getLogger(__name__)

_RESULT_KEYS = {"": "All", "_th": "Things", "_st": "Stuff"}


def _plain(value: Any) -> Any:
    """Tensor / numpy scalars -> Python numbers, so that segments_info can go to json."""
    if isinstance(value, (torch.Tensor, np.generic)) and value.ndim == 0:
        return value.item()
    return value


class COCOPanopticEvaluator(DatasetEvaluator):
    """Panoptic quality of a model's `panoptic_seg` outputs on a dataset registered with
    `panoptic_json` (COCO panoptic ground truth) and `panoptic_root` (its PNG folder).

    `process()` turns each output into a COCO panoptic PNG + segments_info with dataset category
    ids (through the metadata's `thing_dataset_id_to_contiguous_id` /
    `stuff_dataset_id_to_contiguous_id` when segments carry `isthing`); `evaluate()` gathers
    them from all processes (call it on every process) and, on the main one, returns
    OrderedDict(panoptic_seg={PQ, SQ, RQ, PQ_th, SQ_th, RQ_th, PQ_st, SQ_st, RQ_st}) in percent.
    With `output_dir`, predictions are kept as `output_dir/predictions.json` + PNGs in
    `output_dir/predictions/`, and all results (per class too) in
    `output_dir/panoptic_results.json`.
    """

    def __init__(self, dataset_name: str, output_dir: str | None = None, *, workers: int = 1):
        """
        Args:
            dataset_name: a dataset registered in detectron2's MetadataCatalog.
            output_dir: where to keep predictions and results (None: nowhere).
            workers: processes used for the PQ computation.
        """
        self._metadata = MetadataCatalog.get(dataset_name)
        for key in ("panoptic_json", "panoptic_root"):
            if not hasattr(self._metadata, key):
                raise ValueError(
                    f"COCOPanopticEvaluator: metadata of dataset {dataset_name!r} has no '{key}'"
                )
        self._thing_to_dataset = {
            v: k
            for k, v in getattr(self._metadata, "thing_dataset_id_to_contiguous_id", {}).items()
        }
        self._stuff_to_dataset = {
            v: k
            for k, v in getattr(self._metadata, "stuff_dataset_id_to_contiguous_id", {}).items()
        }
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._workers = workers
        if output_dir is not None:
            PathManager.mkdirs(output_dir)
        self._predictions: list[dict[str, Any]] = []

    def reset(self) -> None:
        self._predictions = []

    def _dataset_category(self, segment: dict[str, Any], image_id: Any) -> dict[str, Any]:
        segment = {k: _plain(v) for k, v in segment.items()}
        isthing = segment.pop("isthing", None)
        if isthing is None:  # the model already gives dataset category ids
            return segment
        table = self._thing_to_dataset if isthing else self._stuff_to_dataset
        contiguous = int(segment["category_id"])
        if contiguous not in table:
            kind = "thing" if isthing else "stuff"
            raise ValueError(
                f"image {image_id!r}: segment {segment.get('id')} has contiguous "
                f"{kind} category_id {contiguous}, absent from the {kind} id map of "
                f"dataset {self._dataset_name!r} (valid: {sorted(table)})"
            )
        segment["category_id"] = table[contiguous]
        return segment

    def _from_label_divisor(self, panoptic: np.ndarray) -> tuple[np.ndarray, list[dict]]:
        """(H, W) category * label_divisor + instance, -1 VOID -> ids with 0 VOID and their
        segments (contiguous category ids, isthing)."""
        label_divisor = self._metadata.label_divisor
        thing_ids = set(getattr(self._metadata, "thing_dataset_id_to_contiguous_id", {}).values())
        segments = []
        for label in np.unique(panoptic).tolist():
            if label == -1:
                continue
            category = label // label_divisor
            segments.append(
                {"id": label + 1, "category_id": category, "isthing": category in thing_ids}
            )
        return panoptic + 1, segments

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        """
        Args:
            inputs: dataset dicts with "file_name" and "image_id".
            outputs: dicts with "panoptic_seg" = ((H, W) integer tensor of segment ids,
                segments_info list or None for the label-divisor format).
        """
        for input_dict, output in zip(inputs, outputs):
            panoptic, segments_info = output["panoptic_seg"]
            if isinstance(panoptic, torch.Tensor):
                panoptic = panoptic.cpu().numpy()
            panoptic = np.asarray(panoptic).astype(np.int64)
            if segments_info is None:
                panoptic, segments_info = self._from_label_divisor(panoptic)
            image_id = input_dict["image_id"]
            file_name = os.path.splitext(os.path.basename(input_dict["file_name"]))[0] + ".png"
            with io.BytesIO() as buffer:
                Image.fromarray(id2rgb(panoptic)).save(buffer, format="PNG")
                png = buffer.getvalue()
            self._predictions.append(
                {
                    "image_id": image_id,
                    "file_name": file_name,
                    "png_string": png,
                    "segments_info": [self._dataset_category(s, image_id) for s in segments_info],
                }
            )

    def evaluate(self) -> OrderedDict | None:
        comm.synchronize()
        predictions = list(itertools.chain(*comm.gather(self._predictions)))
        # images the test loader skipped as broken (DATALOADER.SKIP_BROKEN_SAMPLES)
        skipped = set(itertools.chain(*comm.gather(list(skipped_image_ids(self._dataset_name)))))
        if not comm.is_main_process():
            return None
        if not predictions:
            logger.warning("COCOPanopticEvaluator: no predictions were processed")
            return OrderedDict()

        gt_json = PathManager.get_local_path(self._metadata.panoptic_json)
        gt_folder = PathManager.get_local_path(self._metadata.panoptic_root)
        with open(gt_json) as f:
            gt_data = json.load(f)
        if skipped:
            gt_data["annotations"] = [
                a for a in gt_data["annotations"] if a["image_id"] not in skipped
            ]
            logger.warning(
                f"PQ of {self._dataset_name} leaves out the {len(skipped)} images skipped as broken"
            )
        annotations = [{k: v for k, v in p.items() if k != "png_string"} for p in predictions]
        pred_data = {k: v for k, v in gt_data.items() if k != "annotations"}
        pred_data["annotations"] = annotations

        with tempfile.TemporaryDirectory(prefix="panoptic_eval") as temp_dir:
            root = self._output_dir if self._output_dir is not None else temp_dir
            pred_folder = os.path.join(root, "predictions")
            os.makedirs(pred_folder, exist_ok=True)
            logger.info(f"Writing {len(predictions)} panoptic predictions to {pred_folder}")
            for p in predictions:
                with open(os.path.join(pred_folder, p["file_name"]), "wb") as f:
                    f.write(p["png_string"])
            if self._output_dir is not None:
                with PathManager.open(os.path.join(root, "predictions.json"), "w") as f:
                    json.dump(pred_data, f)
            result = pq_compute(gt_data, pred_data, gt_folder, pred_folder, workers=self._workers)

        if self._output_dir is not None:
            path = os.path.join(self._output_dir, "panoptic_results.json")
            with PathManager.open(path, "w") as f:
                json.dump(result.to_json(), f, indent=2)

        res: dict[str, float] = {}
        groups = result.groups()
        for suffix, group in _RESULT_KEYS.items():
            metrics = groups[group]
            res["PQ" + suffix] = 100 * metrics.pq
            res["SQ" + suffix] = 100 * metrics.sq
            res["RQ" + suffix] = 100 * metrics.rq
        logger.info("Panoptic Evaluation Results:\n" + summary_table(result))
        return OrderedDict({"panoptic_seg": res})
