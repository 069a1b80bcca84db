"""Starting train_net's processes on one or several machines (detectron2's launcher) and turning
the way they end into one message and one exit status.

- `argument_parser()`: detectron2's arguments (--num-gpus, --num-machines, --machine-rank,
  --dist-url, ...) plus --dist-timeout, the time in minutes a process waits in a collective
  operation for the others before it gives up (detectron2's default, 30).
- In every process that trains, the project's errors become `train_net: error: ...` and an
  exit status (`EXIT_*`; with several processes the message names the rank); the launcher
  exits with the status of the first worker that ended, or 128 + N for a worker killed by
  signal N.
- A process that loses contact with another one (killed, its machine down, the network cut)
  gets an error from its next collective operation: at once when the other side's connection
  closes (a killed process), else after --dist-timeout (gloo and NCCL both honour it). It stops
  with EXIT_PEER_LOST and a message saying so, instead of a traceback or a hang.
- SIGINT, SIGTERM and SIGUSR2 sent to a launcher are passed on to its workers, which save a
  checkpoint after an iteration they agree on (`CheckpointOnInterrupt`) and stop with 128 + N.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from detectron2.engine import default_argument_parser, launch
from detectron2.utils import comm

from ..checkpoint import WeightsError
from ..checkpoint.atomic_files import CheckpointFileError
from ..checkpoint.finite_weights import NonFiniteError
from ..data.broken_samples import BrokenSampleError
from .config_file import ConfigFileError
from .interrupt_checkpoint import HANDLED_SIGNALS, TrainingInterrupted

EXIT_INPUT = 2  # a config, weights file, checkpoint or sample that cannot be used
EXIT_NON_FINITE = 3  # a NaN or infinite loss
EXIT_PEER_LOST = 4  # another process of a multi-process run stopped answering
DEFAULT_DIST_TIMEOUT_MIN = 30.0

# how gloo and NCCL word a lost peer when they raise a plain RuntimeError
_PEER_LOST_MARKERS = (
    "connection closed by peer",
    "connection reset by peer",
    "broken pipe",
    "timed out waiting",
    "gloo/transport",
    "nccl",
)


def argument_parser() -> argparse.ArgumentParser:
    """detectron2's train_net arguments plus --dist-timeout (minutes, > 0)."""
    parser = default_argument_parser()
    parser.add_argument(
        "--dist-timeout",
        type=_positive_minutes,
        default=DEFAULT_DIST_TIMEOUT_MIN,
        metavar="MINUTES",
        help="with several processes: how long one waits in a collective operation for the "
        "others before stopping with an error (exit status 4). It must exceed the longest time "
        "one process works alone (the main process's evaluation metrics, a checkpoint write). "
        f"Default {DEFAULT_DIST_TIMEOUT_MIN:g}",
    )
    return parser


def _positive_minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--dist-timeout must be minutes, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"--dist-timeout must be > 0 minutes, got {text!r}")
    return value


def is_peer_lost(error: BaseException) -> bool:
    """Whether `error` (or one it was raised from) is a failed collective operation: torch's
    DistError, or gloo's / NCCL's RuntimeError about a closed connection or a timeout."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, torch.distributed.DistError):
            return True
        if isinstance(error, RuntimeError):
            text = str(error).lower()
            if any(marker in text for marker in _PEER_LOST_MARKERS):
                return True
        error = error.__cause__ or error.__context__
    return False


def _report(message: str) -> None:
    where = ""
    if comm.get_world_size() > 1:
        where = f" (rank {comm.get_rank()} of {comm.get_world_size()})"
    print(f"train_net{where}: {message}", file=sys.stderr, flush=True)


def run_main(main: Callable, args: argparse.Namespace) -> int:
    """Runs `main(args)` in this process; returns its exit status (0, or EXIT_* / 128 + N with
    the reason printed on stderr)."""
    try:
        main(args)
    except TrainingInterrupted as interrupted:
        _report(f"{interrupted}; the last checkpoint is in OUTPUT_DIR, continue with --resume")
        return 128 + interrupted.signum
    except (WeightsError, CheckpointFileError, BrokenSampleError, ConfigFileError) as error:
        _report(f"error: {error}")
        return EXIT_INPUT
    except NonFiniteError as error:
        _report(f"error: {error}")
        return EXIT_NON_FINITE
    except Exception as error:
        if comm.get_world_size() == 1 or not is_peer_lost(error):
            raise
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        _report(
            f"error: lost contact with another process of the run ({first_line}). One was "
            "killed or failed (see its log), its machine or the network is down, or it did not "
            f"reach this collective operation within --dist-timeout ({args.dist_timeout:g} "
            "min). The last checkpoint is in OUTPUT_DIR: start the run again on every machine "
            "with --resume"
        )
        return EXIT_PEER_LOST
    return 0


def _worker(main: Callable, args: argparse.Namespace) -> None:
    """The function of every spawned process: its status becomes the process's exit status.
    Every process leaves through os._exit once its logs are flushed (a successful one after
    end_process_groups): the interpreter's teardown destroys C++ threads of the distributed
    backend that may still be running, or tied to peers that failed, and that sometimes
    aborted a process that had finished its work (SIGABRT, "terminate called without an active
    exception"; after a successful two-process run, even with its groups taken down)."""
    status = run_main(main, args)
    if not status:
        end_process_groups()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def end_process_groups() -> None:
    """The end of a run that succeeded everywhere: once every process is here, each takes its
    process groups down itself. Left to the interpreter's teardown, their C++ threads were once
    destroyed still running and aborted a process that had finished its work (SIGABRT,
    "terminate called without an active exception", in a two-process CPU run of the tests)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


@contextmanager
def _signals_passed_to_workers() -> Iterator[None]:
    """While the launcher waits for its workers, HANDLED_SIGNALS are sent on to them."""

    def forward(signum, frame) -> None:
        for child in multiprocessing.active_children():
            try:
                os.kill(child.pid, signum)
            except OSError:  # it has just ended
                pass

    previous = {signum: signal.signal(signum, forward) for signum in HANDLED_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def launch_main(main: Callable, args: argparse.Namespace) -> int:
    """Runs `main(args)` in args.num_gpus processes on this machine (one machine of
    args.num_machines), through detectron2's `launch`; returns the exit status."""
    world_size = args.num_gpus * args.num_machines
    if world_size == 1:
        return run_main(main, args)
    try:
        with _signals_passed_to_workers():
            launch(
                _worker,
                args.num_gpus,
                num_machines=args.num_machines,
                machine_rank=args.machine_rank,
                dist_url=args.dist_url,
                args=(main, args),
                timeout=datetime.timedelta(minutes=args.dist_timeout),
            )
    except torch.multiprocessing.ProcessExitedException as ended:
        if ended.signal_name:  # killed: it could not say why itself
            signum = int(getattr(signal, ended.signal_name))
            print(
                f"train_net: error: the worker process of local rank {ended.error_index} on "
                f"machine {args.machine_rank} was killed by {ended.signal_name}; the other "
                "processes stop too. The last checkpoint is in OUTPUT_DIR: start the run again "
                "on every machine with --resume",
                file=sys.stderr,
                flush=True,
            )
            return 128 + signum
        return ended.exit_code  # the worker printed why
    return 0
