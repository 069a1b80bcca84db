import os

import pytest
import torch

# Without a GPU, the fused Triton kernels are tested in Triton's interpreter, which must be
# chosen before Triton compiles anything (dinat_m2f's import registers the fused ops).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from dinat_m2f.ops.library import REQUIRE_ENV, env_flag, native_backends  # noqa: E402
from tests import emulated_device  # noqa: E402

# The test extension (the emulated device), loaded here once for the whole suite; a missing one
# fails like a missing dinat_m2f._C when the native build is required (make test).
EMULATED_DEVICE = emulated_device.load()
if not EMULATED_DEVICE and "CPU" in native_backends() and env_flag(REQUIRE_ENV):
    raise ImportError(f"the emulated device is not built: {emulated_device.unavailable_reason()}")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "cuda: needs a CUDA GPU and the CUDA kernels (skipped otherwise)"
    )


def pytest_collection_modifyitems(config, items):
    has_cuda = torch.cuda.is_available() and "CUDA" in native_backends()
    skip = pytest.mark.skip(reason="needs a CUDA GPU and dinat_m2f._C built with CUDA")
    for item in items:
        if "cuda" in item.keywords and not has_cuda:
            item.add_marker(skip)


requires_native = pytest.mark.skipif(
    "CPU" not in native_backends(), reason="dinat_m2f._C (native CPU kernels) is not built"
)
requires_emulated_device = pytest.mark.skipif(
    not EMULATED_DEVICE,
    reason=f"dinat_m2f._C_testing (the emulated device) is not built: "
    f"{emulated_device.unavailable_reason()}",
)


# MODEL.DINAT of DiNAT-Mini (the config defaults are the DiNAT release's, i.e. DiNAT-L):
# KEY VALUE pairs for merge_from_list, and the same values for set_dinat_mini
DINAT_MINI = {
    "EMBED_DIM": 64,
    "DEPTHS": [3, 4, 6, 5],
    "NUM_HEADS": [2, 4, 8, 16],
    "MLP_RATIO": 3.0,
    "KERNEL_SIZE": 7,
    "DILATIONS": [[1, 8, 1], [1, 4, 1, 4], [1, 2, 1, 2, 1, 2], [1, 1, 1, 1, 1]],
    "DROP_PATH_RATE": 0.2,
}
DINAT_MINI_OPTS = [
    item for key, value in DINAT_MINI.items() for item in (f"MODEL.DINAT.{key}", str(value))
]


def tiny_dinat_opts(dilations: str = "[[1], [1], [1], [1]]") -> list[str]:
    """KEY VALUE opts of a one-block-per-level, 32-wide DiNAT (heads 1, 2, 4, 8), with
    `dilations` (one per level): seconds per training iteration on a CPU."""
    return [
        "MODEL.DINAT.EMBED_DIM", "32",
        "MODEL.DINAT.DEPTHS", "[1, 1, 1, 1]",
        "MODEL.DINAT.NUM_HEADS", "[1, 2, 4, 8]",
        "MODEL.DINAT.DILATIONS", dilations,
    ]  # fmt: skip


def set_dinat_mini(cfg) -> None:
    """Sets cfg.MODEL.DINAT to DiNAT-Mini (dinat_mini's architecture)."""
    for key, value in DINAT_MINI.items():
        setattr(cfg.MODEL.DINAT, key, value)
