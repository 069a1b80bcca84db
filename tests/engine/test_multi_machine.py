"""train_net.py across machines: two processes on the loopback, one per "machine" (gloo), each
started as on its own machine (--num-machines 2 --machine-rank R --dist-url tcp://...).

They train, checkpoint and resume, and end with the weights of one process that trains the
same total batch, within TOLERANCE (multi_process.py says why that tolerance). A machine
whose worker is killed (SIGKILL) makes the other stop at once with exit status 4 and a
message; one that is frozen (SIGSTOP) does so after --dist-timeout; the run resumes from the
last checkpoint. A machine that does not see the checkpoints of OUTPUT_DIR (no shared file
system) is refused on resume.
"""

import os
import re
import signal
import time

import psutil

from .multi_process import EQUIVALENCE_OVERRIDES, TOLERANCE, max_weight_difference, read, wait_for
from .train_net_runner import free_port, start_machine


def worker_of(launcher) -> psutil.Process:
    """The training process that a machine's launcher spawned."""
    children = [
        p
        for p in psutil.Process(launcher.pid).children()
        if any("spawn_main" in part for part in p.cmdline())
    ]
    assert len(children) == 1, [p.cmdline() for p in children]
    return children[0]


def _checkpoint_iteration(output: str) -> int:
    name = read(os.path.join(output, "last_checkpoint")).strip()
    return int(re.fullmatch(r"model_(\d{7})\.pth", name).group(1))


class Machines:
    """The two machines of one start of a run, with their logs."""

    def __init__(self, datasets_root, output, tag, *args, overrides=(), outputs=None):
        port = free_port()
        self.logs = [os.path.join(output, f"machine{r}_{tag}.txt") for r in (0, 1)]
        files = [open(log, "w") for log in self.logs]
        outputs = outputs or (output, output)
        self.processes = [
            start_machine(datasets_root, outputs[r], r, port, *args, overrides=overrides, log=f)
            for r, f in enumerate(files)
        ]
        for f in files:
            f.close()  # the children hold their own copies

    def wait(self, timeout: float = 600) -> list[int]:
        try:
            return [p.wait(timeout=timeout) for p in self.processes]
        finally:
            self.kill()

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                for child in psutil.Process(process.pid).children(recursive=True):
                    child.kill()
                process.kill()
                process.wait()

    def log(self, rank: int) -> str:
        return read(self.logs[rank])


def test_two_machines_resume_after_a_kill_and_match_one_process(
    datasets_root, one_process_run, tmp_path
):
    output = str(tmp_path)
    machines = Machines(datasets_root, output, "killed", overrides=EQUIVALENCE_OVERRIDES)
    try:
        wait_for(
            lambda: os.path.exists(os.path.join(output, "last_checkpoint")),
            "the first checkpoint",
            machines.processes,
        )
        worker_of(machines.processes[1]).kill()  # SIGKILL
        killed = time.time()
        status0 = machines.processes[0].wait(timeout=120)
        stopped_after = time.time() - killed
        statuses = machines.wait()
    finally:
        machines.kill()
    assert statuses == [4, 128 + signal.SIGKILL], (machines.log(0)[-3000:], machines.log(1)[-3000:])
    assert status0 == 4
    assert "train_net (rank 0 of 2): error: lost contact with another process" in machines.log(0)
    assert "start the run again on every machine with --resume" in machines.log(0)
    assert "was killed by SIGKILL" in machines.log(1)
    # a killed peer closes its connections: the other learns it from its next collective
    assert stopped_after < 60, stopped_after
    at = _checkpoint_iteration(output)
    assert at < 5, "the run finished before the kill"
    print(f"machine 0 stopped {stopped_after:.1f} s after the kill; last checkpoint {at}")

    # machine 1 pointed at another folder finds no checkpoint: refused, not trained apart
    elsewhere = str(tmp_path / "elsewhere")
    refused = Machines(
        datasets_root,
        output,
        "apart",
        "--resume",
        overrides=EQUIVALENCE_OVERRIDES,
        outputs=(output, elsewhere),
    )
    assert refused.wait() == [2, 2], refused.log(0)[-3000:]
    assert "the processes would start from different checkpoints" in refused.log(0)
    assert f"rank 0 ({os.uname().nodename}) from iteration {at + 1}" in refused.log(0)
    assert "rank 1" in refused.log(0) and "from iteration 0" in refused.log(0)

    resumed = Machines(
        datasets_root, output, "resumed", "--resume", overrides=EQUIVALENCE_OVERRIDES
    )
    assert resumed.wait() == [0, 0], resumed.log(0)[-3000:]
    starts = re.findall(r"Starting training from iteration (\d+)", read(f"{output}/log.txt"))
    assert starts == ["0", str(at + 1)], starts

    final = os.path.join(output, "model_final.pth")
    reference = os.path.join(one_process_run, "model_final.pth")
    difference = max_weight_difference(final, reference)
    trained = max_weight_difference(reference, os.path.join(one_process_run, "model_0000002.pth"))
    print(
        f"two machines vs one process: max |difference| {difference:.2e}; training moved "
        f"weights by up to {trained:.2e} after the first checkpoint"
    )
    assert difference <= TOLERANCE
    assert trained > 10 * TOLERANCE  # the tolerance is far below what training changes


def test_a_frozen_machine_stops_the_other_after_the_dist_timeout(datasets_root, tmp_path):
    output = str(tmp_path)
    timeout_min = 0.5
    overrides = [
        "SOLVER.MAX_ITER",
        "1000",
        "SOLVER.CHECKPOINT_PERIOD",
        "2",
        *EQUIVALENCE_OVERRIDES[4:],
    ]
    machines = Machines(
        datasets_root, output, "frozen", "--dist-timeout", str(timeout_min), overrides=overrides
    )
    try:
        wait_for(
            lambda: os.path.exists(os.path.join(output, "last_checkpoint")),
            "the first checkpoint",
            machines.processes,
        )
        frozen = worker_of(machines.processes[1])
        frozen.suspend()  # SIGSTOP: alive, connections open, no answers
        stopped = time.time()
        status0 = machines.processes[0].wait(timeout=300)
        waited = time.time() - stopped
        frozen.resume()  # it finds machine 0 gone at its next collective
        status1 = machines.processes[1].wait(timeout=120)
    finally:
        machines.kill()
    log0 = machines.log(0)
    assert (status0, status1) == (4, 4), (log0[-3000:], machines.log(1)[-3000:])
    assert "train_net (rank 0 of 2): error: lost contact with another process" in log0
    assert "Timed out" in log0 and "--dist-timeout (0.5 min)" in log0
    assert "train_net (rank 1 of 2): error: lost contact with another process" in machines.log(1)
    print(f"machine 0 stopped {waited:.1f} s after machine 1 froze (--dist-timeout 30 s)")
    assert 60 * timeout_min - 5 < waited < 60 * timeout_min + 60, waited
