"""Without the native extension the pure-PyTorch path runs, with one warning; the
environment variable forces it; DINAT_M2F_REQUIRE_NATIVE turns a missing build into an error."""

import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import requires_native

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Blocks `import dinat_m2f._C`, as on a machine where the extension was never built.
BLOCK_EXTENSION = textwrap.dedent(
    """
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "dinat_m2f._C":
                raise ImportError("blocked for the test")
    sys.meta_path.insert(0, Block())
    """
)

COMPUTE = textwrap.dedent(
    """
    import warnings
    warnings.simplefilter("always")
    with warnings.catch_warnings(record=True) as caught:
        import torch
        import dinat_m2f.layers as L
        from dinat_m2f.ops.na.reference import na_qk_reference
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(1, 9, 10, 2, 8, generator=g, dtype=torch.float64) for _ in range(3))
        rpb = torch.randn(2, 5, 5, generator=g, dtype=torch.float64)
        out = L.na2d(q, k, v, 3, dilation=2, rpb=rpb)
        out2 = L.na2d(q, k, v, 3, dilation=2, rpb=rpb)
        logits = L.na2d_qk(q, k, 3, dilation=2, rpb=rpb)
    expected = na_qk_reference(q, k, rpb, (3, 3), (2, 2))
    assert torch.allclose(logits, expected, rtol=1e-12, atol=1e-12)
    ours = [str(w.message) for w in caught if "dinat_m2f" in str(w.message)]
    print("BACKENDS", L.native_backends())
    print("WARNINGS", len(ours))
    print("SUM", float(out.sum()))
    """
)


def run_python(code, **env):
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "DINAT_M2F_REQUIRE_NATIVE": "0", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result


def test_missing_extension_falls_back_with_one_warning():
    result = run_python(BLOCK_EXTENSION + COMPUTE)
    assert result.returncode == 0, result.stderr
    assert "BACKENDS ()" in result.stdout
    assert "WARNINGS 1" in result.stdout


def test_missing_extension_is_an_error_when_required():
    result = run_python(BLOCK_EXTENSION + "import dinat_m2f.layers", DINAT_M2F_REQUIRE_NATIVE="1")
    assert result.returncode != 0
    assert "ImportError" in result.stderr and "could not be loaded" in result.stderr


@requires_native
def test_environment_variable_forces_pure_pytorch_with_same_results():
    forced = run_python(COMPUTE, DINAT_M2F_DISABLE_NATIVE="1")
    native = run_python(COMPUTE)
    assert forced.returncode == 0 and native.returncode == 0, forced.stderr + native.stderr
    assert "BACKENDS ()" in forced.stdout and "WARNINGS 0" in forced.stdout
    assert "'CPU'" in native.stdout
    total = [
        float(line.split()[1])
        for r in (forced, native)
        for line in r.stdout.splitlines()
        if line.startswith("SUM")
    ]
    assert total[0] == pytest.approx(total[1], rel=1e-12, abs=1e-12)


@requires_native
def test_device_without_native_kernels_warns_once_and_uses_pure_pytorch():
    code = textwrap.dedent(
        """
        import warnings
        import torch
        import dinat_m2f.ops.library as library
        import dinat_m2f.layers as L
        library.NATIVE_DEVICES["na"] = ("CUDA",)  # as if this build had no CPU kernels
        q = torch.randn(1, 9, 9, 2, 8)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            L.na2d(q, q, q, 3)
            L.na2d(q, q, q, 3)
        ours = [str(w.message) for w in caught if "not built for cpu tensors" in str(w.message)]
        print("WARNINGS", len(ours))
        """
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert "WARNINGS 1" in result.stdout
