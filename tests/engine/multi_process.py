"""What the multi-process training tests share: the run they compare, the tolerance of the
comparison and how they wait for and read a run's files.

TOLERANCE: a run whose batch is split over processes ends within it of the one-process run.
float32 sums taken in another order (one batch of two images vs two batches of one, averaged
by the all-reduce) differ by ~1e-7 relative, and AdamW turns gradients into steps of about
the learning rate (3e-4 here), so rounding moves the weights by about 1e-6 in these 6
iterations (measured), while a real difference in data, random points or loss normalisation
moves them by a good part of a step (1.7e-3 measured with the per-process classification mean
of Mask2Former planted back).
"""

import time

import torch

TOLERANCE = 1e-5
EQUIVALENCE_OVERRIDES = [
    "SOLVER.MAX_ITER",
    "6",
    "SOLVER.CHECKPOINT_PERIOD",
    "3",
    "DATASETS.TEST",
    "()",  # no evaluation: only the weights are compared
]


def _weights(path: str) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def max_weight_difference(a: str, b: str) -> float:
    """Largest |difference| between the floating-point weights of two checkpoints."""
    wa, wb = _weights(a), _weights(b)
    assert set(wa) == set(wb)
    return max(
        float((wa[k].double() - wb[k].double()).abs().max())
        for k in wa
        if wa[k].is_floating_point()
    )


def read(path) -> str:
    """The text of a file, "" while it does not exist."""
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def wait_for(predicate, what: str, processes=(), timeout: float = 300) -> None:
    """Polls `predicate` until true; fails when a process of `processes` ends first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        for process in processes:
            if process.poll() is not None:
                raise AssertionError(f"a process ended (status {process.returncode}) before {what}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
