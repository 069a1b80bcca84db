#!/usr/bin/env python
"""The reports of tools/gpu_check.sh: report.md and report.json from the steps it ran.

    python tools/gpu_check_report.py machine LOGS MODE   # the machine -> LOGS/machine.json;
                                                         # MODE gpu fails without a GPU
    python tools/gpu_check_report.py write OUT LOGS MODE
        # OUT/report.md and OUT/report.json from LOGS/machine.json, LOGS/steps.tsv (one line
        # per finished step: name, exit code, seconds, limit, description, command to rerun it)
        # and each step's LOGS/NAME.log (LOGS/NAME.xml: its junit XML, if any)

A step is "ok" (exit 0), "timeout" (stopped at its limit: exit 124, or 137 when it had to be
killed) or "failed". The markdown report has a table of the steps, then per step what its log
holds worth reading: the markdown tables and '#' lines the benchmarks print, the tests' counts
and failures (from LOGS/tests.xml), and the log's last lines when the step was not ok. The JSON
report has the same, and the last lines of every log, so that it alone tells what happened.
Runs with the standard library only (no torch import, so it is quick after every step).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

TAIL_LINES = 60  # of each log, in report.json (and in report.md for steps that are not ok)
TIMEOUT_CODES = (124, 137)


def status_of(exit_code: int) -> str:
    if exit_code == 0:
        return "ok"
    return "timeout" if exit_code in TIMEOUT_CODES else "failed"


def read_steps(logs: Path) -> list[dict]:
    """The finished steps of LOGS/steps.tsv, in order."""
    steps = []
    path = logs / "steps.tsv"
    if not path.exists():
        return steps
    for line in path.read_text().splitlines():
        name, code, seconds, limit, description, command = line.split("\t", 5)
        steps.append(
            dict(
                name=name,
                status=status_of(int(code)),
                exit_code=int(code),
                seconds=int(seconds),
                limit_s=int(limit),
                description=description,
                command=command,
                log=f"{name}.log",
            )
        )
    return steps


def log_lines(logs: Path, name: str) -> list[str]:
    path = logs / f"{name}.log"
    return path.read_text(errors="replace").splitlines() if path.exists() else []


def results_of(lines: list[str]) -> list[str]:
    """What the benchmarks print for the report: markdown table rows and '# ' lines."""
    return [line for line in lines if line.startswith("|") or line.startswith("# ")]


def junit_summary(path: Path) -> dict | None:
    """Counts of the tests' junit XML, and the ids and first message line of failures."""
    if not path.exists():
        return None
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as error:
        return dict(error=f"unreadable {path.name}: {error}")
    counts = dict(tests=0, failures=0, errors=0, skipped=0)
    failed = []
    for case in root.iter("testcase"):
        counts["tests"] += 1
        for kind in ("failure", "error", "skipped"):
            found = case.find(kind)
            if found is None:
                continue
            counts[{"failure": "failures", "error": "errors", "skipped": "skipped"}[kind]] += 1
            if kind != "skipped":
                message = (found.get("message") or "").splitlines()[:1]
                failed.append(f"{case.get('classname')}::{case.get('name')}: {''.join(message)}")
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return dict(counts, failed=failed)


def machine() -> dict:
    """The machine and software the check ran on (torch imported here, once)."""
    info = dict(
        python=platform.python_version(),
        cpus=os.cpu_count(),
        host=platform.node(),
        # the sandbox (gVisor reports 4.4.0), which decides whether ncu can read counters
        kernel=platform.release(),
        date=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    )
    try:
        info["git"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        info["git"] = None
    import torch

    info["torch"] = torch.__version__
    info["torch_cuda"] = torch.version.cuda
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info["gpu"] = dict(
            name=p.name,
            capability=f"{p.major}.{p.minor}",
            multiprocessors=p.multi_processor_count,
            memory_gib=round(p.total_memory / 2**30, 1),
            count=torch.cuda.device_count(),
        )
    else:
        info["gpu"] = None
    try:
        nvcc = subprocess.run(["nvcc", "--version"], capture_output=True, text=True, timeout=30)
        info["nvcc"] = nvcc.stdout.strip().splitlines()[-1] if nvcc.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        info["nvcc"] = None
    return info


def describe(info: dict) -> str:
    gpu = info.get("gpu")
    where = (
        f"{gpu['name']} (sm_{gpu['capability'].replace('.', '')}, {gpu['multiprocessors']} SMs, "
        f"{gpu['memory_gib']} GiB)"
        if gpu
        else "no GPU"
    )
    return (
        f"{where}; torch {info.get('torch')} (CUDA {info.get('torch_cuda')}), triton "
        f"{info.get('triton')}, {info.get('nvcc') or 'no nvcc'}; Python {info.get('python')}, "
        f"{info.get('cpus')} CPUs, Linux {info.get('kernel')}; git {info.get('git')}; "
        f"{info.get('date')}"
    )


def build_report(logs: Path, mode: str) -> dict:
    steps = read_steps(logs)
    for step in steps:
        lines = log_lines(logs, step["name"])
        step["results"] = results_of(lines)
        step["tail"] = lines[-TAIL_LINES:]
        tests = junit_summary(logs / f"{step['name']}.xml")
        if tests is not None:
            step["tests"] = tests
    machine_file = logs / "machine.json"
    info = json.loads(machine_file.read_text()) if machine_file.exists() else {}
    return dict(
        mode=mode,
        machine=info,
        ok=bool(steps) and all(s["status"] == "ok" for s in steps),
        seconds=sum(s["seconds"] for s in steps),
        steps=steps,
    )


def markdown(report: dict) -> str:
    title = "GPU check" + (" (dry run: CPU, tiny sizes)" if report["mode"] == "dry-run" else "")
    lines = [f"# {title}", "", describe(report["machine"]) if report["machine"] else "", ""]
    lines += ["| step | status | seconds / limit | what |", "|---|---|---|---|"]
    for s in report["steps"]:
        lines.append(
            f"| {s['name']} | {s['status']} | {s['seconds']} / {s['limit_s']} | "
            f"{s['description']} |"
        )
    verdict = "every step ok" if report["ok"] else "NOT every step ok"
    lines += ["", f"{len(report['steps'])} steps, {report['seconds']} s in all: {verdict}."]
    for s in report["steps"]:
        lines += ["", f"## {s['name']}: {s['status']}", "", f"`{s['command']}`", ""]
        tests = s.get("tests")
        if tests and "error" not in tests:
            lines.append(
                f"{tests['passed']} passed, {tests['failures']} failed, {tests['errors']} "
                f"errors, {tests['skipped']} skipped"
            )
            lines += [f"- FAILED {f}" for f in tests["failed"]]
        elif tests:
            lines.append(tests["error"])
        lines += s["results"]
        if s["status"] != "ok":
            lines += ["", "Last lines of its log:", "", "```", *s["tail"][-30:], "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "machine":
        out, mode = Path(argv[1]), argv[2]
        out.mkdir(parents=True, exist_ok=True)
        info = machine()
        (out / "machine.json").write_text(json.dumps(info, indent=2) + "\n")
        print(describe(info))
        if mode == "gpu" and not info["gpu"]:
            print("no CUDA GPU is visible to torch: run with --dry-run instead", file=sys.stderr)
            return 1
        return 0
    if len(argv) == 4 and argv[0] == "write":
        out, logs, mode = Path(argv[1]), Path(argv[2]), argv[3]
        report = build_report(logs, mode)
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / "report.md").write_text(markdown(report))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
