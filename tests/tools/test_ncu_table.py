"""tools/ncu_table.py: Nsight Compute's CSV log as one markdown table (kernels as columns, the
last launch of each), and a clear exit 1 for a log without metric rows."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.tools.ncu_sample import ncu_sample

ROOT = Path(__file__).resolve().parents[2]


def ncu_table(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "tools/ncu_table.py", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_column_per_kernel_from_its_last_launch(tmp_path):
    result = ncu_table(ncu_sample(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "# Nsight Compute: the last profiled launch of each of 2 kernels (launch IDs 1, 2)",
        "| section | metric | unit | na_forward_kernel | na_backward_key_kernel |",
        "|---|---|---|---|---|",
        "| GPU Speed Of Light Throughput | Duration | us | 1.42 | 2.10 |",
        "| Occupancy | Achieved Occupancy | % | 31.5 | - |",
    ]


@pytest.mark.parametrize(
    "text,message",
    [
        ("==PROF== No kernels were profiled.\n", "no ncu CSV header"),
        ('"ID","Kernel Name","Metric Name"\n"0","k","Duration"\n', "lacks the columns"),
        (
            '"ID","Kernel Name","Section Name","Metric Name","Metric Unit","Metric Value"\n'
            "==PROF== Disconnected from process 7\n",
            "no metric rows",
        ),
    ],
)
def test_a_log_without_metrics_exits_1_saying_why(tmp_path, text, message):
    path = tmp_path / "ncu.csv"
    path.write_text(text)
    result = ncu_table(path)
    assert result.returncode == 1 and message in result.stderr and not result.stdout
