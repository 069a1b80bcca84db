"""The detectron2 trainer of the project: Mask2Former dataset mappers, evaluators per dataset,
the paper's optimizer and schedules, AMP in float16 or bfloat16 (bfloat16 on the CPU too,
`amp`), DDP on GPUs (NCCL) and CPUs (gloo), semantic test-time augmentation, a checkpoint on
interruption, the project's checkpointer (files read as plain data only,
dinat_m2f/checkpoint/checkpointer.py) with atomic checkpoint files and an exact resume
(`checkpoint.atomic_files`, `train_state`, `data.loaders`), broken samples named or skipped,
and a stop on non-finite losses (`loss_guard`)."""

from __future__ import annotations

import logging
import os
import socket
import weakref
from collections import OrderedDict

import torch
from detectron2.engine import DefaultTrainer, TrainerBase
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from torch.nn.parallel import DistributedDataParallel

from ..checkpoint import (
    CheckpointReadError,
    UnsafeCheckpointError,
    WeightsError,
    load_model_weights,
)
from ..checkpoint.atomic_files import CheckpointFileError, TrainingCheckpointer
from ..data.dataset_mappers import build_dataset_mapper
from ..data.loaders import base_seed_of, build_test_loader, build_train_loader
from ..evaluation.evaluator_factory import build_evaluator
from ..modeling.semantic_tta import SemanticSegmentorWithTTA
from ..solver import build_lr_scheduler, build_optimizer
from .amp import device_type_of
from .interrupt_checkpoint import CheckpointOnInterrupt
from .loss_guard import FiniteLossAMPTrainer, FiniteLossSimpleTrainer
from .train_state import ResumableTrainingState

AMP_PRECISIONS = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def wrap_ddp(model: torch.nn.Module) -> torch.nn.Module:
    """DistributedDataParallel over all processes; CPU models take no device_ids (gloo)."""
    if comm.get_world_size() == 1:
        return model
    device_ids = None if device_type_of(model) == "cpu" else [comm.get_local_rank()]
    return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)


class Trainer(DefaultTrainer):
    """DefaultTrainer with the project's builders (see the module docstring)."""

    def __init__(self, cfg) -> None:
        # DefaultTrainer.__init__, except for DDP on CPU and the AMP dtype
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = wrap_ddp(model)
        if cfg.SOLVER.AMP.ENABLED:
            self._trainer = FiniteLossAMPTrainer(
                model, data_loader, optimizer, precision=AMP_PRECISIONS[cfg.SOLVER.AMP.PRECISION]
            )
        else:
            self._trainer = FiniteLossSimpleTrainer(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = TrainingCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def resume_or_load(self, resume: bool = True) -> None:
        """detectron2's: OUTPUT_DIR's last checkpoint with `resume` when there is one, else
        MODEL.WEIGHTS, loaded leniently (a pretrained backbone leaves the head random). A file
        that cannot be read safely, or whose weights fit nothing, is a `WeightsError`."""
        try:
            super().resume_or_load(resume=resume)
        except (UnsafeCheckpointError, CheckpointReadError) as error:
            raise WeightsError(f"cannot load the weights to train from: {error}") from error
        if comm.get_world_size() > 1:
            self._check_same_start()

    def _check_same_start(self) -> None:
        """Every process must resume from the same checkpoint: the main process writes them
        into OUTPUT_DIR and every process reads them back, so OUTPUT_DIR must be one folder
        that all machines see. A machine that found another checkpoint (or none) would train
        other weights, and the processes would wait for each other at the end."""
        starts = comm.all_gather((self.start_iter, socket.gethostname()))
        if len({start for start, _ in starts}) > 1:
            where = ", ".join(
                f"rank {rank} ({host}) from iteration {start}"
                for rank, (start, host) in enumerate(starts)
            )
            raise CheckpointFileError(
                f"the processes would start from different checkpoints: {where}. OUTPUT_DIR "
                f"({self.cfg.OUTPUT_DIR}) must be the same folder on every machine (a shared "
                "file system): the main process writes the checkpoints, every process reads them"
            )

    def build_hooks(self):
        hooks = super().build_hooks()
        # first: seeds each iteration, and its state must be current when checkpoints are saved
        hooks.insert(0, ResumableTrainingState(self._trainer.data_loader, base_seed_of(self.cfg)))
        # last: the interrupt checkpoint holds the LR scheduler's step of its iteration
        hooks.append(CheckpointOnInterrupt(self.checkpointer))
        return hooks

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_train_loader(cls, cfg):
        return build_train_loader(cfg, mapper=build_dataset_mapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_test_loader(cfg, dataset_name)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def test_with_TTA(cls, cfg, model):
        """Evaluation with multi-scale + flip semantic TTA (TEST.AUG); results get "_TTA"."""
        logger = logging.getLogger("dinat_m2f")
        logger.info("Running inference with test-time augmentation ...")
        tta_model = SemanticSegmentorWithTTA(cfg, model)
        evaluators = [
            cls.build_evaluator(cfg, name, os.path.join(cfg.OUTPUT_DIR, "inference_TTA", name))
            for name in cfg.DATASETS.TEST
        ]
        results = cls.test(cfg, tta_model, evaluators)
        return OrderedDict((k + "_TTA", v) for k, v in results.items())


def load_weights_for_evaluation(cfg, model: torch.nn.Module, resume: bool = False) -> None:
    """Loads the weights `--eval-only` evaluates, strictly (`load_model_weights`): OUTPUT_DIR's
    last checkpoint with `resume` when there is one, else MODEL.WEIGHTS. A missing, empty or
    unreadable file, or one that does not fit the model, is a `WeightsError`."""
    checkpointer = TrainingCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
    if resume and checkpointer.has_checkpoint():
        path = checkpointer.get_checkpoint_file()
        load_model_weights(model, path, source="the last checkpoint of OUTPUT_DIR")
    else:
        load_model_weights(model, cfg.MODEL.WEIGHTS)


def run_evaluation(cfg, model) -> dict:
    """Evaluates `model` on DATASETS.TEST (and with TTA when TEST.AUG.ENABLED)."""
    results = Trainer.test(cfg, model)
    if cfg.TEST.AUG.ENABLED:
        results.update(Trainer.test_with_TTA(cfg, model))
    if comm.is_main_process():
        verify_results(cfg, results)
    return results
