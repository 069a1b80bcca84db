"""tools/gpu_check.sh rehearsed without a GPU. The dry run runs every step of the GPU check on
the CPU at tiny sizes (the fused kernels in Triton's interpreter, the `.cu` kernels on the
emulated device, DiNAT-L's and Swin-L's configs shrunk), so the script cannot break on a
trivial error the day a GPU comes: every step must be ok, and report.md / report.json must name
each with what it measured. A step that fails or runs out of time is reported as such and the
steps after it still run (a fake python makes one step fail and one hang)."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests import devices
from tests.conftest import requires_native
from tests.tools.ncu_sample import ncu_sample

ROOT = Path(__file__).resolve().parents[2]
STEPS = ["env", "build", "tests", "accuracy", "bench_na", "model", "profile", "bench_flex"]


def gpu_check(
    out: Path, *args: str, python: str = sys.executable, timeout: int = 1200, path: str = ""
):
    env = {**os.environ, "PYTHON": python, "PATH": path + os.environ["PATH"]}
    env.pop("OUT", None)  # the device tool's folder would take the reports
    # wheels fetched into this checkout for a GPU run are for the GPU machine: never installed
    # by a rehearsal of GPU mode
    env["GPU_CHECK_SKIP_WHEELS"] = "1"
    return subprocess.run(
        ["bash", "tools/gpu_check.sh", *args, str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_report(out: Path) -> tuple[dict, str]:
    return json.loads((out / "report.json").read_text()), (out / "report.md").read_text()


def rows(step: dict, marker: str) -> list[str]:
    return [line for line in step["results"] if line.startswith("|") and marker in line]


@requires_native
def test_dry_run_runs_every_step_and_reports_each_ok(tmp_path):
    out = tmp_path / "out"
    result = gpu_check(out, "--dry-run")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    report, md = read_report(out)
    assert report["mode"] == "dry-run" and report["ok"]
    steps = {s["name"]: s for s in report["steps"]}
    assert list(steps) == STEPS
    for name, step in steps.items():
        assert step["status"] == "ok" and step["exit_code"] == 0, (name, step["tail"])
        assert f"| {name} | ok | {step['seconds']} / {step['limit_s']} |" in md
        assert f"## {name}: ok" in md
    # the machine as it is: a GPU host's dry run names its GPU, and still runs on the CPU
    assert (report["machine"]["gpu"] is not None) == devices.GPU and report["machine"]["torch"]
    # each step did its job: the tests' twins passed, every table has its rows
    tests = steps["tests"]["tests"]
    assert tests["passed"] >= 4 and tests["failures"] == tests["errors"] == 0, tests
    accuracy = steps["accuracy"]
    for backend in ("unfused", "fused"):  # named, never "auto"; the fused in the interpreter
        (row,) = rows(accuracy, f"| {backend} | 2D tiled k3 | float32 |")
        assert all(float(e) < 1e-4 for e in row.strip("| ").split(" | ")[4:]), row
    assert all(rows(steps["bench_na"], f"| {impl} |") for impl in ("native", "sdpa", "torch"))
    assert rows(steps["bench_flex"], "| flex |")
    assert rows(steps["profile"], "| fused |")  # the profiled command line, no profiler
    assert rows(steps["model"], "DiNAT-C32 k11 (d <= 2)") and rows(steps["model"], "Swin swin_t")
    with tarfile.open(out / "logs.tar.gz") as logs:
        names = {Path(n).name for n in logs.getnames()}
    assert {f"{s}.log" for s in STEPS} | {"tests.xml", "machine.json"} <= names


def test_a_failed_and_a_timed_out_step_do_not_stop_the_steps_after_them(tmp_path):
    """The accuracy step fails, the NA benchmark hangs past its limit, the flex benchmark after
    them still runs; the exit status and both reports say which is which."""
    fake = tmp_path / "python"
    fake.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        '  *benchmarks.accuracy*) echo "planted failure" >&2; exit 3 ;;\n'
        '  *"--impls fused"*) exec sleep 600 ;;\n'
        '  *"--impls flex"*) echo "| 64 | tiny | 1 | 256 | 2 | 7 | 1 | flex | 1.0 |"; exit 0 ;;\n'
        "esac\n"
        f'exec {sys.executable} "$@"\n'
    )
    fake.chmod(0o755)
    out = tmp_path / "out"
    # dry-run limits (300 s) times 0.03: the hanging step is stopped after 9 s
    result = gpu_check(
        out,
        "--dry-run",
        "--steps",
        "accuracy,bench_na,bench_flex",
        "--time-scale",
        "0.03",
        python=str(fake),
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    report, md = read_report(out)
    steps = {s["name"]: s for s in report["steps"]}
    assert list(steps) == ["accuracy", "bench_na", "bench_flex"] and not report["ok"]
    assert (steps["accuracy"]["status"], steps["accuracy"]["exit_code"]) == ("failed", 3)
    assert steps["bench_na"]["status"] == "timeout" and steps["bench_na"]["limit_s"] == 9
    assert 9 <= steps["bench_na"]["seconds"] <= 20
    assert steps["bench_flex"]["status"] == "ok" and rows(steps["bench_flex"], "| flex |")
    assert "| accuracy | failed |" in md and "| bench_na | timeout |" in md
    assert "planted failure" in md  # a step that is not ok shows its log's last lines
    assert "NOT every step ok" in md


def test_gpu_mode_asks_for_this_gpus_architecture_and_the_documented_runs(tmp_path):
    """The GPU run's command lines, without a GPU: a fake python records every call and answers
    compute capability 9.0, a fake ncu records its call and writes two kernels' metrics; the
    build must target 9.0 alone, every step must ask for the GPU and the documented sizes, and
    a benchmark row that failed must fail its step."""
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "python"
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$TORCH_CUDA_ARCH_LIST|$FORCE_CUDA|$TRITON_INTERPRET|$*" >> {calls}\n'
        'case "$*" in\n'
        "  *get_device_capability*) echo 9.0 ;;\n"
        f'  *"gpu_check_report.py write"* | *ncu_table.py*) exec {sys.executable} "$@" ;;\n'
        '  *"--impls fused"*) echo "| 1024 | large | 1 | fused | - | forward failed: E |" ;;\n'
        "esac\n"
    )
    fake.chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ncu = bin_dir / "ncu"
    ncu.write_text(
        "#!/bin/sh\n"
        f'echo "ncu|$*" >> {calls}\n'
        'while [ "$1" != --log-file ]; do shift; done\n'
        f'cp {ncu_sample(tmp_path)} "$2"\n'
    )
    ncu.chmod(0o755)
    out = tmp_path / "out"
    result = gpu_check(out, python=str(fake), timeout=120, path=f"{bin_dir}:")
    assert result.returncode == 1, result.stdout + result.stderr
    report, _ = read_report(out)
    steps = {s["name"]: s for s in report["steps"]}
    assert list(steps) == STEPS and report["mode"] == "gpu"
    assert [n for n, s in steps.items() if s["status"] != "ok"] == ["bench_na"]
    assert "a row failed: see its note" in steps["bench_na"]["tail"]
    limits = {n: s["limit_s"] for n, s in steps.items()}
    assert list(limits.values())[:-1] == [20, 240, 90, 40, 150, 90, 60]
    # flex takes what is left of the 500 s budget (the reports took a moment too)
    spent = sum(s["seconds"] for s in report["steps"][:-1])
    assert 500 - spent - 5 <= limits["bench_flex"] <= 500 - spent
    every_call = calls.read_text().splitlines()
    lines = [line for line in every_call if not line.startswith("ncu|")]
    assert all(line.split("|")[2] == "0" for line in lines)  # never Triton's interpreter
    (build,) = [line for line in lines if "setup.py" in line]
    assert build.startswith("9.0|1|0|setup.py build_ext --inplace")

    def runs(module: str) -> list[str]:
        return [line.split("|", 3)[3] for line in lines if f"-m {module} " in line]

    (tests,) = runs("pytest")
    assert " -m cuda " in tests and " -n 12 " in tests
    assert tests.endswith("tests/layers tests/benchmarks tests/demo")
    assert runs("dinat_m2f.benchmarks.accuracy") == [
        "-m dinat_m2f.benchmarks.accuracy --device cuda"
    ]
    na = runs("dinat_m2f.benchmarks.na")
    common = "-m dinat_m2f.benchmarks.na --device cuda --dtype float16 --warmup 3 --repeats 10"
    impls = "--impls fused native sdpa torch"
    assert na == [
        f"{common} {impls} --variants large --inputs 1024 --kernels 11",
        f"{common} {impls} --variants large --inputs 640 --kernels 11",
        f"{common} {impls} --variants large --inputs 224 --kernels 7",
        f"{common} {impls} --variants tiny --inputs 224 --kernels 7",
        f"{common} --impls flex --variants large --inputs 1024 --kernels 11",
    ]
    model = runs("dinat_m2f.benchmarks.model")
    assert [m.split()[3] for m in model] == [
        "configs/coco/panoptic-segmentation/dinat/maskformer2_dinat_large_in22k_bs16_100ep.yaml",
        "configs/coco/panoptic-segmentation/swin/maskformer2_tvswin_large_bs16_100ep.yaml",
    ]
    for m in model:
        assert m.endswith(
            "--device cuda --resolution 1024 --warmup 2 --repeats 5 "
            "SOLVER.AMP.ENABLED True SOLVER.AMP.PRECISION float16"
        )
        assert os.path.isfile(ROOT / m.split()[3])
    (profiled,) = [line for line in every_call if line.startswith("ncu|")]
    assert " -k regex:^na_ --launch-count 5 " in profiled and "--clock-control none" in profiled
    assert " --csv --page details --print-units base " in profiled
    assert profiled.endswith(
        "-m dinat_m2f.benchmarks.na --impls fused --levels 1 --warmup 0 --repeats 1 "
        "--device cuda --dtype float16 --variants large --inputs 1024 --kernels 11"
    )
    table = rows(steps["profile"], "| ")
    assert table[0] == "| section | metric | unit | na_forward_kernel | na_backward_key_kernel |"
    assert "| GPU Speed Of Light Throughput | Duration | us | 1.42 | 2.10 |" in table


def test_a_profile_without_metrics_fails_and_its_log_says_why(tmp_path):
    """When the profiled forward fails, the benchmark notes it in its row and exits 0, and ncu
    exits 0 with no metric rows: the profile step must fail and its log show that row."""
    fake = tmp_path / "python"
    fake.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        f'  *gpu_check_report.py* | *ncu_table.py*) exec {sys.executable} "$@" ;;\n'
        '  *"--impls fused"*) echo "| 1024 | large | 1 | fused | - | forward failed: OOM |" ;;\n'
        "esac\n"
    )
    fake.chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ncu = bin_dir / "ncu"  # connects, profiles nothing, runs the program
    ncu.write_text(
        "#!/bin/sh\n"
        'while [ "$1" != --log-file ]; do shift; done\n'
        'printf "==PROF== Connected to process 7\\n==PROF== Disconnected\\n" > "$2"\n'
        "shift 2\n"
        'exec "$@"\n'
    )
    ncu.chmod(0o755)
    out = tmp_path / "out"
    result = gpu_check(out, "--steps", "profile", python=str(fake), timeout=60, path=f"{bin_dir}:")
    assert result.returncode == 1, result.stdout + result.stderr
    report, _ = read_report(out)
    (step,) = report["steps"]
    assert step["name"] == "profile" and step["status"] == "failed", step
    assert any("forward failed: OOM" in line for line in step["tail"]), step["tail"]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--steps", "env,nope"], "--steps: no step nope"),
        (["--time-scale", "fast"], "--time-scale must be a positive number, got fast"),
        (["--time-scale", "0"], "--time-scale must be a positive number, got 0"),
        (["--fast"], "unknown option --fast"),
    ],
)
def test_bad_options_are_refused_before_anything_runs(tmp_path, args, message):
    result = gpu_check(tmp_path / "out", "--dry-run", *args, timeout=60)
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "out").exists()
