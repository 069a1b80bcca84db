"""The built-in model exported: the ONNX file, evaluated with detectron2's test loader and the
evaluators train_net.py uses (dinat_m2f/export/evaluate.py), scores the same PQ, AP and mIoU
as the PyTorch model on built-in val images. Here a small model trained for a few iterations
on a small built-in dataset; the `make demo` model over all 60 val images is in
docs/export.md."""

import math
from pathlib import Path

import pytest
import torch
from detectron2.modeling import build_model

from dinat_m2f.checkpoint import load_model_weights
from dinat_m2f.data.datasets.builtin_shapes import register_builtin_shapes
from dinat_m2f.engine.setup import load_cfg
from tests.conftest import requires_native
from tests.engine.train_net_runner import CONFIG, SMALL_MODEL, run_train_net

pytest.importorskip("onnxruntime")

from dinat_m2f.export import export_model  # noqa: E402
from dinat_m2f.export.evaluate import ExportedAsModel, evaluate  # noqa: E402

pytestmark = requires_native
PREFIX = "export_test_shapes"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(datasets root, weights) of the small model after a few iterations on 96 px images."""
    from dinat_m2f.data.synthetic import generate_builtin_shapes

    root = str(tmp_path_factory.mktemp("datasets"))
    generate_builtin_shapes(root, num_train=8, num_val=4, size=96, seed=0)
    output = tmp_path_factory.mktemp("train")
    overrides = ["SOLVER.MAX_ITER", "10", "SOLVER.CHECKPOINT_PERIOD", "100", "DATASETS.TEST", "()"]
    result = run_train_net(root, str(output), overrides=overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, output / "model_final.pth"


def test_exported_builtin_model_scores_as_pytorch(trained, tmp_path):
    root, weights = trained
    register_builtin_shapes(root, prefix=PREFIX)
    cfg = load_cfg(CONFIG, SMALL_MODEL + ["OUTPUT_DIR", str(tmp_path), "MODEL.DEVICE", "cpu"])
    cfg.DATASETS.TEST = (f"{PREFIX}_val_panoptic_with_sem_seg",)
    model = build_model(cfg).eval()
    load_model_weights(model, str(weights))
    path = str(tmp_path / "builtin.onnx")
    export_model(cfg, model, torch.zeros(1, 3, 96, 96), path)
    ours = evaluate(cfg, ExportedAsModel(path), str(tmp_path / "onnx"))[cfg.DATASETS.TEST[0]]
    theirs = evaluate(cfg, model, str(tmp_path / "torch"))[cfg.DATASETS.TEST[0]]
    assert ours.keys() == theirs.keys() and {"panoptic_seg", "segm", "sem_seg"} <= ours.keys()
    for task, metrics in theirs.items():  # PQ, AP, mIoU and every per-class / per-size value
        assert ours[task].keys() == metrics.keys()
        for name, value in metrics.items():
            if math.isnan(value):
                assert math.isnan(ours[task][name]), (task, name)
            else:
                assert ours[task][name] == pytest.approx(value, abs=0.1), (task, name)
    assert theirs["sem_seg"]["mIoU"] > 1  # the model has learned something to compare
    assert Path(path).stat().st_size > 0
