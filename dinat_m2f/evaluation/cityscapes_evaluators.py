"""Cityscapes' own evaluation scripts, leaving out images skipped as broken, on numpy 2.4.

detectron2's Cityscapes evaluators compare the predictions with every ground-truth file under
the dataset's gt_dir, so an image the test loader skipped (DATALOADER.SKIP_BROKEN_SAMPLES) has
no prediction, and cityscapesscripts stops the whole process on it. These evaluators are
detectron2's with that list narrowed: the ground truth of skipped images is left out (logged
with a count), as the panoptic evaluator does for PQ.

cityscapesscripts (2.3.0, as pinned) also predates numpy 2: it calls `np.in1d`, which numpy
2.4 removed, and its instance evaluation writes numpy integers with a JSON encoder that only
knows objects with a __dict__. While the scripts evaluate, numpy has `in1d` back as the
documented equivalent (`np.isin(...).ravel()`) and their JSON writer turns numpy scalars into
Python numbers.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import json
import logging
import os
import types
from unittest import mock

import numpy as np
from detectron2.evaluation import cityscapes_evaluation
from detectron2.utils import comm

from ..data.broken_samples import skipped_file_names

logger = logging.getLogger(__name__)


def cityscapes_frame(path: str) -> str:
    """`city_sequence_frame` of a Cityscapes image or ground-truth file name."""
    return "_".join(os.path.basename(path).split("_")[:3])


@contextlib.contextmanager
def _ground_truth_without(frames: set[str], dataset_name: str):
    """detectron2's evaluators list the ground truth with glob.glob in their module; within
    this context that module sees a glob that leaves out `frames`."""
    if not frames:
        yield
        return

    def kept(pattern: str, **kwargs) -> list[str]:
        files = glob.glob(pattern, **kwargs)
        out = [f for f in files if cityscapes_frame(f) not in frames]
        logger.warning(
            f"Cityscapes evaluation of {dataset_name} leaves out the ground truth of "
            f"{len(files) - len(out)} images skipped as broken"
        )
        return out

    with mock.patch.object(cityscapes_evaluation, "glob", types.SimpleNamespace(glob=kept)):
        yield


def _in1d(ar1, ar2, assume_unique: bool = False, invert: bool = False) -> np.ndarray:
    return np.isin(ar1, ar2, assume_unique=assume_unique, invert=invert).ravel()


def _json_value(o):
    return o.item() if isinstance(o, np.generic) else o.__dict__


def _write_json(data, file_name: str) -> None:
    with open(file_name, "w") as f:
        f.write(json.dumps(data, default=_json_value, sort_keys=True, indent=4))


@contextlib.contextmanager
def _numpy_for_cityscapesscripts():
    from cityscapesscripts.evaluation import evalInstanceLevelSemanticLabeling as instance_eval

    with contextlib.ExitStack() as stack:
        if not hasattr(np, "in1d"):
            stack.enter_context(mock.patch.object(np, "in1d", _in1d, create=True))
        stack.enter_context(mock.patch.object(instance_eval, "writeDict2JSON", _write_json))
        yield


class _SkippedFrames:
    """evaluate() with the skipped images of every process left out of the ground truth, and
    with numpy 2.4 bridged for cityscapesscripts (np.in1d, numpy scalars in its JSON)."""

    def __init__(self, dataset_name: str):
        super().__init__(dataset_name)
        self._dataset_name = dataset_name

    def evaluate(self):
        skipped = itertools.chain(*comm.gather(sorted(skipped_file_names(self._dataset_name))))
        frames = {cityscapes_frame(f) for f in skipped}
        with _ground_truth_without(frames, self._dataset_name), _numpy_for_cityscapesscripts():
            return super().evaluate()


class CityscapesSemSegEvaluator(_SkippedFrames, cityscapes_evaluation.CityscapesSemSegEvaluator):
    """IoU / iIoU by cityscapesscripts on the evaluated images."""


class CityscapesInstanceEvaluator(
    _SkippedFrames, cityscapes_evaluation.CityscapesInstanceEvaluator
):
    """AP / AP50 by cityscapesscripts on the evaluated images."""
