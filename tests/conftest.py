import pytest

# first: tests/devices.py decides whether Triton's interpreter runs before anything imports
# Triton (dinat_m2f's import registers the fused ops)
from tests import devices
from tests.devices import requires_emulated_device, requires_native  # noqa: F401  (re-exported)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "cuda: needs a CUDA GPU and the CUDA kernels (skipped otherwise)"
    )


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason=devices.NO_CUDA)
    for item in items:
        if "cuda" in item.keywords and not devices.CUDA_KERNELS:
            item.add_marker(skip)


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
