"""Building the frozen config of a run from a YAML file and KEY VALUE overrides."""

from __future__ import annotations

import torch
from detectron2.config import CfgNode

from ..config import default_cfg
from .config_file import merge_config_file
from .trainer import AMP_PRECISIONS


def load_cfg(config_file: str, opts: list[str] | None = None) -> CfgNode:
    """`default_cfg()` (detectron2's defaults with the keys of DeepLab, Mask2Former, DiNAT and
    this project, official defaults) merged with config_file (its _BASE_ chain, read as data:
    config_file.py) and opts; checked, not frozen. Mask2Former's and DiNAT's own YAML files
    merge unchanged."""
    cfg = default_cfg()
    merge_config_file(cfg, config_file)
    cfg.merge_from_list(list(opts or []))
    check_cfg(cfg)
    return cfg


def check_cfg(cfg: CfgNode) -> None:
    """Errors for settings that would otherwise fail deep inside training."""
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"MODEL.DEVICE={cfg.MODEL.DEVICE} but no CUDA GPU is available; add MODEL.DEVICE cpu "
            "(and SOLVER.AMP.ENABLED False, or SOLVER.AMP.PRECISION bfloat16)"
        )
    amp = cfg.SOLVER.AMP
    if amp.PRECISION not in AMP_PRECISIONS:
        raise ValueError(
            f"SOLVER.AMP.PRECISION={amp.PRECISION!r}; use one of {sorted(AMP_PRECISIONS)}"
        )
    if amp.ENABLED and amp.PRECISION == "float16" and cfg.MODEL.DEVICE == "cpu":
        # CPUs compute float16 by conversion (slower than float32); bfloat16 has units on
        # AVX512-BF16 and AMX CPUs and needs no gradient scaling
        raise ValueError(
            "SOLVER.AMP.ENABLED=True with SOLVER.AMP.PRECISION=float16 is for GPUs, but "
            "MODEL.DEVICE=cpu; add SOLVER.AMP.PRECISION bfloat16 (mixed precision on the CPU) "
            "or SOLVER.AMP.ENABLED False"
        )


def setup_cfg(args) -> CfgNode:
    """The frozen config of a train_net.py run: `load_cfg(args.config_file, args.opts)`, frozen,
    then detectron2's `default_setup` (creates OUTPUT_DIR; logs the environment, the arguments
    and the config; writes OUTPUT_DIR/config.yaml; seeds the RNGs with SEED + rank, or randomly
    when SEED < 0; cudnn benchmark from CUDNN_BENCHMARK unless --eval-only) and a log of the
    `dinat_m2f` loggers in OUTPUT_DIR. The demo does not call it (demo/demo.py's setup_cfg
    only loads and freezes the config)."""
    from detectron2.engine import default_setup
    from detectron2.utils.logger import setup_logger

    cfg = load_cfg(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=_rank(), name="dinat_m2f")
    return cfg


def _rank() -> int:
    from detectron2.utils import comm

    return comm.get_rank()
