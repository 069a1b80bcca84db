"""`kill -9` of train_net.py at points spread over the whole run, each followed by `--resume`:
in the middle of training iterations, inside a checkpoint write and inside the pointer write,
right after a checkpoint, during a periodic evaluation and during the final one. Every kill
point is chosen from the run's own progress, reported by tests/engine/kill_points_shim.py
(events it writes when an iteration starts, when a checkpoint file is half written or complete,
when evaluation has processed an image), never by delays from the start. Every resume starts
from the last complete checkpoint, never from a partial file; every checkpoint each resumed
run writes, and the final weights, are bit for bit those of an uninterrupted run with the same
seed.

The killed runs evaluate and use one data-loader worker; the uninterrupted run does neither
(neither changes the weights: each iteration is seeded from the seed and its number).
"""

import os
import random
import re
import signal
import subprocess
import sys
import time
from typing import NamedTuple

import torch

from dinat_m2f.checkpoint.atomic_files import checkpoint_file_problem, partial_files

from .train_net_runner import env_with_datasets, run_train_net, train_net_command

SHIM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kill_points_shim.py")
MAX_ITER, PERIOD, EVAL_PERIOD = 48, 3, 18
OVERRIDES = ["SOLVER.MAX_ITER", str(MAX_ITER), "SOLVER.CHECKPOINT_PERIOD", str(PERIOD)]
REFERENCE = OVERRIDES + ["DATASETS.TEST", "()", "DATALOADER.NUM_WORKERS", "0"]
KILLED = OVERRIDES + ["TEST.EVAL_PERIOD", str(EVAL_PERIOD), "DATALOADER.NUM_WORKERS", "1"]


class Kill(NamedTuple):
    kind: str
    iteration: int  # the iteration (0-based) it lands in or after


def checkpoint(iteration: int) -> str:
    return f"model_{iteration:07d}.pth"


# Spread over the whole run (48 iterations; checkpoints after iterations 2, 5, 8, ..., 47;
# evaluations after iterations 17 and 35 and after training).
PLAN = [
    Kill("mid-iteration", 4),
    Kill("inside a checkpoint write", 11),
    Kill("during an evaluation", 17),
    Kill("right after a checkpoint", 23),
    Kill("inside the pointer write", 29),
    Kill("mid-iteration", 37),
    Kill("during the final evaluation", MAX_ITER),
]


def pause_point(kill: Kill) -> str:
    """The shim event at which the run waits to be killed ("none" for mid-iteration kills)."""
    name = checkpoint(kill.iteration)
    return {
        "inside a checkpoint write": f"writing {name}",
        "inside the pointer write": f"writing last_checkpoint={name}",
        "right after a checkpoint": f"written last_checkpoint={name}",
        "during an evaluation": f"evaluated image 2 at iteration {kill.iteration}",
        "during the final evaluation": f"evaluated image 2 at iteration {kill.iteration}",
    }.get(kill.kind, "none")


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def _events(path: str) -> list[tuple[str, float]]:
    """The shim's events: ("KIND NAME", time)."""
    lines = [line.split("\t") for line in _read(path).splitlines()]
    return [(line[0], float(line[1])) for line in lines if len(line) == 2]


