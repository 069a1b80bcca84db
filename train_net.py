#!/usr/bin/env python
"""Train or evaluate DiNAT + Mask2Former with detectron2.

    python train_net.py --config-file configs/builtin/maskformer2_dinat_mini_builtin_shapes.yaml
    python train_net.py --config-file CONFIG --num-gpus 8 [KEY VALUE ...]
    python train_net.py --config-file CONFIG --resume          # continue from the last checkpoint
    python train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS model_final.pth

--eval-only loads its weights strictly: a missing file or a checkpoint that does not fit the
config's model stops with the keys named (exit status 2) before anything is evaluated.
A broken image or annotation file (without DATALOADER.SKIP_BROKEN_SAMPLES), a pointer to no
complete checkpoint and a config file that is not plain data (dinat_m2f/engine/config_file.py:
config files cannot run code) also exit with 2, a NaN or infinite loss with 3; --resume after
a kill continues from the last complete checkpoint.

Multi-GPU and multi-node runs go through detectron2's launcher (--num-gpus, --num-machines,
--machine-rank, --dist-url): one process per GPU with NCCL, or with gloo on machines without
a GPU (--num-gpus N then starts N CPU processes; add MODEL.DEVICE cpu). Start the same command
on every machine with its --machine-rank and the first machine's address in --dist-url. A
process that loses the others (one killed, a machine down) stops with exit status 4 at once,
or after --dist-timeout minutes in a collective operation (default 30); SIGINT, SIGTERM and
SIGUSR2 save a checkpoint on all processes and stop them (128 + N). tools/submit.py submits
runs to SLURM (dinat_m2f/engine/launch.py, README "Training").
"""

import sys

import dinat_m2f.data  # noqa: F401  (registers the datasets)
import dinat_m2f.modeling  # noqa: F401  (registers the models)
from dinat_m2f.engine import Trainer, load_weights_for_evaluation, run_evaluation, setup_cfg
from dinat_m2f.engine.launch import argument_parser, launch_main


def main(args):
    cfg = setup_cfg(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        load_weights_for_evaluation(cfg, model, resume=args.resume)
        return run_evaluation(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def cli(argv=None) -> int:
    return launch_main(main, argument_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli())
