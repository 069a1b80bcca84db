import os

import pytest
import torch

# Without a GPU, the fused Triton kernels are tested in Triton's interpreter, which must be
# chosen before Triton compiles anything (dinat_m2f's import registers the fused ops).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from dinat_m2f.ops.library import native_backends  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU and the CUDA kernels (skipped otherwise)")


def pytest_collection_modifyitems(config, items):
    has_cuda = torch.cuda.is_available() and "CUDA" in native_backends()
    skip = pytest.mark.skip(reason="needs a CUDA GPU and dinat_m2f._C built with CUDA")
    for item in items:
        if "cuda" in item.keywords and not has_cuda:
            item.add_marker(skip)


requires_native = pytest.mark.skipif(
    "CPU" not in native_backends(), reason="dinat_m2f._C (native CPU kernels) is not built"
)
