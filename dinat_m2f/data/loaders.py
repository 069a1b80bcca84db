"""Training and test data loaders: resumable exactly, and with broken samples named or skipped.

**Training** (`build_train_loader`). detectron2's loader restarts its sample order and its
workers' random augmentations from the beginning on every `--resume`, so a resumed run trains
on other data than an uninterrupted one. Here each process's data stream is a sequence of
positions 0, 1, 2, ...; position p is the p-th index of the (seeded) training sampler. The
sampler gives process r of W the places r, r + W, r + 2W, ... of one global sample stream, so
position p is the global place g = p * W + r, and the sample is mapped with the random
generators seeded from (SEED, g). Each mapped dict also carries `sample_seed`, seeded from
(SEED, g), for the model's own random draws of that sample (the matcher's and the mask losses'
points). An iteration's batches over all processes thus hold the same samples, augmented the
same way, with the same random points, whatever the number of processes (with
ASPECT_RATIO_GROUPING, when every image falls in the same group). Workers take positions in
turn and the main process receives them in order, so a batch's content depends neither on the
number of workers nor on earlier runs. The loader's `state_dict()` (next position, positions
waiting in the aspect-ratio buckets, broken samples seen) is saved with every checkpoint; a
resumed loader replays the waiting positions and continues at the next one, giving the batches
the uninterrupted run would have had.

**Test** (`build_test_loader`). detectron2's test loader with the label files the evaluators
will read decoded first, and unreadable samples named with their dataset or skipped.

Broken samples: see `broken_samples` (`DATALOADER.SKIP_BROKEN_SAMPLES`,
`DATALOADER.MAX_BROKEN_FRACTION`).
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Iterator

import torch
import torch.utils.data as torchdata
from detectron2.config import CfgNode
from detectron2.data import (
    DatasetFromList,
    build_detection_test_loader,
    get_detection_dataset_dicts,
)
from detectron2.data.build import _train_loader_from_config
from detectron2.data.dataset_mapper import DatasetMapper
from detectron2.data.samplers import InferenceSampler
from detectron2.utils import comm

from ..seeding import SAMPLE, SAMPLE_MODEL, SAMPLER, derive_seed, seeded
from .broken_samples import (
    BrokenSample,
    BrokenSampleCounter,
    BrokenSampleError,
    _record_skipped,
    _reset_skipped,
    check_label_file,
    reading,
)

logger = logging.getLogger(__name__)

# label files of a dataset dict that evaluators read, checked before a test sample is used
EVALUATED_LABEL_FILES = (
    ("sem_seg_file_name", "semantic annotation PNG"),
    ("pan_seg_file_name", "panoptic annotation PNG"),
)


def _identity(x):
    return x


def base_seed_of(cfg: CfgNode) -> int:
    """cfg.SEED when >= 0, else one random seed shared by all processes."""
    return int(cfg.SEED) if cfg.SEED >= 0 else int(comm.shared_random_seed())


class _DatasetNames:
    """Dataset name and index within it of a sample of the concatenated training datasets."""

    def __init__(self, names: list[str], sizes: list[int]) -> None:
        self.names, self.sizes = names, sizes
        self.starts = [sum(sizes[:i]) for i in range(len(sizes))]

    def __call__(self, index: int) -> tuple[str, int]:
        k = bisect.bisect_right(self.starts, index) - 1
        return self.names[k], index - self.starts[k]


class _SampleStream(torchdata.IterableDataset):
    """Yields (position, mapped dict | BrokenSample | None) for the positions `replay` and
    then `start`, `start + 1`, ... of the sampler's stream of process `rank` of `world`;
    data-loader worker w of n takes every n-th."""

    def __init__(
        self, dataset, mapper: Callable, sampler, names: _DatasetNames, rank: int, world: int
    ):
        self.dataset, self.mapper, self.sampler, self.names = dataset, mapper, sampler, names
        self.rank, self.world = rank, world
        self.base_seed = 0
        self.start = 0
        self.replay: tuple[int, ...] = ()

    def _positions(self) -> Iterator[tuple[int, int]]:
        replay = set(self.replay)
        for position, index in enumerate(self.sampler):
            if position >= self.start or position in replay:
                yield position, int(index)

    def __iter__(self):
        info = torchdata.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for k, (position, index) in enumerate(self._positions()):
            if k % workers == worker:
                yield position, self._map(position, index)

    def _map(self, position: int, index: int):
        record = self.dataset[index]
        # detectron2's training samplers shard one stream: process r takes places r, r + W, ...
        place = position * self.world + self.rank
        with seeded(derive_seed(self.base_seed, SAMPLE, place)):
            try:
                mapped = self.mapper(record)
                if mapped is not None:
                    mapped["sample_seed"] = derive_seed(self.base_seed, SAMPLE_MODEL, place)
                return mapped
            except BrokenSampleError as error:
                name, local = self.names(index)
                return BrokenSample(
                    name, local, str(error), record.get("image_id"), record.get("file_name")
                )


def samples_in_flight(batch_size: int, num_workers: int) -> int | None:
    """DataLoader's prefetch_factor for a stream of single samples: each worker keeps enough
    samples under way that two whole batches are ready between them. torch's default (2 per
    worker) leaves a batch of 4 on one worker waiting for two samples at every step; a batched
    DataLoader would hold 2 batches per worker, more than this."""
    if num_workers == 0:
        return None  # no workers: the main process maps each sample when it is asked for
    return max(2, -(-2 * batch_size // num_workers))


def share_by_filename(_worker_id: int) -> None:
    """Workers hand their tensors over as named shared-memory files: with torch's default
    (file descriptors) the main process fetches each tensor's descriptor from a thread of the
    worker, a round trip per tensor that waits for that thread to get a CPU. Set in the worker
    only; the main process keeps its own strategy."""
    torch.multiprocessing.set_sharing_strategy("file_system")


class ResumableTrainLoader:
    """Iterable of training batches (lists of mapped dicts) whose position in the data stream
    is saved and restored (`state_dict`, `load_state_dict`); see the module docstring."""

    def __init__(
        self,
        stream: _SampleStream,
        batch_size: int,
        aspect_ratio_grouping: bool,
        num_workers: int,
        counter: BrokenSampleCounter,
        base_seed: int,
        tuned_transfer: bool = True,
    ) -> None:
        self._stream = stream
        # samples_in_flight and share_by_filename; False: torch's defaults (benchmarks)
        self.tuned_transfer = bool(tuned_transfer)
        self.batch_size = int(batch_size)
        self.aspect_ratio_grouping = bool(aspect_ratio_grouping)
        self.num_workers = int(num_workers)
        self.broken = counter
        self.next_position = 0
        self._pending: list[int] = []
        self._buckets: list[list] | None = None
        self.set_base_seed(base_seed)

    @property
    def base_seed(self) -> int:
        return self._stream.base_seed

    def set_base_seed(self, seed: int) -> None:
        """The seed of the sample order and of every sample's augmentation."""
        self._require_not_started("set_base_seed")
        self._stream.base_seed = int(seed)
        if hasattr(self._stream.sampler, "_seed"):  # detectron2's training samplers
            self._stream.sampler._seed = derive_seed(seed, SAMPLER)

    def _require_not_started(self, what: str) -> None:
        if self._buckets is not None:
            raise RuntimeError(f"ResumableTrainLoader.{what}: the loader is already iterating")

    def state_dict(self) -> dict:
        pending = (
            self._pending if self._buckets is None else [p for b in self._buckets for p, _ in b]
        )
        return {
            "next_position": self.next_position,
            "pending": sorted(pending),
            "broken": self.broken.state_dict(),
            "base_seed": self.base_seed,
        }

    def load_state_dict(self, state: dict) -> None:
        self._require_not_started("load_state_dict")
        self.set_base_seed(int(state["base_seed"]))
        self.next_position = int(state["next_position"])
        self._pending = sorted(int(p) for p in state["pending"])
        self.broken.load_state_dict(state.get("broken", {}))

    def __iter__(self) -> Iterator[list[dict]]:
        self._require_not_started("__iter__")
        self._stream.start = self.next_position
        self._stream.replay = tuple(self._pending)
        loader = torchdata.DataLoader(
            self._stream,
            batch_size=None,
            num_workers=self.num_workers,
            prefetch_factor=samples_in_flight(self.batch_size, self.num_workers)
            if self.tuned_transfer
            else None,
            worker_init_fn=share_by_filename if self.tuned_transfer else None,
            collate_fn=_identity,
            generator=torch.Generator().manual_seed(0),  # leaves the global generator alone
        )
        buckets: list[list] = [[], []]  # detectron2's groups: width > height, and the others
        self._buckets = buckets
        for position, item in loader:
            self.next_position = max(self.next_position, position + 1)
            if isinstance(item, BrokenSample):
                self.broken(item)
                continue
            if item is None:  # a mapper's way of dropping a sample
                continue
            group = 0 if (not self.aspect_ratio_grouping or item["width"] > item["height"]) else 1
            bucket = buckets[group]
            bucket.append((position, item))
            if len(bucket) == self.batch_size:
                batch = [d for _, d in bucket]
                del bucket[:]
                yield batch


