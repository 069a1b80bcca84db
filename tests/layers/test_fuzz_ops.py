"""Fuzzing of every public op (tools/fuzz_ops.py) with a bounded number of examples, each run
in a child process so that a crash (a segfault in a kernel, an abort) fails the test instead
of the test-suite: random shapes, dtypes, strides, kernel sizes, dilations, empty and
huge-but-cheap sizes, and one broken argument per call. Valid calls must return the
brute-force oracle's result (tests/na_brute_force.py, tests/ms_deform_attn_brute_force.py) and
run the implementation their backend names; broken ones a ValueError/TypeError naming the
argument."""

import os
import subprocess
import sys

import pytest

from tests.conftest import requires_native

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@requires_native
@pytest.mark.parametrize(
    "op,device,examples",
    [
        ("na", "cpu", 120),
        ("ms_deform_attn", "cpu", 120),
        ("na", "emulated", 30),
        ("ms_deform_attn", "emulated", 30),
    ],
)
def test_fuzz_in_a_child_process(op, device, examples):
    result = subprocess.run(
        [
            sys.executable,
            "tools/fuzz_ops.py",
            "--op",
            op,
            "--device",
            device,
            "--examples",
            str(examples),
            "--seed",
            "20261201",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "TRITON_INTERPRET": "1"},
    )
    if result.returncode < 0:
        pytest.fail(
            f"the fuzzer crashed with signal {-result.returncode}:\n{result.stderr[-3000:]}"
        )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert f"PASS {examples} cases ({device}" in result.stdout
    assert "matched the brute-force oracle" in result.stdout
    assert "refused ValueError" in result.stdout


def test_a_crash_is_reported_not_hidden():
    """The harness sees a child that dies by a signal (what a kernel segfault would do)."""
    result = subprocess.run(
        [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == -11
