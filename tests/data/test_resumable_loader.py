"""The resumable training loader (dinat_m2f.data.loaders): the batches after a resume from a
saved state are those an uninterrupted loader gives, also with samples waiting in the
aspect-ratio buckets and with broken samples skipped, whatever the number of workers; split
over several processes, an iteration's batches hold the samples, augmentations and model seeds
of the one process's batch."""

import itertools
import os
import random
import time

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog

from dinat_m2f.config import add_maskformer2_config
from dinat_m2f.data.broken_samples import BrokenSampleError
from dinat_m2f.data.loaders import build_train_loader, samples_in_flight

NAME = "resumable_loader_test_dicts"
SIZE = 13
BROKEN = {4, 9}


def _dicts():
    # both aspect-ratio groups, unevenly: buckets keep samples between batches
    return [
        {
            "file_name": f"img{i}.jpg",
            "image_id": i,
            "width": 40 if i % 3 else 20,
            "height": 30,
            "index": i,
        }
        for i in range(SIZE)
    ]


class _Mapper:
    """Returns the index and one draw of each global random generator (as augmentations do);
    the samples in `broken` cannot be read."""

    def __init__(self, broken=frozenset()):
        self.broken = broken

    def __call__(self, d):
        if d["index"] in self.broken:
            raise BrokenSampleError(f"cannot read the image '{d['file_name']}': test")
        return {**d, "draws": (random.random(), float(np.random.rand()), float(torch.rand(())))}


@pytest.fixture(scope="module", autouse=True)
def registered():
    if NAME not in DatasetCatalog.list():
        DatasetCatalog.register(NAME, _dicts)


def _loader(workers: int, broken=frozenset(), grouping=True, batch=3, mapper=None, tuned=True):
    cfg = get_cfg()
    add_maskformer2_config(cfg)
    cfg.DATASETS.TRAIN = (NAME,)
    cfg.DATALOADER.NUM_WORKERS = workers
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False
    cfg.DATALOADER.ASPECT_RATIO_GROUPING = grouping
    cfg.DATALOADER.SKIP_BROKEN_SAMPLES = True
    cfg.DATALOADER.MAX_BROKEN_FRACTION = 0.2
    cfg.SOLVER.IMS_PER_BATCH = batch
    cfg.SEED = 7
    return build_train_loader(cfg, mapper or _Mapper(broken), tuned_transfer=tuned)


def _take(iterator, n):
    return [[(d["index"], d["draws"]) for d in batch] for batch in itertools.islice(iterator, n)]


@pytest.mark.parametrize("broken", [frozenset(), frozenset(BROKEN)])
def test_resumed_loader_gives_the_uninterrupted_batches(broken):
    reference = _take(iter(_loader(0, broken)), 30)
    assert len({i for batch in reference for i, _ in batch}) == SIZE - len(broken)
    resumed_with_pending = 0
    for cut in (1, 4, 7, 11, 17):
        first = _loader(0, broken)
        iterator = iter(first)
        assert _take(iterator, cut) == reference[:cut]
        state = first.state_dict()
        resumed_with_pending += bool(state["pending"])
        second = _loader(2, broken)  # another worker count, too
        second.load_state_dict(state)
        assert _take(iter(second), 30 - cut) == reference[cut:], cut
    assert resumed_with_pending >= 2  # the cuts did fall with samples waiting in a bucket


def test_the_worker_count_does_not_change_the_stream():
    assert _take(iter(_loader(0)), 12) == _take(iter(_loader(2)), 12)


def test_loading_a_state_into_a_running_loader_is_an_error():
    loader = _loader(0)
    iterator = iter(loader)
    next(iterator)
    with pytest.raises(RuntimeError, match="already iterating"):
        loader.load_state_dict(loader.state_dict())


