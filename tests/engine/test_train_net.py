"""train_net.py end to end on the built-in dataset: training with periodic checkpoints and the
final evaluation (PQ, AP, mIoU), --resume after SIGTERM without losing iterations,
--eval-only (and its refusal of weights that do not fit the model), a two-process DDP run on
CPU (gloo), and bad settings."""

import json
import os
import re
import signal
import subprocess
import time

import pytest

from .train_net_runner import env_with_datasets, run_train_net, train_net_command


@pytest.fixture(scope="module")
def trained(datasets_root, tmp_path_factory):
    output = str(tmp_path_factory.mktemp("train"))
    result = run_train_net(
        datasets_root, output, overrides=["SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "2"]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return output, result


def _copypaste(log: str) -> dict[str, dict[str, float]]:
    """The 'copypaste' result lines of a detectron2 log: task -> metric -> value."""
    results, task, keys = {}, None, None
    for line in log.splitlines():
        match = re.search(r"copypaste: (.*)$", line)
        if not match:
            continue
        text = match.group(1)
        if text.startswith("Task: "):
            task, keys = text[6:], None
        elif keys is None:
            keys = text.split(",")
        else:
            results[task] = dict(zip(keys, map(float, text.split(","))))
    return results


def test_training_writes_checkpoints_metrics_and_evaluates_every_task(trained):
    output, result = trained
    files = set(os.listdir(output))
    assert {"model_0000001.pth", "model_0000003.pth", "model_final.pth", "last_checkpoint"} <= files
    assert {"metrics.json", "config.yaml", "log.txt"} <= files
    assert any(name.startswith("events.out.tfevents") for name in files)
    log = result.stdout + result.stderr
    assert "eta:" in log  # the progress line
    results = _copypaste(log)
    assert {"panoptic_seg", "segm", "sem_seg"} <= set(results)
    assert {"PQ", "SQ", "RQ", "PQ_th", "PQ_st"} <= set(results["panoptic_seg"])
    assert 0 <= results["sem_seg"]["mIoU"] <= 100
    metrics = [json.loads(line) for line in open(os.path.join(output, "metrics.json"))]
    assert any("total_loss" in m for m in metrics)


def test_eval_only_loads_weights_and_reports(trained, datasets_root, tmp_path):
    output, _ = trained
    result = run_train_net(
        datasets_root,
        str(tmp_path),
        "--eval-only",
        overrides=["MODEL.WEIGHTS", os.path.join(output, "model_final.pth")],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = _copypaste(result.stdout + result.stderr)
    assert {"panoptic_seg", "segm", "sem_seg"} <= set(results)
    assert not any(f.endswith(".pth") for f in os.listdir(tmp_path))  # no training happened


def test_eval_only_refuses_weights_that_do_not_fit(trained, datasets_root, tmp_path):
    output, _ = trained
    weights = os.path.join(output, "model_final.pth")
    # the trained model has the built-in dataset's 8 classes; this model is built for 5
    result = run_train_net(
        datasets_root,
        str(tmp_path),
        "--eval-only",
        overrides=["MODEL.WEIGHTS", weights, "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "5"],
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"train_net: error: MODEL.WEIGHTS {weights} does not fit the model" in result.stderr
    assert "sem_seg_head.predictor.class_embed.weight: (9, 32) vs (6, 32)" in result.stderr
    assert "criterion.empty_weight: (9,) vs (6,)" in result.stderr
    assert "Traceback" not in result.stderr
    assert "copypaste" not in result.stdout + result.stderr  # nothing was evaluated

    missing = str(tmp_path / "missing.pth")
    result = run_train_net(
        datasets_root, str(tmp_path), "--eval-only", overrides=["MODEL.WEIGHTS", missing]
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"train_net: error: MODEL.WEIGHTS file not found: {missing}" in result.stderr


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_unsafe_weights_are_refused_by_training_and_eval_only(datasets_root, tmp_path, suffix):
    """MODEL.WEIGHTS that would run code while loading (here: create a file) stops both the
    trainer's checkpointer and --eval-only with exit status 2, and none of it runs."""
    from tests.checkpoint.test_safe_load import write_hostile_checkpoint

    marker = tmp_path / "marker"
    evil = write_hostile_checkpoint(tmp_path, suffix, marker)
    for args in (["--eval-only"], []):
        result = run_train_net(
            datasets_root, str(tmp_path / "out"), *args, overrides=["MODEL.WEIGHTS", str(evil)]
        )
        assert result.returncode == 2, (args, result.stderr[-3000:])
        assert f"{evil}: refused to load" in result.stderr, args
        assert "Traceback" not in result.stderr
        assert not marker.exists(), args


def test_resume_after_sigterm_continues_from_the_interrupted_iteration(datasets_root, tmp_path):
    output = str(tmp_path)
    # long enough not to finish before the signal; the resumed run is then cut short
    overrides = [
        "SOLVER.MAX_ITER",
        "1000",
        "SOLVER.CHECKPOINT_PERIOD",
        "1000",
        "TEST.EVAL_PERIOD",
        "0",
    ]
    console = open(os.path.join(output, "console.txt"), "w")  # a pipe could fill and block
    process = subprocess.Popen(
        train_net_command(output, overrides=overrides),
        env=env_with_datasets(datasets_root),
        stdout=console,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log_file = os.path.join(output, "log.txt")
    deadline = time.time() + 300
    while time.time() < deadline:
        if (
            os.path.exists(log_file)
            and "Starting training from iteration 0" in open(log_file).read()
        ):
            break
        time.sleep(0.5)
    time.sleep(3)  # a few iterations
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=300)
    console.close()
    out = open(os.path.join(output, "console.txt")).read()
    assert process.returncode == 128 + signal.SIGTERM, out[-3000:]
    last = open(os.path.join(output, "last_checkpoint")).read().strip()
    match = re.fullmatch(r"model_interrupted_(\d+)\.pth", last)
    assert match, last
    interrupted_at = int(match.group(1))
    assert interrupted_at < 999, "the run finished before the signal; the test did not interrupt it"

    overrides[1] = str(interrupted_at + 3)  # two more iterations
    resumed = run_train_net(
        datasets_root,
        output,
        "--resume",
        overrides=overrides + ["MODEL.MASK_FORMER.TEST.INSTANCE_ON", "False"],
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (
        f"Starting training from iteration {interrupted_at + 1}" in resumed.stdout + resumed.stderr
    )
    assert os.path.exists(os.path.join(output, "model_final.pth"))


def test_two_process_ddp_on_cpu(datasets_root, tmp_path):
    result = run_train_net(
        datasets_root,
        str(tmp_path),
        "--num-gpus",
        "2",
        "--dist-url",
        "tcp://127.0.0.1:29517",
        overrides=[
            "SOLVER.MAX_ITER",
            "2",
            "SOLVER.CHECKPOINT_PERIOD",
            "1000",
            "TEST.EVAL_PERIOD",
            "0",
            "MODEL.MASK_FORMER.TEST.INSTANCE_ON",
            "False",
        ],
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert "world size: 2" in log.lower() or "Rank of current process: 0. World size: 2" in log
    assert os.path.exists(os.path.join(tmp_path, "model_final.pth"))
    assert "panoptic_seg" in _copypaste(log)


def test_bad_settings_fail_with_the_key_named(datasets_root, tmp_path):
    result = run_train_net(datasets_root, str(tmp_path), overrides=["SOLVER.AMP.ENABLED", "True"])
    assert result.returncode != 0
    assert "SOLVER.AMP.ENABLED" in result.stderr and "MODEL.DEVICE=cpu" in result.stderr
    result = run_train_net(
        datasets_root, str(tmp_path), overrides=["INPUT.DATASET_MAPPER_NAME", "nope"]
    )
    assert result.returncode != 0 and "nope" in result.stderr
