"""`kill -9` of train_net.py at random points and inside checkpoint writes, each time followed
by `--resume`: every resume starts from the last complete checkpoint, never from a partial
file, and the final weights (and every checkpoint on the way) are bit for bit those of an
uninterrupted run with the same seed.

The kills inside a write are landed by tests/engine/checkpoint_write_shim.py, which pauses the
process after half of a file is on disk. The killed runs use one data-loader worker and the
uninterrupted run none: the data stream does not depend on the worker count either.
"""

import os
import random
import re
import signal
import subprocess
import sys
import time

import torch

from dinat_m2f.checkpoint.atomic_files import checkpoint_file_problem, partial_files

from .train_net_runner import env_with_datasets, run_train_net, train_net_command

SHIM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "checkpoint_write_shim.py")
MAX_ITER, PERIOD = 60, 3
OVERRIDES = [
    "SOLVER.MAX_ITER",
    str(MAX_ITER),
    "SOLVER.CHECKPOINT_PERIOD",
    str(PERIOD),
    "DATASETS.TEST",
    "()",  # no evaluation: only the weights are compared
]


def _wait(predicate, what: str, process=None, timeout: float = 300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if process is not None and process.poll() is not None:
            raise AssertionError(f"train_net ended (status {process.returncode}) before {what}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def _starts(output: str) -> list[int]:
    return [
        int(n)
        for n in re.findall(
            r"Starting training from iteration (\d+)", _read(os.path.join(output, "log.txt"))
        )
    ]


def _last_checkpoint(output: str) -> tuple[str | None, int]:
    """The pointer's file name (None without pointer) and its iteration (-1 without)."""
    name = _read(os.path.join(output, "last_checkpoint")).strip() or None
    if name is None:
        return None, -1
    path = os.path.join(output, name)
    assert checkpoint_file_problem(path) is None, (
        f"last_checkpoint names an incomplete file: {name}"
    )
    return name, int(torch.load(path, map_location="cpu", weights_only=True)["iteration"])


def _assert_same(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {set(a) ^ set(b)}"
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _load(path: str) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _compare_checkpoints(reference: str, resumed: str, name: str) -> None:
    a, b = _load(os.path.join(reference, name)), _load(os.path.join(resumed, name))
    for key in ("model", "trainer", "iteration"):  # trainer: optimizer, scheduler, data state
        _assert_same(a[key], b[key], f"{name}:{key}")


def test_kill_9_at_random_points_and_inside_writes_then_resume_loses_nothing(
    datasets_root, tmp_path
):
    reference = str(tmp_path / "reference")
    result = run_train_net(
        datasets_root, reference, overrides=OVERRIDES + ["DATALOADER.NUM_WORKERS", "0"]
    )
    assert result.returncode == 0, result.stderr[-3000:]

    output = str(tmp_path / "killed")
    os.makedirs(output)
    events = os.path.join(output, "events.txt")
    rng = random.Random(16)
    plan = [
        "random",
        "inside a checkpoint write",
        "inside the pointer write",
        "random",
        "right after a checkpoint",
        "random",
    ]
    report = []
    for kind in plan:
        pointer, at = _last_checkpoint(output)
        upcoming = [i for i in range(at + 1, MAX_ITER - 1) if (i + 1) % PERIOD == 0]
        target = f"model_{upcoming[1]:07d}.pth"  # the second checkpoint of this run
        pause_at = {
            "inside a checkpoint write": f"writing {target}",
            "inside the pointer write": f"writing last_checkpoint={target}",
            "right after a checkpoint": f"written last_checkpoint={target}",
        }.get(kind, "none")
        starts_before = len(_starts(output))
        console = open(os.path.join(output, f"console_{len(report)}.txt"), "w")
        command = [
            sys.executable,
            SHIM,
            events,
            pause_at,
            "--",
            *train_net_command(
                output, "--resume", overrides=OVERRIDES + ["DATALOADER.NUM_WORKERS", "1"]
            )[2:],
        ]
        process = subprocess.Popen(
            command,
            env=env_with_datasets(datasets_root),
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait(
                lambda n=starts_before: len(_starts(output)) > n, "the start of training", process
            )
            if kind == "random":
                time.sleep(rng.uniform(0.2, 1.5))
            else:
                _wait(lambda mark=pause_at: mark in _read(events).splitlines(), pause_at, process)
            assert process.poll() is None, f"train_net finished before the {kind} kill"
        finally:
            os.killpg(process.pid, signal.SIGKILL)  # the run and its data-loader worker
            process.wait()
            console.close()
        assert process.returncode == -signal.SIGKILL

        # the resume of this run started right after the previous kill's last complete checkpoint
        assert _starts(output)[-1] == at + 1, (kind, _starts(output), pointer)
        if report and report[-1]["partial"]:
            log = _read(os.path.join(output, "log.txt"))
            for path in report[-1]["partial"]:
                assert f"removed {path}" in log
        new_pointer, new_at = _last_checkpoint(output)
        partial = partial_files(output)
        last_event = (_read(events).splitlines() or ["(no checkpoint write yet)"])[-1]
        report.append(
            {"kind": kind, "last_event": last_event, "pointer": new_pointer, "partial": partial}
        )
        print(
            f"kill {len(report)} ({kind}): last write event '{last_event}', last_checkpoint -> "
            f"{new_pointer}, partial files {[os.path.basename(p) for p in partial]}"
        )
        if kind == "inside a checkpoint write":
            assert [os.path.basename(p).split(".")[0] for p in partial] == [target[:-4]]
            assert new_at == int(target[6:13]) - PERIOD  # the previous, complete checkpoint
        elif kind == "inside the pointer write":
            assert checkpoint_file_problem(os.path.join(output, target)) is None  # complete file
            assert [os.path.basename(p).split(".")[0] for p in partial] == ["last_checkpoint"]
            assert new_at == int(target[6:13]) - PERIOD  # the pointer still names the previous one
        elif kind == "right after a checkpoint":
            assert new_pointer == target and not partial

    _, at = _last_checkpoint(output)
    result = run_train_net(
        datasets_root, output, "--resume", overrides=OVERRIDES + ["DATALOADER.NUM_WORKERS", "1"]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert _starts(output)[-1] == at + 1
    assert not partial_files(output)

    _compare_checkpoints(reference, output, "model_final.pth")
    common = sorted(
        n
        for n in os.listdir(reference)
        if re.fullmatch(r"model_\d{7}\.pth", n) and os.path.exists(os.path.join(output, n))
    )
    assert len(common) >= 8, common
    for name in common:
        _compare_checkpoints(reference, output, name)
    print(
        f"final weights equal to the uninterrupted run's bit for bit; {len(common)} periodic "
        "checkpoints equal too"
    )
