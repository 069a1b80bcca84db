"""Random streams that are functions of (seed, what, rank, step), so that a resumed run draws
the same random numbers as an uninterrupted one.

A process-global random state (Python's `random`, NumPy's global generator, torch's default
generators) depends on everything that drew from it before: data-loader workers restarted by
`--resume`, an evaluation in the middle of training, the iterator of a data loader. Seeding
from `derive_seed(base, PURPOSE, rank, step)` at each step (a training iteration, a sample of
the data stream) makes the numbers independent of that history.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch

# purposes: different streams of one base seed never share a seed
SAMPLER = 1  # order of the training samples (detectron2's TrainingSampler seed)
SAMPLE = 2  # augmentation of the sample at one place of the global training stream
ITERATION = 3  # a process's model random numbers (dropout, drop-path) of one iteration
SAMPLE_MODEL = 4  # the model's draws for one sample of the global stream (matcher, loss points)


def derive_seed(base: int, *parts: int) -> int:
    """A 31-bit seed determined by `base` and the non-negative integers `parts` (NumPy's
    SeedSequence: well mixed, no two part tuples share a stream by construction)."""
    entropy = [int(base) % 2**63, *(int(p) for p in parts)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint32)[0] >> 1)


def seed_all(seed: int) -> None:
    """Seeds Python's `random`, NumPy's global generator and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Runs the block with `seed_all(seed)` and restores the CPU random states afterwards
    (for code that must not disturb the caller's streams; it does not use the GPU)."""
    py_state, np_state, torch_state = (
        random.getstate(),
        np.random.get_state(),
        torch.get_rng_state(),
    )
    random.seed(seed)
    np.random.seed(seed)
    torch.random.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
