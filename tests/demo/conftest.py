"""Fixtures of the demo tests: a tiny model's random weights, a tiny built-in dataset, and the
demo script loaded as a module (demo/ is no package)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from tests.conftest import tiny_dinat_opts

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_SCRIPT = REPO_ROOT / "demo" / "demo.py"
CONFIG = REPO_ROOT / "configs" / "builtin" / "maskformer2_dinat_mini_builtin_shapes.yaml"

# A few-layer, 32-wide model on 64-px inputs: builds and runs in well under a second on CPU.
TINY_OPTS = ["MODEL.DEVICE", "cpu", *tiny_dinat_opts()] + [
    "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32",
    "MODEL.SEM_SEG_HEAD.MASK_DIM", "32",
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", "1",
    "MODEL.MASK_FORMER.HIDDEN_DIM", "32",
    "MODEL.MASK_FORMER.NHEADS", "4",
    "MODEL.MASK_FORMER.DEC_LAYERS", "2",
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "8",
    "INPUT.MIN_SIZE_TEST", "64",
    "INPUT.MAX_SIZE_TEST", "128",
]  # fmt: skip


def load_demo_module():
    """demo/demo.py as the module `dinat_m2f_demo` (it puts demo/ on sys.path for its modules)."""
    name = "dinat_m2f_demo"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, DEMO_SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def save_random_weights(path: Path, opts: list[str]) -> None:
    """Build the model of the built-in config + opts and save its random weights."""
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    import dinat_m2f.data  # noqa: F401
    import dinat_m2f.modeling  # noqa: F401
    from dinat_m2f.engine.setup import load_cfg

    torch.manual_seed(0)
    model = build_model(load_cfg(str(CONFIG), opts))
    DetectionCheckpointer(model, save_dir=str(path.parent)).save(path.stem)


@pytest.fixture(scope="session")
def demo():
    return load_demo_module()


@pytest.fixture(scope="session")
def datasets_root(tmp_path_factory) -> Path:
    from dinat_m2f.data.synthetic import generate_builtin_shapes

    root = tmp_path_factory.mktemp("datasets")
    generate_builtin_shapes(str(root), num_train=2, num_val=3, size=64, seed=0)
    return root


@pytest.fixture(scope="session")
def val_images(datasets_root) -> list[Path]:
    return sorted((datasets_root / "builtin_shapes" / "val").glob("*.jpg"))


@pytest.fixture(scope="session")
def weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "tiny.pth"
    save_random_weights(path, TINY_OPTS)
    return path


@pytest.fixture(scope="session")
def weights_other_classes(tmp_path_factory) -> Path:
    """The tiny model with 5 classes instead of the config's 8."""
    path = tmp_path_factory.mktemp("weights") / "tiny_5_classes.pth"
    save_random_weights(path, TINY_OPTS + ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "5"])
    return path


@pytest.fixture
def demo_args(weights):
    """argv builder: demo_args(*args, weights=..., opts=[...])."""

    def build(*args: str, weights_path=weights, opts=()) -> list[str]:
        return [
            "--config-file", str(CONFIG), "--no-progress", *args,
            "--opts", *TINY_OPTS, "MODEL.WEIGHTS", str(weights_path), *opts,
        ]  # fmt: skip

    return build


@pytest.fixture
def datasets_env(datasets_root, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(datasets_root))
    return dict(os.environ)
