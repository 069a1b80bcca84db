"""The CUDA kernels on the emulated device under ThreadSanitizer and AddressSanitizer
(tools/sanitize.py): our kernels and the SIMT layer run clean, and each planted bug (a removed
__syncthreads, a write past the dynamic shared memory, a read past an input) is reported and
blamed on its kernel. The sanitizer builds are cached in build/sanitizers/."""

import shutil

import pytest

from tools import sanitize

pytestmark = pytest.mark.skipif(shutil.which(sanitize.CXX) is None, reason="no C++ compiler")


@pytest.mark.parametrize("check", sanitize.CHECKS, ids=lambda c: c.name.replace(" ", "-"))
def test_sanitizer_check(check):
    result = sanitize.run(sanitize.build(check.sanitizer), check.mode)
    problem = sanitize.verdict(check, result)
    assert problem is None, problem


def test_verdict_refuses_a_silent_planted_bug_and_a_noisy_clean_run():
    import subprocess

    quiet = subprocess.CompletedProcess([], 0, stdout="PASS race\n", stderr="")
    assert sanitize.verdict(sanitize.Check("tsan", "race", "data race"), quiet) is not None
    noisy = subprocess.CompletedProcess(
        [], 66, stdout="PASS kernels\n", stderr="WARNING: ThreadSanitizer: data race"
    )
    assert sanitize.verdict(sanitize.Check("tsan", "kernels", None), noisy) is not None
