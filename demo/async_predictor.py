"""The demo's multi-process predictor: `AsyncPredictor` runs `DemoPredictor` (predictor.py)
in one worker process per GPU; results come back in the order the images were put."""

from __future__ import annotations

import bisect
import multiprocessing as mp
import queue
from typing import Any

import numpy as np
import torch
from detectron2.config import CfgNode
from predictor import DemoPredictor, predictions_to_cpu

from dinat_m2f.checkpoint import WeightsError

__all__ = ["AsyncPredictor"]


class _StopToken:
    pass


class _WorkerFailure:
    def __init__(self, message: str) -> None:
        self.message = message


def _predict_worker(cfg: CfgNode, allow_partial: bool, task_queue, result_queue) -> None:
    """Worker process: build the predictor, report ("ready", None) or ("error", message),
    then answer (index, image) tasks with (index, predictions on the CPU)."""
    try:
        import dinat_m2f.data  # noqa: F401  (registers the datasets: metadata)
        import dinat_m2f.modeling  # noqa: F401  (registers the model)

        predictor = DemoPredictor(cfg, allow_partial_weights=allow_partial)
    except Exception as e:
        result_queue.put(("error", f"{type(e).__name__}: {e}"))
        return
    result_queue.put(("ready", None))
    while True:
        task = task_queue.get()
        if isinstance(task, _StopToken):
            break
        idx, image = task
        try:
            result = predictions_to_cpu(predictor(image))
        except Exception as e:
            result = _WorkerFailure(f"{cfg.MODEL.DEVICE}: {type(e).__name__}: {e}")
        result_queue.put((idx, result))


class AsyncPredictor:
    """Run DemoPredictor asynchronously: one worker process per GPU (device cuda:i).

    `put(image)` queues a BGR image, `get()` returns the predictions (on the CPU) of the
    images in the order they were put; `__call__` does both. Worker start-up errors (weights,
    config) are raised from the constructor as `WeightsError` / `RuntimeError`.
    """

    def __init__(self, cfg: CfgNode, num_gpus: int = 1, *, allow_partial_weights: bool = False):
        if num_gpus < 1 or not torch.cuda.is_available():
            raise RuntimeError(
                "parallel inference needs at least one CUDA GPU "
                f"(torch.cuda.is_available()={torch.cuda.is_available()}, num_gpus={num_gpus})"
            )
        ctx = mp.get_context("spawn")  # CUDA cannot be used in forked processes
        self.task_queue = ctx.Queue(maxsize=num_gpus * 3)
        self.result_queue = ctx.Queue(maxsize=num_gpus * 3)
        self.procs = []
        for gpu in range(num_gpus):
            worker_cfg = cfg.clone()
            worker_cfg.defrost()
            worker_cfg.MODEL.DEVICE = f"cuda:{gpu}"
            proc = ctx.Process(
                target=_predict_worker,
                args=(worker_cfg, allow_partial_weights, self.task_queue, self.result_queue),
                daemon=True,
            )
            proc.start()
            self.procs.append(proc)
        self.put_idx = 0
        self.get_idx = 0
        self.result_rank: list[int] = []
        self.result_data: list[Any] = []
        errors = []
        for _ in self.procs:
            status, message = self._next_result()
            if status == "error":
                errors.append(message)
        if errors:
            self.shutdown()
            text = "; ".join(sorted(set(errors)))
            raise (WeightsError if "WeightsError" in text else RuntimeError)(
                f"parallel worker failed to start: {text}"
            )

    def _next_result(self):
        while True:
            try:
                return self.result_queue.get(timeout=1.0)
            except queue.Empty:
                dead = [p for p in self.procs if not p.is_alive()]
                if dead:
                    raise RuntimeError(
                        f"parallel worker process {dead[0].pid} died (exit code {dead[0].exitcode})"
                    ) from None

    def put(self, image: np.ndarray) -> None:
        self.put_idx += 1
        self.task_queue.put((self.put_idx, image))

    def get(self) -> dict[str, Any]:
        self.get_idx += 1
        if self.result_rank and self.result_rank[0] == self.get_idx:
            result = self.result_data.pop(0)
            self.result_rank.pop(0)
        else:
            while True:
                idx, result = self._next_result()
                if idx == self.get_idx:
                    break
                pos = bisect.bisect(self.result_rank, idx)
                self.result_rank.insert(pos, idx)
                self.result_data.insert(pos, result)
        if isinstance(result, _WorkerFailure):
            raise RuntimeError(f"parallel inference failed: {result.message}")
        return result

    def __len__(self) -> int:
        return self.put_idx - self.get_idx

    def __call__(self, image: np.ndarray) -> dict[str, Any]:
        self.put(image)
        return self.get()

    def shutdown(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                try:
                    self.task_queue.put(_StopToken(), timeout=1.0)
                except queue.Full:
                    pass
        for proc in self.procs:
            proc.join(timeout=5.0)
            if proc.is_alive():
                proc.terminate()

    @property
    def default_buffer_size(self) -> int:
        return len(self.procs) * 5
