"""tools/submit.py: a tiny run submitted through submitit's local executor (one node, two
training processes) gets submitit's time-limit signal (SIGUSR2) after its first checkpoint,
saves, is requeued by submitit's checkpointing, resumes and ends with the weights of one
uninterrupted process (within TOLERANCE, see multi_process.py). The SLURM script it would
submit asks for the nodes, GPUs, partition, time and signal given."""

import os
import re
import signal
import sys
import time

import psutil
import pytest

from .multi_process import EQUIVALENCE_OVERRIDES, TOLERANCE, max_weight_difference, read, wait_for
from .train_net_runner import CONFIG, REPO, SMALL_MODEL

sys.path.insert(0, os.path.join(REPO, "tools"))
import submit  # noqa: E402  (tools/submit.py)


def _task_process(job) -> psutil.Process:
    """The process submitit's local controller started for the job's task (our launcher)."""
    tasks = [
        p
        for p in psutil.Process(job._process.pid).children()
        if any("submitit.core._submit" in part for part in p.cmdline())
    ]
    assert len(tasks) == 1, tasks
    return tasks[0]


def test_local_job_is_requeued_on_the_time_limit_signal_and_resumes(
    datasets_root, one_process_run, tmp_path, monkeypatch
):
    monkeypatch.setenv("DETECTRON2_DATASETS", datasets_root)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    job_dir = str(tmp_path / "job")
    job = submit.submit(
        [
            "--cluster",
            "local",
            "--job-dir",
            job_dir,
            "--gpus-per-node",
            "0",
            "--processes-per-node",
            "2",
            "--timeout-min",
            "15",
            "--config-file",
            CONFIG,
            *SMALL_MODEL,
            *EQUIVALENCE_OVERRIDES,
        ]
    )
    try:
        wait_for(
            lambda: os.path.exists(os.path.join(job_dir, "last_checkpoint")),
            "the first checkpoint",
            [job._process],
        )
        _task_process(job).send_signal(signal.SIGUSR2)  # what SLURM sends before the time limit
        deadline = time.time() + 600
        while not job.done() and time.time() < deadline:
            time.sleep(0.5)
        assert job.done(), "the job did not end"
        output = job.stdout() + job.stderr()
        assert job.result() == 0, output[-3000:]
    finally:
        if not job.done():
            for child in psutil.Process(job._process.pid).children(recursive=True):
                child.kill()
            job._process.kill()

    interrupted = [n for n in os.listdir(job_dir) if n.startswith("model_interrupted_")]
    assert len(interrupted) == 1, sorted(os.listdir(job_dir))
    at = int(re.search(r"_(\d+)\.pth", interrupted[0]).group(1))
    assert at < 5, "the run finished before the signal"
    assert "training interrupted by SIGUSR2" in output  # both processes stopped after `at`
    assert "Requeued job" in output
    starts = re.findall(r"Starting training from iteration (\d+)", read(f"{job_dir}/log.txt"))
    assert starts == ["0", str(at + 1)], starts

    difference = max_weight_difference(
        os.path.join(job_dir, "model_final.pth"), os.path.join(one_process_run, "model_final.pth")
    )
    print(f"interrupted at iteration {at}, requeued, resumed: max |difference| {difference:.2e}")
    assert difference <= TOLERANCE


def test_slurm_script_asks_for_what_was_given(tmp_path, monkeypatch):
    srun = tmp_path / "bin" / "srun"  # submitit looks for srun to detect a SLURM cluster
    srun.parent.mkdir()
    srun.write_text("#!/bin/sh\nexit 0\n")
    srun.chmod(0o755)
    monkeypatch.setenv("PATH", f"{srun.parent}{os.pathsep}{os.environ['PATH']}")
    args = submit.build_parser().parse_args(
        [
            "--job-dir",
            str(tmp_path / "job"),
            "--nodes",
            "4",
            "--gpus-per-node",
            "8",
            "--partition",
            "learn",
            "--timeout-min",
            "4320",
            "--signal-delay-s",
            "180",
            "--slurm-param",
            "account=vision",
            "--config-file",
            CONFIG,
            "SOLVER.IMS_PER_BATCH",
            "64",
        ]
    )
    script = submit.make_executor(args)._executor._make_submission_file_text("CMD", "uid")
    for line in (
        "--nodes=4",
        "--ntasks-per-node=1",
        "--gpus-per-node=8",
        "--partition=learn",
        "--time=4320",
        "--signal=USR2@180",
        "--account=vision",
    ):
        assert f"#SBATCH {line}\n" in script, (line, script)
    train = submit.train_args(args)
    assert train.num_gpus == 8 and train.config_file == CONFIG
    assert train.opts == ["SOLVER.IMS_PER_BATCH", "64", "OUTPUT_DIR", str(tmp_path / "job")]
    assert not hasattr(train, "partition")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--cluster", "local", "--nodes", "2"], "--cluster local runs one node"),
        (["--gpus-per-node", "2", "--processes-per-node", "4"], "exceeds --gpus-per-node 2"),
        (["--slurm-param", "account"], "--slurm-param takes KEY=VALUE"),
        ([], 'Could not detect "srun"'),  # PATH without SLURM's commands
    ],
)
def test_bad_submissions_are_refused(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.setenv("PATH", str(tmp_path))
    status = submit.main(["--job-dir", str(tmp_path), *argv, "--config-file", CONFIG])
    assert status == 2
    assert message in capsys.readouterr().err
