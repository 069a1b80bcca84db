"""dinat_m2f.engine.launch in one process: the exit status and message of every way a run
ends, which errors count as a lost process (gloo's own messages, as measured when a peer was
killed or frozen), and --dist-timeout's checks. The multi-process behaviour is in
test_multi_machine.py and test_submit.py."""

import argparse
import logging
import os
import signal

import pytest
import torch

from dinat_m2f.checkpoint import WeightsError
from dinat_m2f.engine.interrupt_checkpoint import TrainingInterrupted
from dinat_m2f.engine.launch import (
    EXIT_INPUT,
    EXIT_NON_FINITE,
    _worker,
    argument_parser,
    is_peer_lost,
    run_main,
)
from dinat_m2f.engine.loss_guard import NonFiniteLossError

# what gloo raised in two processes on the loopback when the other one was killed / frozen
GLOO_KILLED = (
    "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error "
    "[127.0.0.1]:20900: Connection reset by peer. This is typically caused by a remote worker "
    "hanging or bugs in the application."
)
GLOO_CLOSED = (
    "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed "
    "by peer [127.0.0.1]:50090. This is typically caused by a remote worker crashing."
)
GLOO_TIMEOUT = (
    "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out "
    "waiting 10000ms for recv operation to complete"
)


@pytest.mark.parametrize("message", [GLOO_KILLED, GLOO_CLOSED, GLOO_TIMEOUT])
def test_gloo_errors_are_a_lost_process(message):
    assert is_peer_lost(RuntimeError(message))
    try:  # as DDP's reducer or a hook re-raises it
        try:
            raise RuntimeError(message)
        except RuntimeError as inner:
            raise ValueError("while gathering the loader state") from inner
    except ValueError as outer:
        assert is_peer_lost(outer)


def test_other_errors_are_not_a_lost_process():
    assert is_peer_lost(torch.distributed.DistBackendError("NCCL watchdog"))
    assert not is_peer_lost(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not is_peer_lost(ValueError("SOLVER.IMS_PER_BATCH=3 is not divisible by the 2"))
    assert not is_peer_lost(KeyError("connection closed by peer"))  # not a RuntimeError


@pytest.mark.parametrize(
    "error, status, message",
    [
        (WeightsError("MODEL.WEIGHTS x.pth does not fit"), EXIT_INPUT, "error: MODEL.WEIGHTS x"),
        (NonFiniteLossError("non-finite loss at 3"), EXIT_NON_FINITE, "error: non-finite loss"),
        (
            TrainingInterrupted(signal.SIGUSR2),
            128 + signal.SIGUSR2,
            "training interrupted by SIGUSR2; the last checkpoint is in OUTPUT_DIR",
        ),
    ],
)
def test_run_main_turns_errors_into_exit_statuses(capsys, error, status, message):
    def main(args):
        raise error

    assert run_main(main, argparse.Namespace(dist_timeout=30.0)) == status
    assert capsys.readouterr().err.startswith(f"train_net: {message}")


def test_run_main_lets_other_errors_through():
    """In one process even gloo's messages are not about another process: a traceback."""

    def main(args):
        raise RuntimeError(GLOO_CLOSED)

    with pytest.raises(RuntimeError, match="Connection closed"):
        run_main(main, argparse.Namespace(dist_timeout=30.0))


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "ten"])
def test_dist_timeout_must_be_positive_minutes(capsys, value):
    with pytest.raises(SystemExit):
        argument_parser().parse_args(["--dist-timeout", value])
    assert "--dist-timeout must be" in capsys.readouterr().err


def test_dist_timeout_default_is_detectron2s():
    from detectron2.engine.launch import DEFAULT_TIMEOUT

    args = argument_parser().parse_args(["--config-file", "x.yaml", "--dist-timeout", "2.5"])
    assert args.dist_timeout == 2.5
    assert argument_parser().parse_args([]).dist_timeout * 60 == DEFAULT_TIMEOUT.total_seconds()


class _Exited(Exception):
    pass


@pytest.fixture
def exits(monkeypatch):
    """The statuses a worker leaves with through os._exit, which raises here instead; the
    logging shutdown before it is recorded, not done (it would close pytest's handlers)."""
    statuses = []

    def exit_(status):
        statuses.append(status)
        raise _Exited

    monkeypatch.setattr(os, "_exit", exit_)
    monkeypatch.setattr(logging, "shutdown", lambda: statuses.append("logs"))
    return statuses


def test_a_worker_that_succeeded_takes_its_process_groups_down_and_skips_teardown(tmp_path, exits):
    """A one-process gloo group (and a subgroup, as detectron2's local group) is gone when the
    worker leaves, and it leaves through os._exit(0) after flushing its logs: nothing is left
    to the interpreter's teardown."""
    dist = torch.distributed
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        dist.new_group([0])
        ran = []
        with pytest.raises(_Exited):
            _worker(lambda args: ran.append(args), argparse.Namespace(dist_timeout=30.0))
        assert len(ran) == 1
        assert not dist.is_initialized()
        assert exits == ["logs", 0]
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_a_worker_that_failed_leaves_with_its_status(exits):
    def interrupted(args):
        raise TrainingInterrupted(signal.SIGUSR2)

    with pytest.raises(_Exited):
        _worker(interrupted, argparse.Namespace(dist_timeout=30.0))
    assert exits == ["logs", 128 + signal.SIGUSR2]
