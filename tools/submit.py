#!/usr/bin/env python
"""Submit train_net.py to a SLURM cluster with submitit: one task per node, each running
detectron2's launcher for its GPUs, and a job that requeues itself and resumes.

    CONFIG=configs/coco/panoptic-segmentation/dinat/maskformer2_dinat_large_in22k_bs16_100ep.yaml
    python tools/submit.py --job-dir /checkpoint/$USER/dinat_l_coco --nodes 2 --gpus-per-node 8 \
        --partition learnlab --timeout-min 4320 --config-file $CONFIG

Every start of the job runs train_net with --resume and OUTPUT_DIR = --job-dir (unless the
config overrides it), so a requeued, preempted or resubmitted job continues from the last
checkpoint there. Before the time limit SLURM sends SIGUSR2 (--signal-delay-s ahead): the
training processes save a checkpoint after an iteration they agree on and stop, and submitit
requeues the job (at most --max-requeues times). Node 0's host name and a port derived from
the job id make the rendezvous (--dist-url). submitit's logs are in JOB_DIR/submitit/.
--cluster local runs the same job on this machine (one node; used by the tests).
"""

from __future__ import annotations

import argparse
import copy
import os
import signal
import sys
import zlib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

PORT_BASE, PORT_RANGE = 20000, 20000  # the rendezvous port: PORT_BASE + hash(job id) % RANGE
SUBMIT_ARGS = (
    "job_dir",
    "nodes",
    "gpus_per_node",
    "processes_per_node",
    "partition",
    "timeout_min",
    "cpus_per_task",
    "mem_gb",
    "job_name",
    "max_requeues",
    "signal_delay_s",
    "slurm_param",
    "cluster",
)


def build_parser() -> argparse.ArgumentParser:
    from dinat_m2f.engine.launch import argument_parser

    parser = argument_parser()
    parser.description = __doc__.split("\n\n")[0]
    group = parser.add_argument_group("submission (submitit)")
    group.add_argument("--job-dir", required=True, help="OUTPUT_DIR of the run and submitit logs")
    group.add_argument("--nodes", type=_at_least(1), default=1, help="machines (default 1)")
    group.add_argument(
        "--gpus-per-node", type=_at_least(0), default=8, help="GPUs per node (default 8)"
    )
    group.add_argument(
        "--processes-per-node",
        type=_at_least(1),
        default=None,
        help="training processes per node (default: --gpus-per-node; 1 without GPUs; on "
        "CPU-only nodes add MODEL.DEVICE cpu)",
    )
    group.add_argument("--partition", default=None, help="SLURM partition")
    group.add_argument(
        "--timeout-min", type=_at_least(1), default=60 * 72, help="time limit per start (minutes)"
    )
    group.add_argument("--cpus-per-task", type=_at_least(1), default=None, help="CPUs per node")
    group.add_argument("--mem-gb", type=float, default=None, help="memory per node (GB)")
    group.add_argument("--job-name", default="dinat_m2f", help="SLURM job name")
    group.add_argument(
        "--max-requeues",
        type=_at_least(0),
        default=3,
        help="how many times a job that reached its time limit is requeued (default 3)",
    )
    group.add_argument(
        "--signal-delay-s",
        type=_at_least(1),
        default=120,
        help="SLURM sends SIGUSR2 this many seconds before the time limit (default 120): enough "
        "to finish an iteration and write a checkpoint",
    )
    group.add_argument(
        "--slurm-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="more #SBATCH options, e.g. --slurm-param account=vision --slurm-param qos=high",
    )
    group.add_argument(
        "--cluster",
        choices=("slurm", "local"),
        default="slurm",
        help="slurm (default), or local: this machine, one node",
    )
    return parser


def _at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def _slurm_params(pairs: list[str]) -> dict[str, str]:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--slurm-param takes KEY=VALUE, got {pair!r}")
        params[key] = value
    return params


def rendezvous_port(job_id: str) -> int:
    """A port that every node of a job computes alike from the job id."""
    return PORT_BASE + zlib.crc32(job_id.encode()) % PORT_RANGE


