"""Mixed precision on the model's device (dinat_m2f.engine.amp): on the CPU the forward runs
under bfloat16 autocast and the step equals the same step written out by hand; float16 scales
the loss and unscales the gradients before the optimizer; a float16 run resumes from a
checkpoint that holds no gradient scale; train_net.py trains in bfloat16 on the CPU."""

import itertools
import json
import logging
import math
import os

import pytest
import torch
from torch import nn

from dinat_m2f.engine.amp import DeviceAMPTrainer
from dinat_m2f.engine.loss_guard import FiniteLossAMPTrainer

from .train_net_runner import run_train_net


class _Regression(nn.Module):
    """A two-layer regression whose loss dict is what detectron2 trainers expect; records the
    dtype of its first layer's output (bfloat16 under CPU autocast, float32 outside)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.first, self.second = nn.Linear(8, 16), nn.Linear(16, 1)
        self.first_dtypes = []

    def forward(self, batch):
        x, y = batch
        hidden = self.first(x)
        self.first_dtypes.append(hidden.dtype)
        prediction = self.second(torch.relu(hidden)).float().squeeze(1)
        return {"loss_mse": ((prediction - y) ** 2).mean(), "loss_l1": hidden.float().abs().mean()}


def _batches():
    generator = torch.Generator().manual_seed(1)
    while True:
        yield torch.randn(32, 8, generator=generator), torch.randn(32, generator=generator)


def _by_hand(dtype: torch.dtype, scale: float, steps: int) -> nn.Module:
    """The reference: `steps` steps of autocast forward, backward of the loss times `scale`,
    gradients divided by `scale`, SGD step."""
    model = _Regression()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for batch in itertools.islice(_batches(), steps):
        with torch.autocast("cpu", dtype=dtype):
            loss = sum(model(batch).values())
        optimizer.zero_grad()
        (loss * scale).backward()
        for p in model.parameters():
            p.grad.div_(scale)
        optimizer.step()
    return model


def _trained(trainer_class, dtype: torch.dtype, steps: int):
    model = _Regression()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = trainer_class(model, _batches(), optimizer, precision=dtype)
    trainer.train(0, steps)
    return model, trainer


@pytest.mark.parametrize("trainer_class", [DeviceAMPTrainer, FiniteLossAMPTrainer])
def test_cpu_bfloat16_steps_equal_the_autocast_steps_by_hand(trainer_class):
    model, trainer = _trained(trainer_class, torch.bfloat16, steps=3)
    assert model.first_dtypes == [torch.bfloat16] * 3  # autocast on the model's device
    assert not trainer.grad_scaler.is_enabled()  # bfloat16 needs no scaling
    reference = _by_hand(torch.bfloat16, scale=1.0, steps=3)
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        assert torch.equal(p, q), name
    assert not torch.equal(model.first.weight, _Regression().first.weight)  # it did train


def test_float16_scales_the_loss_and_unscales_before_the_step():
    model, trainer = _trained(DeviceAMPTrainer, torch.float16, steps=2)
    assert model.first_dtypes == [torch.float16] * 2
    assert trainer.grad_scaler.is_enabled() and trainer.grad_scaler.get_scale() == 65536.0
    reference = _by_hand(torch.float16, scale=65536.0, steps=2)
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7, msg=name)


def test_only_float16_and_bfloat16_are_taken():
    with pytest.raises(ValueError, match="float16 or bfloat16, got torch.float32"):
        DeviceAMPTrainer(_Regression(), _batches(), None, precision=torch.float32)


def test_float16_resumes_from_a_checkpoint_without_a_scale(caplog):
    """A float32 run's trainer state has no "grad_scaler", a bfloat16 run's an empty one:
    either starts float16 from the initial scale, with a warning, where GradScaler alone
    raises."""
    _, fp32 = _trained_simple(steps=2)
    _, bf16 = _trained(DeviceAMPTrainer, torch.bfloat16, steps=2)
    for state in (fp32.state_dict(), bf16.state_dict()):
        assert not state.get("grad_scaler")
        model = _Regression()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        resumed = DeviceAMPTrainer(model, _batches(), optimizer, precision=torch.float16)
        with caplog.at_level(logging.WARNING, logger="dinat_m2f.engine.amp"):
            resumed.load_state_dict(state)
        assert "holds no gradient scale" in caplog.text
        assert resumed.iter == state["iteration"] == 2
        assert resumed.grad_scaler.get_scale() == 65536.0
        caplog.clear()
    with pytest.raises(RuntimeError, match="empty"):
        torch.amp.GradScaler("cpu").load_state_dict({})  # what the warning replaces


def _trained_simple(steps: int):
    from detectron2.engine import SimpleTrainer

    model = _Regression()
    trainer = SimpleTrainer(model, _batches(), torch.optim.SGD(model.parameters(), lr=0.1))
    trainer.train(0, steps)
    return model, trainer


def test_train_net_trains_in_bfloat16_on_the_cpu(datasets_root, tmp_path):
    result = run_train_net(
        datasets_root,
        str(tmp_path),
        overrides=[
            "SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.PRECISION", "bfloat16",
            "SOLVER.MAX_ITER", "2", "TEST.EVAL_PERIOD", "0", "SOLVER.CHECKPOINT_PERIOD", "100",
            "MODEL.MASK_FORMER.TEST.INSTANCE_ON", "False",
        ],
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert os.path.exists(os.path.join(tmp_path, "model_final.pth"))
    # the losses were logged and finite (the loss guard checks every term, every step)
    metrics = (tmp_path / "metrics.json").read_text().splitlines()
    losses = [json.loads(line)["total_loss"] for line in metrics if "total_loss" in line]
    assert losses and all(math.isfinite(v) for v in losses)
