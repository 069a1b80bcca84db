"""Running train_net.py in a subprocess on a small built-in dataset, with a small model."""

import os
import subprocess
import sys

from tests.conftest import tiny_dinat_opts

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "builtin", "maskformer2_dinat_mini_builtin_shapes.yaml")

# 96 px images, two per batch, loaded in the main process
SMALL_INPUTS = [
    "INPUT.MIN_SIZE_TRAIN", "(96,)",
    "INPUT.MIN_SIZE_TEST", "96",
    "SOLVER.IMS_PER_BATCH", "2",
    "DATALOADER.NUM_WORKERS", "0",
]  # fmt: skip
# a one-block-per-level DiNAT at 96 px and a narrow head: a few seconds per iteration on a CPU
SMALL_MODEL = tiny_dinat_opts("[[2], [1], [1], [1]]") + [
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS",
    "1",
    "MODEL.SEM_SEG_HEAD.CONVS_DIM",
    "32",
    "MODEL.SEM_SEG_HEAD.MASK_DIM",
    "32",
    "MODEL.MASK_FORMER.HIDDEN_DIM",
    "32",
    "MODEL.MASK_FORMER.NHEADS",
    "4",
    "MODEL.MASK_FORMER.DEC_LAYERS",
    "2",
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES",
    "8",
    "MODEL.MASK_FORMER.TRAIN_NUM_POINTS",
    "256",
    *SMALL_INPUTS,
    "TEST.DETECTIONS_PER_IMAGE",
    "20",
]


def env_with_datasets(datasets_root: str) -> dict:
    env = dict(os.environ)
    env["DETECTRON2_DATASETS"] = datasets_root
    env["OMP_NUM_THREADS"] = "1"  # two DDP processes on two cores
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


def train_net_command(
    output_dir: str, *args: str, overrides=(), config: str = CONFIG, model=SMALL_MODEL
) -> list[str]:
    """train_net.py on `config` with `args`, the `model` opts, OUTPUT_DIR and `overrides`."""
    return [
        sys.executable,
        os.path.join(REPO, "train_net.py"),
        "--config-file",
        config,
        *args,
        *model,
        "OUTPUT_DIR",
        str(output_dir),
        *overrides,
    ]


def run_train_net(
    datasets_root, output_dir, *args, overrides=(), timeout=600, config=CONFIG, model=SMALL_MODEL
):
    return subprocess.run(
        train_net_command(output_dir, *args, overrides=overrides, config=config, model=model),
        env=env_with_datasets(datasets_root),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    """A TCP port that is free on the loopback now (for --dist-url)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_machine(datasets_root, output_dir, rank, port, *args, overrides=(), log=None):
    """train_net.py as machine `rank` of two on the loopback (one process each), in the
    background; its output goes to the file `log`."""
    return subprocess.Popen(
        train_net_command(
            output_dir,
            "--num-machines",
            "2",
            "--machine-rank",
            str(rank),
            "--dist-url",
            f"tcp://127.0.0.1:{port}",
            *args,
            overrides=overrides,
        ),
        env=env_with_datasets(datasets_root),
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
