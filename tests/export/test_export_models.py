"""Exported Mask2Former models in ONNX Runtime against PyTorch: the raw logits within 1e-4 and
the numpy post-processing's semantic / panoptic / instance results equal to MaskFormer's own
inference, at two input sizes per export (dynamic height and width): the test model and the
released DiNAT-T and DiNAT-L architectures (random weights); the run-time input checks; models
and options that cannot be exported; the deploy folder importing with numpy alone."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from dinat_m2f.engine.setup import load_cfg
from tests.conftest import requires_native
from tests.modeling.mask2former_tiny import tiny_mask2former_cfg

pytest.importorskip("onnxruntime")

from dinat_m2f.export import NotExportableError, export_model  # noqa: E402
from dinat_m2f.export.deploy import ExportedModel, InputError, postprocess  # noqa: E402
from dinat_m2f.export.wrappers import graph_of  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
pytestmark = requires_native


def _export(cfg, tmp_path, sample_size, fmt="onnx"):
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    sample = torch.randn(1, 3, *sample_size)
    path = str(tmp_path / ("model.onnx" if fmt == "onnx" else "model.pt2"))
    result = export_model(cfg, model, sample, path, fmt)
    return model, result


def _same_results(ours: dict, theirs: dict) -> None:
    """numpy post-processing results == MaskFormer.forward's for one image."""
    assert ours.keys() == theirs.keys()
    np.testing.assert_allclose(ours["sem_seg"], theirs["sem_seg"].numpy(), atol=1e-4, rtol=0)
    np.testing.assert_array_equal(ours["sem_seg"].argmax(0), theirs["sem_seg"].argmax(0).numpy())
    if "panoptic_seg" not in ours:
        return
    seg, segments = ours["panoptic_seg"]
    np.testing.assert_array_equal(seg, theirs["panoptic_seg"][0].numpy())
    assert segments == theirs["panoptic_seg"][1]
    inst, ref = ours["instances"], theirs["instances"]
    order = np.argsort(-ref.scores.numpy(), kind="stable")
    np.testing.assert_array_equal(inst["classes"], ref.pred_classes.numpy()[order])
    np.testing.assert_allclose(inst["scores"], ref.scores.numpy()[order], atol=1e-5, rtol=0)
    np.testing.assert_array_equal(inst["masks"], ref.pred_masks.numpy()[order] > 0)
    np.testing.assert_array_equal(inst["boxes"], ref.pred_boxes.tensor.numpy()[order])