def _wait(predicate, what: str, process, timeout: float = 600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if process.poll() is not None:
            raise AssertionError(f"train_net ended (status {process.returncode}) before {what}")
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _starts(output: str) -> list[int]:
    log = _read(os.path.join(output, "log.txt"))
    return [int(n) for n in re.findall(r"Starting training from iteration (\d+)", log)]


def _load(path: str) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _last_checkpoint(output: str) -> tuple[str | None, int]:
    """The pointer's file name (None without pointer) and its iteration (-1 without)."""
    name = _read(os.path.join(output, "last_checkpoint")).strip() or None
    if name is None:
        return None, -1
    path = os.path.join(output, name)
    assert checkpoint_file_problem(path) is None, f"last_checkpoint names an incomplete file {name}"
    return name, int(_load(path)["iteration"])


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


def _compare_checkpoints(reference: str, resumed: str, name: str) -> None:
    a, b = _load(os.path.join(reference, name)), _load(os.path.join(resumed, name))
    for key in ("model", "trainer", "iteration"):  # trainer: optimizer, scheduler, data state
        _assert_same(a[key], b[key], f"{name}:{key}")


def _complete_checkpoints(output: str) -> set[str]:
    return {
        n
        for n in os.listdir(output)
        if re.fullmatch(r"model_(\d{7}|final)\.pth", n)
        and checkpoint_file_problem(os.path.join(output, n)) is None
    }


def _kill_run(output: str, events: str, datasets_root: str, kill: Kill, rng) -> str:
    """Starts a resumed run and kills it at `kill`; returns where it landed."""
    pause_at = pause_point(kill)
    seen = len(_events(events))
    starts_before = len(_starts(output))
    command = [
        sys.executable,
        SHIM,
        events,
        pause_at,
        "--",
        *train_net_command(output, "--resume", overrides=KILLED)[2:],
    ]
    with open(os.path.join(output, f"console_{starts_before}.txt"), "w") as console:
        process = subprocess.Popen(
            command,
            env=env_with_datasets(datasets_root),
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait(lambda: len(_starts(output)) > starts_before, "the start of training", process)

            def new_events():
                return _events(events)[seen:]

            if kill.kind == "mid-iteration":
                # a random fraction of an iteration into `kill.iteration`, from the duration
                # of the iteration before it as this run measured it
                step = f"step {kill.iteration}"
                _wait(lambda: step in dict(new_events()), step, process)
                times = dict(new_events())
                duration = times[step] - times[f"step {kill.iteration - 1}"]
                time.sleep(rng.uniform(0.2, 0.8) * duration)
            else:
                _wait(lambda: pause_at in dict(new_events()), pause_at, process)
            assert process.poll() is None, f"train_net finished before the {kill.kind} kill"
        finally:
            os.killpg(process.pid, signal.SIGKILL)  # the run and its data-loader worker
            process.wait()
    assert process.returncode == -signal.SIGKILL
    return new_events()[-1][0]


def test_kill_9_over_the_whole_run_then_resume_loses_nothing(datasets_root, tmp_path):
    reference = str(tmp_path / "reference")
    result = run_train_net(datasets_root, reference, overrides=REFERENCE)
    assert result.returncode == 0, result.stderr[-3000:]

    output = str(tmp_path / "killed")
    os.makedirs(output)
    events = os.path.join(output, "events.txt")
    rng = random.Random(24)
    partial_before: list[str] = []
    for number, kill in enumerate(PLAN, 1):
        pointer, at = _last_checkpoint(output)
        landed = _kill_run(output, events, datasets_root, kill, rng)

        # this run resumed right after the last complete checkpoint of the one before it,
        # having removed the partial files that run left
        assert _starts(output)[-1] == at + 1, (kill, _starts(output), pointer)
        log = _read(os.path.join(output, "log.txt"))
        for path in partial_before:
            assert f"removed {path}" in log
        new_pointer, new_at = _last_checkpoint(output)
        partial_before = partial_files(output)
        partial = [os.path.basename(p).split(".")[0] for p in partial_before]
        print(
            f"kill {number} ({kill.kind}, iteration {kill.iteration}): last event '{landed}', "
            f"last_checkpoint -> {new_pointer}, partial files {partial}"
        )
        name = checkpoint(kill.iteration)
        if kill.kind == "mid-iteration":
            assert landed in (f"step {kill.iteration}", f"step {kill.iteration + 1}"), landed
        elif kill.kind == "inside a checkpoint write":
            assert partial == [name[:-4]] and new_at == kill.iteration - PERIOD
        elif kill.kind == "inside the pointer write":
            assert checkpoint_file_problem(os.path.join(output, name)) is None
            assert partial == ["last_checkpoint"] and new_at == kill.iteration - PERIOD
        elif kill.kind == "right after a checkpoint":
            assert new_pointer == name and not partial
        else:  # an evaluation: after its checkpoint, before its results
            assert landed == pause_point(kill) and not partial
            assert new_at == min(kill.iteration, MAX_ITER - 1)

        # every complete checkpoint so far (this run's and those before) equals the
        # uninterrupted run's
        written = _complete_checkpoints(output)
        assert ("model_final.pth" in written) == (kill.kind == "during the final evaluation")
        for checkpoint_name in sorted(written):
            _compare_checkpoints(reference, output, checkpoint_name)

    # the last resume only repeats the final evaluation
    _, at = _last_checkpoint(output)
    result = run_train_net(datasets_root, output, "--resume", overrides=KILLED)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _starts(output)[-1] == at + 1 == MAX_ITER
    assert not partial_files(output)
    assert "copypaste" in _read(os.path.join(output, "log.txt")).split("from iteration 48")[-1]
    written = _complete_checkpoints(output)
    for checkpoint_name in sorted(written):
        _compare_checkpoints(reference, output, checkpoint_name)
    assert len(written) == MAX_ITER // PERIOD + 1, sorted(written)
    print(f"final weights equal to the uninterrupted run's bit for bit; {len(written)} checkpoints")
