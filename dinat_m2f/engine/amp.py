"""Mixed-precision training on the model's device, GPU or CPU.

detectron2's AMPTrainer runs only on CUDA (it asserts a GPU and uses `torch.cuda.amp`). This
one autocasts for the device type the model lives on, so SOLVER.AMP works on the CPU too:
bfloat16 there runs the matrix multiplies and convolutions on the CPU's bfloat16 units where
it has them (AVX512-BF16, AMX). Gradients are scaled only for float16: bfloat16 has float32's
exponent range, so its gradients do not underflow and need no scaler."""

from __future__ import annotations

import logging
import time

import torch
from detectron2.engine import AMPTrainer
from detectron2.utils.events import get_event_storage

logger = logging.getLogger(__name__)


def device_type_of(model: torch.nn.Module) -> str:
    """ "cuda", "cpu", ...: where the model's parameters are (the first one's device)."""
    parameter = next(model.parameters(), None)
    return "cpu" if parameter is None else parameter.device.type


class DeviceAMPTrainer(AMPTrainer):
    """AMPTrainer for the model's device type (see the module docstring)."""

    def __init__(self, model, data_loader, optimizer, *, precision: torch.dtype, **kwargs):
        if precision not in (torch.float16, torch.bfloat16):
            raise ValueError(f"AMP precision must be float16 or bfloat16, got {precision}")
        self.device_type = device_type_of(model)
        scaler = torch.amp.GradScaler(self.device_type, enabled=precision == torch.float16)
        super().__init__(
            model, data_loader, optimizer, grad_scaler=scaler, precision=precision, **kwargs
        )

    def run_step(self) -> None:
        # AMPTrainer.run_step with the autocast and the scaler of self.device_type
        if not self.model.training:
            raise RuntimeError("DeviceAMPTrainer: the model was switched to eval mode")
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        if self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        with torch.autocast(self.device_type, dtype=self.precision):
            loss_dict = self.model(data)
            if isinstance(loss_dict, torch.Tensor):
                loss_dict = {"total_loss": loss_dict}
            losses = sum(loss_dict.values())
        if not self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        self.grad_scaler.scale(losses).backward()
        if self.log_grad_scaler:
            get_event_storage().put_scalar("[metric]grad_scaler", self.grad_scaler.get_scale())
        self.after_backward()
        if self.async_write_metrics:
            self.concurrent_executor.submit(
                self._write_metrics, loss_dict, data_time, iter=self.iter
            )
        else:
            self._write_metrics(loss_dict, data_time)
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()

    def load_state_dict(self, state_dict) -> None:
        # A checkpoint of a float32 or bfloat16 run holds no scale (none, or a disabled
        # scaler's empty one): a float16 run resumed from it starts from the initial scale,
        # where GradScaler itself would fail on the missing or empty entry.
        state = {**state_dict, "grad_scaler": state_dict.get("grad_scaler") or {}}
        if self.grad_scaler.is_enabled() and not state["grad_scaler"]:
            logger.warning(
                "the checkpoint holds no gradient scale (saved without float16 AMP); "
                "starting from the initial scale %s",
                self.grad_scaler.get_scale(),
            )
            state["grad_scaler"] = self.grad_scaler.state_dict()
        super().load_state_dict(state)