def _check_against_pytorch(model, path, sizes):
    session = ExportedModel(path)
    graph = graph_of(model)
    for size in sizes:
        torch.manual_seed(sum(size))
        image = torch.randn(1, 3, *size)
        outputs = session(image.numpy())
        with torch.no_grad():
            class_logits, mask_logits = graph(image)
        np.testing.assert_allclose(outputs["class_logits"], class_logits.numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(outputs["mask_logits"], mask_logits.numpy(), atol=1e-4, rtol=0)
        # the model's own inference takes the un-normalised image
        pixels = image[0] * model.pixel_std + model.pixel_mean
        with torch.no_grad():
            (theirs,) = model([{"image": pixels}])
        ours = postprocess.mask_former_results(
            outputs["class_logits"][0], outputs["mask_logits"][0], session.info, size
        )
        _same_results(ours, theirs)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    cfg = tiny_mask2former_cfg()
    model, result = _export(cfg, tmp_path_factory.mktemp("tiny"), (128, 160))
    return model, result


def test_tiny_model_onnx_equals_pytorch_at_two_sizes(tiny_onnx):
    """One export, run at its traced size and another: the NA window tables, reshapes and
    upsampling sizes follow the input."""
    model, result = tiny_onnx
    # the last level (stride 32, kernel 7) pads below 224 px, the 2nd-to-last (stride 16)
    # below 112: one graph for 128..192
    assert (result.sizes.min_height, result.sizes.max_height) == (128, 192)
    assert (result.sizes.min_width, result.sizes.max_width) == (128, 192)
    _check_against_pytorch(model, result.path, [(128, 160), (192, 128)])


def test_runtime_refuses_wrong_dtype_shape_and_size(tiny_onnx):
    _, result = tiny_onnx
    session = ExportedModel(result.path)
    good = np.zeros((1, 3, 128, 160), dtype=np.float32)
    with pytest.raises(InputError, match="float32.*float64"):
        session(good.astype(np.float64))
    with pytest.raises(InputError, match=r"\(1, 3, height, width\), got \(3, 128, 160\)"):
        session(good[0])
    with pytest.raises(InputError, match=r"224x96 .* height in 128..192 and width in 128..192"):
        session(np.zeros((1, 3, 224, 96), dtype=np.float32))
    with pytest.raises(InputError, match=r"144x160 .* multiples of 32"):
        session(np.zeros((1, 3, 144, 160), dtype=np.float32))
    with pytest.raises(InputError, match="image_size is an input of exported detectors only"):
        session(good, image_size=(100, 100))


def test_exported_program_keeps_custom_ops(tmp_path):
    cfg = tiny_mask2former_cfg()
    model, result = _export(cfg, tmp_path, (128, 128), fmt="exported-program")
    program = torch.export.load(result.path)
    targets = {str(node.target) for node in program.graph_module.graph.nodes}
    for sub in program.graph_module.modules():  # the pixel decoder's autocast region
        targets |= {str(n.target) for n in getattr(sub, "graph", program.graph).nodes}
    assert {"dinat_m2f.na_qk.default", "dinat_m2f.na_av.default"} <= targets
    image = torch.randn(1, 3, 192, 160)  # another size in the traced range
    with torch.no_grad():
        ours = program.module()(image)
        ref = graph_of(model)(image)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "config, sample, sizes",
    [
        # DiNAT-T, kernel 7, dilations up to 8: below 112 px every dilated layer pads
        (
            "configs/ade20k/panoptic-segmentation/dinat/maskformer2_dinat_tiny_bs16_160k.yaml",
            (64, 96),
            [(64, 96), (96, 64)],
        ),
        # DiNAT-L, kernel 11, dilations up to 14: one graph for heights of 64 (44..87) and
        # widths of 96..160 (88..175)
        pytest.param(
            "configs/ade20k/semantic-segmentation/dinat/"
            "maskformer2_dinat_large_in22k_bs16_160k_res640.yaml",
            (64, 96),
            [(64, 96), (64, 128)],
            marks=pytest.mark.skipif(
                os.environ.get("DINAT_M2F_EXPORT_LARGE") != "1",
                reason="DiNAT-L export: ~3 min of CI; DINAT_M2F_EXPORT_LARGE=1 runs it",
            ),
        ),
    ],
    ids=["dinat_tiny", "dinat_large"],
)
def test_released_architectures_onnx_equal_pytorch(tmp_path, config, sample, sizes):
    cfg = load_cfg(
        str(ROOT / config),
        ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "SOLVER.AMP.ENABLED", "False"],
    )
    model, result = _export(cfg, tmp_path, sample)
    _check_against_pytorch(model, result.path, sizes)


def test_not_exportable_models_and_options_are_named(tmp_path):
    tiny = tiny_mask2former_cfg()
    model = build_model(tiny).eval()
    sample = torch.zeros(1, 3, 64, 64)
    with pytest.raises(NotExportableError, match="model Linear .*MODEL.META_ARCHITECTURE"):
        export_model(tiny, torch.nn.Linear(2, 2), sample, str(tmp_path / "x.onnx"))
    tiny.TEST.AUG.ENABLED = True
    with pytest.raises(NotExportableError, match="TEST.AUG.ENABLED"):
        export_model(tiny, model, sample, str(tmp_path / "x.onnx"))
    tiny.TEST.AUG.ENABLED = False
    with pytest.raises(NotExportableError, match="--format 'tflite'"):
        export_model(tiny, model, sample, str(tmp_path / "x.onnx"), "tflite")
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools/deploy/export_model.py"),
            "--config-file",
            str(ROOT / "configs/builtin/maskformer2_dinat_mini_builtin_shapes.yaml"),
            "--output",
            str(tmp_path / "x.onnx"),
            "--allow-random-weights",
            "TEST.AUG.ENABLED",
            "True",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 2, run.stderr[-2000:]
    assert "export_model: error: TEST.AUG.ENABLED=True" in run.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_deploy_folder_imports_with_numpy_alone():
    code = (
        "import importlib.util, sys\n"
        "for name in ('torch', 'detectron2', 'dinat_m2f', 'cv2'):\n"
        "    sys.modules[name] = None  # any import of these fails\n"
        f"spec = importlib.util.spec_from_file_location('m2f_deploy', "
        f"{str(ROOT / 'dinat_m2f/export/deploy/__init__.py')!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "sys.modules['m2f_deploy'] = module\n"
        "spec.loader.exec_module(module)\n"
        "print(module.Predictor.__name__, module.mask_former_results.__name__)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["Predictor", "mask_former_results"]