@pytest.mark.parametrize("world", [2, 3])
def test_processes_share_out_the_one_process_batches(monkeypatch, world):
    """Process r of `world` (as detectron2's comm reports it to the sampler and the loader)
    gets its part of each of the one-process run's batches: the same samples, augmentation
    draws and model seeds (`sample_seed`)."""
    from detectron2.utils import comm

    def batches(loader):
        return [
            sorted((d["index"], d["draws"], d["sample_seed"]) for d in batch)
            for batch in itertools.islice(iter(loader), 8)
        ]

    one = batches(_loader(0, grouping=False, batch=6))
    parts = []
    for rank in range(world):
        monkeypatch.setattr(comm, "get_world_size", lambda: world)
        monkeypatch.setattr(comm, "get_rank", lambda rank=rank: rank)
        monkeypatch.setattr(comm, "shared_random_seed", lambda: 0)  # replaced by SEED anyway
        parts.append(batches(_loader(0, grouping=False, batch=6)))
    monkeypatch.undo()
    assert all(len(batch) == 6 // world for part in parts for batch in part)
    assert [sorted(sum((part[i] for part in parts), [])) for i in range(8)] == one
    assert len({seed for batch in one for _, _, seed in batch}) == 48  # one per place


class _CountingMapper(_Mapper):
    """Also appends each mapped index to a file (the worker's work, seen from the test) and
    returns a tensor, as real mappers do."""

    def __init__(self, log):
        super().__init__()
        self.log = str(log)

    def __call__(self, d):
        with open(self.log, "a") as f:
            f.write(f"{d['index']}\n")
        return {**super().__call__(d), "image": torch.full((64,), float(d["index"]))}


def _mapped(log) -> int:
    return len(log.read_text().split()) if log.exists() else 0


def _settled(log, timeout=20.0) -> int:
    """The number of samples mapped once the workers have stopped for 0.5 s."""
    deadline, last, since = time.monotonic() + timeout, -1, time.monotonic()
    while time.monotonic() < deadline:
        now = _mapped(log)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > 0.5:
            break
        time.sleep(0.05)
    return last


def _worker_loader(log, batch: int, workers: int = 1, tuned: bool = True):
    return _loader(workers, grouping=False, batch=batch, mapper=_CountingMapper(log), tuned=tuned)


@pytest.mark.parametrize("batch,workers", [(4, 1), (3, 2)])
def test_workers_keep_two_batches_ready(tmp_path, batch, workers):
    """While the model works on a batch, the workers have the next two mapped (torch's
    default of 2 samples per worker would leave a batch of 4 waiting on one worker)."""
    log = tmp_path / "mapped.txt"
    iterator = iter(_worker_loader(log, batch, workers))
    first = next(iterator)
    assert len(first) == batch
    ready = _settled(log) - batch
    assert ready >= 2 * batch, f"{ready} samples mapped ahead, want at least {2 * batch}"


def test_untuned_transfer_is_torchs_default(tmp_path):
    """tuned_transfer=False (the training benchmark's baseline) keeps torch's 2 samples per
    worker under way."""
    log = tmp_path / "mapped.txt"
    iterator = iter(_worker_loader(log, batch=4, workers=1, tuned=False))
    next(iterator)
    assert _settled(log) - 4 == 2


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs /dev/shm (Linux)")
def test_workers_hand_tensors_over_as_named_shared_memory_files(tmp_path):
    """Tensors from the workers arrive as named files in /dev/shm (torch's "file_system"
    sharing), not as descriptors fetched from each worker one round trip at a time; the
    main process keeps its own strategy."""
    strategy = torch.multiprocessing.get_sharing_strategy()
    before = {f for f in os.listdir("/dev/shm") if f.startswith("torch_")}
    iterator = iter(_worker_loader(tmp_path / "mapped.txt", batch=2))
    batch = next(iterator)
    named = {f for f in os.listdir("/dev/shm") if f.startswith("torch_")} - before
    assert [d["image"][0].item() for d in batch] == [float(d["index"]) for d in batch]
    assert all(d["image"].is_shared() for d in batch)
    assert named, "no named shared-memory file holds the batch's tensors"
    assert torch.multiprocessing.get_sharing_strategy() == strategy


def test_samples_in_flight_needs_no_workers_to_be_none():
    assert samples_in_flight(4, 0) is None  # DataLoader refuses a prefetch_factor then
    assert samples_in_flight(1, 8) == 2  # never below torch's default
