"""Samples whose image or annotation file is missing or cannot be decoded.

The mappers read files through `reading(path, kind)`, which turns the many ways a read can
fail (FileNotFoundError, PIL's UnidentifiedImageError, "image file is truncated", a size that
does not match the dataset record, ...) into one `BrokenSampleError` naming the file. The
training and test loaders catch it, add the dataset's name, and then, by
`DATALOADER.SKIP_BROKEN_SAMPLES`:

- False (default): stop with an error naming the file and the dataset;
- True: skip the sample, logging it with a running count; more than
  `DATALOADER.MAX_BROKEN_FRACTION` of a dataset's samples broken (at least one is always
  allowed) is still an error, so a dataset that is broken as a whole does not train or
  evaluate on nothing.

Samples skipped during evaluation are recorded per dataset (`skipped_image_ids`,
`skipped_file_names`), so that evaluators that compare against the whole ground truth
(panoptic quality, Cityscapes' scripts) leave them out instead of failing on a missing
prediction.
"""

from __future__ import annotations

import contextlib
import logging
import math
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from detectron2.data.detection_utils import SizeMismatchError
from PIL import Image

logger = logging.getLogger(__name__)

# what reading and decoding a broken file raises (PIL raises SyntaxError for some broken PNGs)
READ_ERRORS = (
    OSError,
    SyntaxError,
    EOFError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
    SizeMismatchError,
)

SKIP_HINT = "set DATALOADER.SKIP_BROKEN_SAMPLES True to skip such samples"


class BrokenSampleError(ValueError):
    """An image or annotation file of a sample cannot be read; the message names the file
    (and the dataset, once a loader has added it)."""


@contextlib.contextmanager
def reading(path: str, kind: str) -> Iterator[None]:
    """Turns the errors of reading `path` (an "image", "panoptic annotation PNG", ...) into
    BrokenSampleError naming it."""
    try:
        yield
    except BrokenSampleError:
        raise
    except READ_ERRORS as error:
        raise BrokenSampleError(
            f"cannot read the {kind} '{path}': {type(error).__name__}: {error}"
        ) from error


def check_label_file(path: str, kind: str) -> None:
    """Decodes a label PNG completely (BrokenSampleError when it cannot be)."""
    with reading(path, kind), Image.open(path) as im:
        im.load()


@dataclass(frozen=True)
class BrokenSample:
    """What a loader yields in place of a sample that could not be read."""

    dataset: str
    index: int  # index of the sample in its dataset
    message: str  # BrokenSampleError's message: the file and what is wrong with it
    image_id: object = None
    file_name: str | None = None  # the record's image file

    def describe(self) -> str:
        return f"dataset '{self.dataset}': {self.message}"


class BrokenSampleCounter:
    """Raises or counts and logs broken samples (`DATALOADER.SKIP_BROKEN_SAMPLES`,
    `DATALOADER.MAX_BROKEN_FRACTION`); `sizes` maps each dataset name to its sample count."""

    def __init__(self, skip: bool, max_fraction: float, sizes: dict[str, int], stage: str) -> None:
        if not 0.0 <= max_fraction < 1.0:
            raise ValueError(
                f"DATALOADER.MAX_BROKEN_FRACTION={max_fraction} must be >= 0 and < 1 (a fully "
                "broken dataset must stop with an error)"
            )
        self.skip = bool(skip)
        self.max_fraction = float(max_fraction)
        self.sizes = dict(sizes)
        self.stage = stage
        self.found: dict[str, set[int]] = {}  # distinct broken samples per dataset
        self.skipped = 0  # skips in all (training sees a sample again every epoch)

    def allowed(self, dataset: str) -> int:
        return max(1, math.ceil(self.max_fraction * self.sizes.get(dataset, 0)))

    def __call__(self, sample: BrokenSample) -> None:
        if not self.skip:
            raise BrokenSampleError(
                f"{self.stage}: broken sample in {sample.describe()}; {SKIP_HINT}"
            )
        found = self.found.setdefault(sample.dataset, set())
        new = sample.index not in found
        found.add(sample.index)
        self.skipped += 1
        size, allowed = self.sizes.get(sample.dataset, 0), self.allowed(sample.dataset)
        if len(found) > allowed:
            raise BrokenSampleError(
                f"{self.stage}: {len(found)} broken samples found in dataset '{sample.dataset}' "
                f"({size} samples), more than DATALOADER.MAX_BROKEN_FRACTION="
                f"{self.max_fraction} allows ({allowed}); the last: {sample.message}"
            )
        if new:
            logger.warning(
                "%s: skipped a broken sample (%d of %d in dataset '%s' so far, %d skips in all): "
                "%s",
                self.stage,
                len(found),
                size,
                sample.dataset,
                self.skipped,
                sample.message,
            )

    def state_dict(self) -> dict:
        return {"found": {k: sorted(v) for k, v in self.found.items()}, "skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        self.found = {k: set(v) for k, v in state.get("found", {}).items()}
        self.skipped = int(state.get("skipped", 0))


_SKIPPED_IN_EVALUATION: dict[str, list[BrokenSample]] = {}


def skipped_image_ids(dataset_name: str) -> set:
    """Image ids of `dataset_name` that the last evaluation in this process skipped."""
    return {sample.image_id for sample in _SKIPPED_IN_EVALUATION.get(dataset_name, ())}


def skipped_file_names(dataset_name: str) -> set:
    """Image files of `dataset_name` that the last evaluation in this process skipped."""
    return {
        sample.file_name
        for sample in _SKIPPED_IN_EVALUATION.get(dataset_name, ())
        if sample.file_name is not None
    }


def _record_skipped(dataset_name: str, sample: BrokenSample) -> None:
    _SKIPPED_IN_EVALUATION.setdefault(dataset_name, []).append(sample)


def _reset_skipped(dataset_name: str) -> None:
    _SKIPPED_IN_EVALUATION.pop(dataset_name, None)
