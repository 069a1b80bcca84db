"""The training state that a checkpoint needs beyond model, optimizer, scheduler and
iteration for `--resume` to continue exactly as an uninterrupted run would.

- Random numbers: before each iteration, Python's `random`, NumPy and torch (CPU and GPUs)
  are seeded from (seed, rank, iteration) (`dinat_m2f.seeding`), so the model's random draws
  (point sampling, dropout, drop-path) of iteration i are the same however the run got there
  (a restart, an evaluation in between).
- Data: the training loader's position in its data stream (`ResumableTrainLoader`), and the
  base seed when `SEED` is negative (random per run).

With one process per GPU, every process's loader state is gathered each iteration (one small
all-gather), since only the main process writes checkpoints.
"""

from __future__ import annotations

import logging

from detectron2.engine import HookBase
from detectron2.utils import comm

from ..data.loaders import ResumableTrainLoader
from ..seeding import ITERATION, derive_seed, seed_all

logger = logging.getLogger(__name__)


class ResumableTrainingState(HookBase):
    """Per-iteration seeding and the data loader's state in every checkpoint (see the module
    docstring). Register it before the hooks that write checkpoints."""

    def __init__(self, data_loader, base_seed: int) -> None:
        self._loader = data_loader if isinstance(data_loader, ResumableTrainLoader) else None
        self.base_seed = self._loader.base_seed if self._loader is not None else int(base_seed)
        self._gathered: list | None = None
        if self._loader is None:
            logger.warning(
                "the training loader (%s) does not save its position: --resume restarts its "
                "sample order",
                type(data_loader).__name__,
            )

    def before_step(self) -> None:
        seed_all(derive_seed(self.base_seed, ITERATION, comm.get_rank(), self.trainer.iter))

    def after_step(self) -> None:
        if self._loader is not None and comm.get_world_size() > 1:
            self._gathered = comm.all_gather(self._loader.state_dict())

    def state_dict(self) -> dict:
        state = {"base_seed": self.base_seed}
        if self._loader is not None:
            state["data"] = self._gathered or [self._loader.state_dict()]
        return state

    def load_state_dict(self, state: dict) -> None:
        self.base_seed = int(state["base_seed"])
        if self._loader is None:
            return
        per_rank = state.get("data") or []
        rank, world = comm.get_rank(), comm.get_world_size()
        if len(per_rank) != world:
            logger.warning(
                "the checkpoint holds the data-loader state of %d processes, this run has %d: "
                "the data stream starts again, in a new sample order",
                len(per_rank),
                world,
            )
            self._loader.set_base_seed(derive_seed(self.base_seed, world))
            return
        self._loader.load_state_dict(per_rank[rank])
        logger.info(
            "data stream resumed at position %d (%d samples waiting in the batching buckets)",
            self._loader.next_position,
            len(per_rank[rank]["pending"]),
        )
