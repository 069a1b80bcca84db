"""A NaN or infinite loss stops training before the optimizer step, with the iteration and the
non-finite terms named, and no checkpoint is written after it (dinat_m2f.engine.loss_guard);
the matcher names non-finite predictions instead of scipy's bare error."""

import itertools
import os

import pytest
import torch
from detectron2.engine import hooks
from torch import nn

from dinat_m2f.checkpoint.atomic_files import TrainingCheckpointer
from dinat_m2f.engine.loss_guard import (
    FiniteLossSimpleTrainer,
    NonFiniteLossError,
    nonfinite_loss_terms,
)
from dinat_m2f.modeling.matcher import HungarianMatcher, NonFiniteCostError

from .train_net_runner import run_train_net


def test_nonfinite_loss_terms_names_only_the_bad_ones():
    losses = {
        "loss_ce": torch.tensor(1.5),
        "loss_mask": torch.tensor(float("nan")),
        "loss_dice": torch.tensor(float("-inf")),
        "loss_ce_0": torch.tensor(0.0),
    }
    bad = nonfinite_loss_terms(losses)
    assert set(bad) == {"loss_mask", "loss_dice"}
    assert bad["loss_dice"] == float("-inf") and bad["loss_mask"] != bad["loss_mask"]  # NaN
    assert nonfinite_loss_terms({"a": torch.tensor(2.0)}) == {}


class _NaNAtIteration(nn.Module):
    """Two loss terms; loss_b becomes NaN in the forward of iteration `bad`."""

    def __init__(self, bad: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(4))
        self.calls, self.bad = 0, bad

    def forward(self, batch):
        iteration, self.calls = self.calls, self.calls + 1
        loss_b = (self.w**2).sum()
        if iteration == self.bad:
            loss_b = loss_b * float("nan")
        return {"loss_a": self.w.sum(), "loss_b": loss_b}


def test_training_stops_at_the_nan_iteration_and_writes_no_checkpoint_after_it(tmp_path):
    model = _NaNAtIteration(bad=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = FiniteLossSimpleTrainer(model, itertools.repeat([{}]), optimizer)
    checkpointer = TrainingCheckpointer(model, str(tmp_path))
    trainer.register_hooks([hooks.PeriodicCheckpointer(checkpointer, 1)])
    with pytest.raises(NonFiniteLossError) as error:
        trainer.train(0, 10)
    message = str(error.value)
    assert message.startswith("non-finite loss at iteration 3: loss_b=nan (of 2 loss terms)")
    assert "loss_a" not in message
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith(".pth")) == [
        "model_0000000.pth",
        "model_0000001.pth",
        "model_0000002.pth",
    ]
    assert open(tmp_path / "last_checkpoint").read() == "model_0000002.pth"
    # the NaN iteration did not step: the weights are those of the last checkpoint, finite
    saved = torch.load(tmp_path / "model_0000002.pth", weights_only=True)["model"]["w"]
    assert torch.equal(model.w.detach(), saved) and torch.isfinite(saved).all()


def test_train_net_stops_on_a_nan_loss_term_with_the_iteration_and_terms_named(tmp_path):
    from dinat_m2f.data.synthetic import generate_builtin_shapes

    root = str(tmp_path / "datasets")
    generate_builtin_shapes(root, num_train=4, num_val=2, size=96, seed=0)
    output = str(tmp_path / "out")
    # an infinite "no object" class weight: the weighted cross-entropy is inf / inf = NaN,
    # while the matcher (which does not use the weight) and the mask losses stay finite
    result = run_train_net(
        root,
        output,
        overrides=[
            "SOLVER.MAX_ITER",
            "3",
            "SOLVER.CHECKPOINT_PERIOD",
            "1",
            "DATASETS.TEST",
            "()",
            "MODEL.MASK_FORMER.NO_OBJECT_WEIGHT",
            "1e999",
        ],
    )
    assert result.returncode == 3, result.stderr[-3000:]
    assert (
        "train_net: error: non-finite loss at iteration 0: loss_ce=nan, loss_ce_0=nan "
        "(of 6 loss terms)"
    ) in result.stderr
    assert "Loss became infinite or NaN" not in result.stderr + result.stdout  # detectron2's
    assert not [f for f in os.listdir(output) if f.endswith(".pth") or f == "last_checkpoint"]


def test_the_matcher_names_non_finite_predictions():
    matcher = HungarianMatcher(1.0, 1.0, 1.0, num_points=16)
    logits = torch.randn(1, 3, 5)
    logits[0, 1, 2] = float("nan")
    outputs = {"pred_logits": logits, "pred_masks": torch.randn(1, 3, 8, 8)}
    targets = [{"labels": torch.tensor([0, 1]), "masks": torch.ones(2, 8, 8, dtype=torch.bool)}]
    with pytest.raises(
        NonFiniteCostError,
        match=r"matching cost of image 0 of the batch holds "
        r"2 of 6 NaN or infinite entries \(non-finite pred_logits: 1 of 15, "
        r"pred_masks: 0 of 192\)",
    ):
        matcher(outputs, targets)
