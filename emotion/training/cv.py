"""K-fold cross-validation: `emotion cv --folds 5` with every `emotion fit` flag.

Each fold holds out one stratified, file-level fold as its test split, trains on the rest (with the
configured share kept back as val), and writes a normal run folder ``OUT/fold-<i>/``. ``OUT/cv.json`` and
``OUT/cv.md`` give every test metric's per-fold values and mean ± std (population std, ddof=0).

``--jobs K`` trains K folds at a time, each in its own process (spawned: the backend starts afresh, as in a
serial run's fold, which seeds everything again): each fold's result is the serial run's.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from emotion import backends
from emotion.config import Config, default_out, from_dict
from emotion.data.datamodule import EmotionDataModule
from emotion.errors import EmotionError
from emotion.files import write_atomic
from emotion.metrics import figure, vs_majority
from emotion.training.checkpoint import CHECKPOINT_FILE
from emotion.training.run import decode_progress, fit_run

METRICS = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "f1_macro", "loss")


def cv_run(cfg: Config, folds: int, resume: bool = False, overwrite: bool = False, jobs: int = 1) -> dict:
    """Every fold's run folder, then the summary. ``resume``: folds already finished are read back, an
    interrupted one continues from its checkpoint, the rest train; ``overwrite``: every fold trains again.
    ``jobs``: folds trained at a time, each in its own process."""
    if folds < 2:
        raise EmotionError(f"--folds must be at least 2, got {folds}")
    if jobs < 1:
        raise EmotionError(f"--jobs must be at least 1, got {jobs}")

    if cfg.trainer.out is None:
        cfg.trainer.out = default_out("cv")
    out = Path(cfg.trainer.out)
    done, todo = {}, []
    for fold in range(folds):
        where = out / f"fold-{fold}"
        if resume and (where / "metrics.json").is_file() and not (where / CHECKPOINT_FILE).is_file():
            done[fold] = _summary_of(json.loads((where / "metrics.json").read_text()))  # finished before
        else:
            todo.append(fold)
    args = [(cfg.to_dict(), fold, folds, resume, overwrite) for fold in todo]
    if jobs > 1 and len(todo) > 1:
        import multiprocessing  # here: multiprocessing is optional or slow to import

        with ProcessPoolExecutor(min(jobs, len(todo)), mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_start_worker, initargs=(os.environ.get("KERAS_BACKEND"),)) as pool:
            done.update(zip(todo, pool.map(_train_fold, *zip(*args, strict=True)), strict=True))
    else:
        done.update((a[1], _train_fold(*a)) for a in args)
    runs = [{"fold": fold, **done[fold]} for fold in range(folds)]
    summary = {m: _summary([r["test"][m] for r in runs]) for m in METRICS}

    correct = sum(int(np.trace(r["test"]["confusion_matrix"])) for r in runs)
    n = sum(r["test"]["n"] for r in runs)
    majority = int(np.sum([np.sum(r["test"]["confusion_matrix"], axis=1) for r in runs], axis=0).max())
    pooled = {"accuracy": correct / n if n else 0.0, "n": n, "vs_majority": vs_majority(correct, n, majority)}
    result = {"folds": folds, "pooled": pooled, "preset": cfg.model.preset, "image_size": cfg.data.image_size,
              "data": cfg.data.data, "seed": cfg.seed, "summary": summary, "runs": runs, "config": cfg.to_dict()}
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "cv.json", json.dumps(result, indent=2))
    lines = [f"# {folds}-fold cross-validation: preset `{cfg.model.preset}`, {cfg.data.image_size}px, "
             f"data `{cfg.data.data}`", "", "| metric | mean ± std | " + " | ".join(f"fold {i}" for i in range(folds))
             + " |", "|---|---|" + "---|" * folds]
    for m in METRICS:
        s = summary[m]
        lines.append(f"| {m} | {figure(s['mean'])} ± {figure(s['std'])} | " + " | ".join(map(figure, s["folds"]))
                     + " |")
    write_atomic(out / "cv.md", "\n".join(lines) + "\n")
    return result


def _summary_of(metrics: dict) -> dict:
    return {k: metrics[k] for k in ("split", "test", "seconds")}


def _start_worker(backend: str | None) -> None:
    backends.select(backend)  # before Keras loads in this process: the backend's start-up settings


def _train_fold(config: dict, fold: int, folds: int, resume: bool, overwrite: bool) -> dict:
    """Fold ``fold``: its data module and a normal run folder ``OUT/fold-<fold>/``; its split, test and seconds."""
    cfg = from_dict(config)
    where = Path(cfg.trainer.out) / f"fold-{fold}"
    dm = EmotionDataModule(cfg.data, seed=cfg.seed, progress=decode_progress(cfg)).setup_fold(fold, folds)
    return _summary_of(fit_run(cfg, dm=dm, out=where, resume=resume and (where / CHECKPOINT_FILE).is_file(),
                               overwrite=overwrite))


def _summary(values: list) -> dict:
    """Mean and std over the folds where the metric is defined (None, null in JSON, where it is 0/0)."""
    defined = [v for v in values if v is not None]
    return {"mean": float(np.mean(defined)) if defined else None, "std": float(np.std(defined)) if defined else None,
            "folds": values, **({"undefined_in": [i for i, v in enumerate(values) if v is None]}
                                if len(defined) < len(values) else {})}

