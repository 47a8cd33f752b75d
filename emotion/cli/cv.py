"""`emotion cv`: K-fold cross-validation: mean ± std of every test metric."""

from __future__ import annotations

import argparse

from emotion.cli.common import backend_args, config, fit_args, print_config, warn_chance
from emotion.errors import EmotionError
from emotion.metrics import figure
from emotion.training.cv import cv_run

HELP = "K-fold cross-validation: mean ± std of every test metric"


def add_arguments(p: argparse.ArgumentParser) -> None:
    backend_args(p)
    fit_args(p)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--jobs", type=int, default=1, help="folds trained at a time, each in its own process (default 1)")


def check(args) -> None:
    config(args, from_checkpoint=False)


def run(args) -> int:
    cfg = config(args, from_checkpoint=False)
    if args.print_config:
        return print_config(cfg)
    if cfg.trainer.num_processes > 1:
        raise EmotionError("emotion cv trains each fold in one process (--jobs runs folds side by side); "
                           "--num-processes is for emotion fit")

    result = cv_run(cfg, args.folds, resume=args.resume, overwrite=args.overwrite, jobs=args.jobs)
    for m, v in result["summary"].items():
        print(f"{m}: {figure(v['mean'])} ± {figure(v['std'])}"
              + (f" (undefined in fold(s) {v['undefined_in']})" if v.get("undefined_in") else ""))
    warn_chance(result["pooled"], "pooled test")
    print(f"cv folder: {cfg.trainer.out} (cv.md, cv.json, fold-*/)")
    return 0
