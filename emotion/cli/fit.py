"""`emotion fit`: train, test and save a run folder."""

from __future__ import annotations

import argparse

from emotion.cli.common import (
    backend_args,
    config,
    fit_args,
    limits,
    max_model_arg,
    print_config,
    warn_chance,
    warn_undefined,
)
from emotion.metrics import figure
from emotion.training.run import fit_run

HELP = "train, test and save a run folder"


def add_arguments(p: argparse.ArgumentParser) -> None:
    backend_args(p)
    fit_args(p)
    max_model_arg(p)  # for the --init-from file


def check(args) -> None:
    if not args.resume:  # a resumed run's settings come from its checkpoint
        config(args, from_checkpoint=False)


def run(args) -> int:
    cfg = config(args)
    if args.print_config:
        return print_config(cfg)

    metrics = fit_run(cfg, resume=args.resume, overwrite=args.overwrite, limits=limits(args))
    t = metrics["test"]
    if t:
        print(f"test: accuracy {t['accuracy']:.4f}  precision {figure(t['precision'])}  recall {figure(t['recall'])}  "
              f"f1 {figure(t['f1'])}  (n={t['n']})")
        warn_undefined(t)
        warn_chance(t)
    if metrics.get("val"):
        warn_undefined(metrics["val"], "val")
    t = cfg.trainer
    print(f"run folder: {t.out}" if t.process_id == 0 else
          f"process {t.process_id} of {t.num_processes}: done; process 0 writes the run folder ({t.out} on its host)")
    return 0