class TrainJob:
    """What submitit runs on every node: train_net with this node's place in the job.
    `checkpoint` is submitit's hook on preemption / time limit: the same job again (it
    resumes from OUTPUT_DIR)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    def __call__(self) -> int:
        import submitit

        if REPO not in sys.path:
            sys.path.insert(0, REPO)
        import train_net
        from dinat_m2f.engine.launch import launch_main

        env = submitit.JobEnvironment()
        args = copy.deepcopy(self.args)
        args.num_machines = env.num_nodes
        args.machine_rank = env.node
        host = env.hostnames[0] if env.num_nodes > 1 else "127.0.0.1"
        args.dist_url = f"tcp://{host}:{rendezvous_port(env.job_id)}"
        args.resume = True  # every start continues from the last checkpoint of OUTPUT_DIR
        print(f"tools/submit.py: {env}, --dist-url {args.dist_url}", flush=True)
        status = launch_main(train_net.main, args)
        if status == 128 + signal.SIGUSR2:
            # the checkpoint is written: hand the signal to submitit, which calls
            # `checkpoint` and requeues the job (from the first task; the others just end)
            signal.raise_signal(signal.SIGUSR2)
            return status
        if status:
            raise RuntimeError(f"train_net ended with exit status {status}; see the log above")
        return status

    def checkpoint(self):
        import submitit

        return submitit.helpers.DelayedSubmission(TrainJob(self.args))


def train_args(args: argparse.Namespace) -> argparse.Namespace:
    """The train_net arguments of a submission: its own ones removed, OUTPUT_DIR = job dir
    unless the command line sets it, processes per node from the GPUs."""
    train = argparse.Namespace(**{k: v for k, v in vars(args).items() if k not in SUBMIT_ARGS})
    per_node = args.processes_per_node or max(args.gpus_per_node, 1)
    if args.gpus_per_node and per_node > args.gpus_per_node:
        raise ValueError(
            f"--processes-per-node {per_node} exceeds --gpus-per-node {args.gpus_per_node}"
        )
    train.num_gpus = per_node
    opts = list(train.opts or [])
    if "OUTPUT_DIR" not in opts[::2]:
        opts += ["OUTPUT_DIR", os.path.abspath(args.job_dir)]
    train.opts = opts
    return train


def make_executor(args: argparse.Namespace):
    """The submitit executor of a submission (SLURM or local)."""
    import submitit

    extra = _slurm_params(args.slurm_param)
    if args.cluster == "local" and args.nodes != 1:
        raise ValueError(f"--cluster local runs one node, got --nodes {args.nodes}")
    folder = os.path.join(os.path.abspath(args.job_dir), "submitit", "%j")
    try:
        executor = submitit.AutoExecutor(
            folder=folder,
            cluster=args.cluster,
            slurm_max_num_timeout=args.max_requeues,
            local_max_num_timeout=args.max_requeues,
        )
    except RuntimeError as error:  # submitit: no srun on this machine
        raise ValueError(f"{error} (--cluster local runs the job on this machine)") from None
    params = {
        "name": args.job_name,
        "nodes": args.nodes,
        "tasks_per_node": 1,  # one launcher per node; it starts the node's processes
        "gpus_per_node": args.gpus_per_node,
        "timeout_min": args.timeout_min,
    }
    if args.cpus_per_task:
        params["cpus_per_task"] = args.cpus_per_task
    if args.mem_gb:
        params["mem_gb"] = args.mem_gb
    if args.cluster == "slurm":
        params["slurm_signal_delay_s"] = args.signal_delay_s
        if args.partition:
            params["slurm_partition"] = args.partition
        if extra:
            params["slurm_additional_parameters"] = extra
    executor.update_parameters(**params)
    return executor


def submit(argv: list[str] | None = None):
    """Parses the command line, submits the job and returns submitit's Job."""
    args = build_parser().parse_args(argv)
    if not args.config_file:
        raise ValueError("--config-file is required")
    train = train_args(args)
    executor = make_executor(args)
    module = sys.modules[TrainJob.__module__]
    if module.__name__ != "__main__":  # imported (tests): the job must not need to import it
        import cloudpickle

        cloudpickle.register_pickle_by_value(module)
    return executor.submit(TrainJob(train))


def main(argv: list[str] | None = None) -> int:
    try:
        job = submit(argv)
    except (ValueError, OSError) as error:
        print(f"tools/submit.py: error: {error}", file=sys.stderr)
        return 2
    print(f"submitted job {job.job_id}; logs in {job.paths.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
