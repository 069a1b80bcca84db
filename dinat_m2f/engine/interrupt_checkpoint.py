"""Saving a checkpoint when training is interrupted (Ctrl-C, SIGTERM from a scheduler, SIGUSR2
from SLURM before the time limit as submitit asks for), so that `--resume` continues from the
last finished iteration instead of the last periodic checkpoint."""

from __future__ import annotations

import logging
import signal
import threading

from detectron2.engine import HookBase
from detectron2.utils import comm

logger = logging.getLogger(__name__)
# SIGUSR2: submitit's preemption / time-limit signal (SLURM's --signal=USR2@...)
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)


class TrainingInterrupted(KeyboardInterrupt):
    """Raised after the interrupt checkpoint is written; carries the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"training interrupted by {signal.Signals(signum).name}")
        self.signum = signum


class CheckpointOnInterrupt(HookBase):
    """On SIGINT / SIGTERM / SIGUSR2, finishes the current iteration, saves
    `model_interrupted_<iter>` (model, optimizer, scheduler, iteration) as the last checkpoint,
    and stops training by raising TrainingInterrupted. A second signal while saving is ignored.

    With several processes, a signal that reaches any of them stops all of them after the same
    iteration (the requests are gathered after every iteration): the main process saves, and
    no process is left waiting for the others. Register it last, so that the checkpoint holds
    the state after every other hook's step (the LR scheduler's)."""

    def __init__(self, checkpointer) -> None:
        self._checkpointer = checkpointer
        self._signum: int | None = None
        self._previous = {}

    def _request(self, signum, frame) -> None:
        if self._signum is None:
            logger.warning(
                "%s received: saving a checkpoint after this iteration", signal.Signals(signum).name
            )
        self._signum = signum

    def before_train(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be installed from the main thread
        for signum in HANDLED_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._request)

    def after_step(self) -> None:
        signum = self._signum
        if comm.get_world_size() > 1:  # every process stops after the same iteration
            signum = max(comm.all_gather(signum or 0)) or None
        if signum is None:
            return
        iteration = self.trainer.iter
        self._checkpointer.save(f"model_interrupted_{iteration:07d}", iteration=iteration)
        if comm.is_main_process():
            logger.warning("saved the checkpoint of iteration %d; resume with --resume", iteration)
        raise TrainingInterrupted(signum)

    def after_train(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