def build_train_loader(
    cfg: CfgNode, mapper: Callable, tuned_transfer: bool = True
) -> ResumableTrainLoader:
    """The training loader of `cfg` (DATASETS.TRAIN, SOLVER.IMS_PER_BATCH split over the
    processes, DATALOADER.{NUM_WORKERS, ASPECT_RATIO_GROUPING, SAMPLER_TRAIN, FILTER_EMPTY_
    ANNOTATIONS, SKIP_BROKEN_SAMPLES, MAX_BROKEN_FRACTION}, SEED) with `mapper`.
    `tuned_transfer=False` moves samples from the workers with torch's defaults instead
    (`samples_in_flight`, `share_by_filename`): for measuring what they buy."""
    names, dicts = list(cfg.DATASETS.TRAIN), []
    sizes = []
    for name in names:  # one by one, to name the dataset of a broken sample
        part = get_detection_dataset_dicts(
            [name],
            filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            min_keypoints=cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE
            if cfg.MODEL.KEYPOINT_ON
            else 0,
        )
        sizes.append(len(part))
        dicts.extend(part)
    # detectron2's choice of sampler (DATALOADER.SAMPLER_TRAIN) for these dicts
    sampler = _train_loader_from_config(cfg, mapper, dataset=dicts)["sampler"]
    world = comm.get_world_size()
    if cfg.SOLVER.IMS_PER_BATCH % world:
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH={cfg.SOLVER.IMS_PER_BATCH} is not divisible by the {world} "
            "processes"
        )
    counter = BrokenSampleCounter(
        cfg.DATALOADER.SKIP_BROKEN_SAMPLES,
        cfg.DATALOADER.MAX_BROKEN_FRACTION,
        dict(zip(names, sizes)),
        stage="training",
    )
    stream = _SampleStream(
        DatasetFromList(dicts, copy=False),
        mapper,
        sampler,
        _DatasetNames(names, sizes),
        comm.get_rank(),
        world,
    )
    return ResumableTrainLoader(
        stream,
        cfg.SOLVER.IMS_PER_BATCH // world,
        cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        cfg.DATALOADER.NUM_WORKERS,
        counter,
        base_seed_of(cfg),
        tuned_transfer,
    )


