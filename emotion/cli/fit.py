"""`emotion fit`: train, test and save a run folder."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from emotion import backends
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
from emotion.config import default_out
from emotion.data.folders import class_folders
from emotion.errors import EmotionError
from emotion.metrics import figure
from emotion.training.checkpoint import CHECKPOINT_FILE, read_checkpoint_meta
from emotion.training.run import check_out, check_resume_backend, fit_run

HELP = "train, test and save a run folder"


def add_arguments(p: argparse.ArgumentParser) -> None:
    backend_args(p)
    fit_args(p)
    max_model_arg(p)  # for the --init-from file


def check(args) -> None:
    """Settings, the data folder and the run folder, before any framework loads (a resumed run's settings come
    from its checkpoint, and its backend must be the checkpoint's)."""
    if args.resume:
        cfg = config(args)
        check_resume_backend(Path(cfg.trainer.out), args.backend or os.environ.get("KERAS_BACKEND")
                             or backends.default())
        return
    cfg = config(args, from_checkpoint=False)
    if args.print_config or cfg.trainer.num_processes > 1:  # processes that train together meet first, so that
        return                                                 # one that cannot start tells the others
    class_folders(Path(cfg.data.data), cfg.data.classes)
    if cfg.data.mix_in:
        class_folders(Path(cfg.data.mix_in))
    if cfg.trainer.out is not None:
        check_out(Path(cfg.trainer.out), resume=False, overwrite=args.overwrite)


def interrupted(args) -> str:
    """What an interrupted fit says: where its checkpoint is, and the command that continues it."""
    out = getattr(args, "fit_out", None)
    if out is None:
        return ""
    ckpt = Path(out) / CHECKPOINT_FILE
    if not ckpt.is_file():
        return f"no checkpoint yet in {out} (one is written at the end of each epoch)"
    try:
        epoch = read_checkpoint_meta(ckpt).get("epoch", "?")
    except EmotionError:
        epoch = "?"
    backend = f" --backend {args.backend}" if args.backend else ""
    return f"checkpoint after epoch {epoch} in {ckpt}; continue with: emotion fit --out {out} --resume{backend}"


def run(args) -> int:
    cfg = config(args)
    if args.print_config:
        return print_config(cfg)
    if cfg.trainer.out is None:
        cfg.trainer.out = default_out()
    args.fit_out = cfg.trainer.out

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