class _CheckedTestDataset(torchdata.Dataset):
    """A test dataset whose items are mapped dicts, or BrokenSample for unreadable samples."""

    def __init__(self, dicts: list[dict], mapper: Callable, dataset_name: str) -> None:
        self.dicts = DatasetFromList(dicts, copy=False)
        self.mapper = mapper
        self.dataset_name = dataset_name

    def __len__(self) -> int:
        return len(self.dicts)

    def __getitem__(self, index: int):
        record = self.dicts[index]
        try:
            for key, kind in EVALUATED_LABEL_FILES:
                if key in record:
                    check_label_file(record[key], kind)
            # the label files are readable: a read error now is the image's
            with reading(record.get("file_name"), "image"):
                return self.mapper(record)
        except BrokenSampleError as error:
            return BrokenSample(
                self.dataset_name,
                index,
                str(error),
                record.get("image_id"),
                record.get("file_name"),
            )


class CheckedTestLoader:
    """Batches of a test loader without the broken samples, which are named (error) or
    counted and logged (DATALOADER.SKIP_BROKEN_SAMPLES); `len()` is the inner loader's."""

    def __init__(self, loader, counter: BrokenSampleCounter, dataset_name: str) -> None:
        self._loader, self._counter, self.dataset_name = loader, counter, dataset_name

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self) -> Iterator[list[dict]]:
        _reset_skipped(self.dataset_name)
        self._counter.load_state_dict({})
        for batch in self._loader:
            kept = []
            for item in batch:
                if isinstance(item, BrokenSample):
                    self._counter(item)
                    _record_skipped(self.dataset_name, item)
                else:
                    kept.append(item)
            if kept:
                yield kept
        if self._counter.skipped:
            logger.warning(
                "evaluation of '%s': skipped %d broken samples of %d; the metrics leave them out",
                self.dataset_name,
                self._counter.skipped,
                self._counter.sizes[self.dataset_name],
            )


def build_test_loader(
    cfg: CfgNode, dataset_name: str, mapper: Callable | None = None
) -> CheckedTestLoader:
    """detectron2's test loader of `dataset_name` (batch 1, DATALOADER.NUM_WORKERS, mapper
    default DatasetMapper(cfg, False)) with broken samples named or skipped."""
    dicts = get_detection_dataset_dicts([dataset_name], filter_empty=False)
    dataset = _CheckedTestDataset(dicts, mapper or DatasetMapper(cfg, False), dataset_name)
    loader = build_detection_test_loader(
        dataset=dataset,
        mapper=None,
        sampler=InferenceSampler(len(dataset)),
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )
    counter = BrokenSampleCounter(
        cfg.DATALOADER.SKIP_BROKEN_SAMPLES,
        cfg.DATALOADER.MAX_BROKEN_FRACTION,
        {dataset_name: len(dataset)},
        stage=f"evaluation of '{dataset_name}'",
    )
    return CheckedTestLoader(loader, counter, dataset_name)
