"""The main job, end to end: `emotion fit` is this function.

    metrics = fit_run(load_config("configs/seed.yaml", {"data.data": "../shared/data/web-happy-sad"}))
"""

from __future__ import annotations

import sys
from pathlib import Path

from .config import Config
from .data import EmotionDataModule


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def report_data(dm: EmotionDataModule) -> None:
    for path, reason in dm.invalid:
        log(f"skipped invalid file: {path}: {reason}")
    log(f"data {dm.root}: classes {dm.class_names}; split {dm.split_sizes()}"
        + (f"; {len(dm.invalid)} invalid file(s) skipped, none changed" if dm.invalid else ""))
    faces = dm.face_counts()
    if faces:
        for path in dm.skipped:
            log(f"no face found, skipped: {path}")
        log(f"faces: {faces['cropped']} image(s) cropped to their largest face, {faces['kept_whole']} kept whole "
            f"and {faces['skipped']} skipped (no face found)")


def fit_run(cfg: Config, dm: EmotionDataModule | None = None, out: str | Path | None = None) -> dict:
    """Set up the data (unless given), train, test and write the run folder (``out``, default the config's)."""
    dm = dm or EmotionDataModule(cfg.data, seed=cfg.seed).setup()  # data errors surface before Keras loads
    report_data(dm)
    from .module import EmotionClassifier
    from .trainer import Trainer, seed_everything

    seed_everything(cfg.seed, cfg.trainer.deterministic)
    module = EmotionClassifier(cfg.model.preset, dm.input_shape, dm.num_classes, cfg.model.learning_rate,
                               cfg.trainer.lr_schedule, cfg.model.label_smoothing, cfg.model.precision)
    if cfg.model.init_from:
        from .infer import load_keras_model
        from .model import transfer_weights

        copied = transfer_weights(load_keras_model(cfg.model.init_from), module.model)
        log(f"started from {cfg.model.init_from}: weights of {copied} layer(s)")
    out = Path(out or cfg.trainer.out)
    trainer = Trainer(cfg.trainer)
    trainer.fit(module, dm, log_dir=out / "logs")
    if cfg.trainer.tta_flip:
        from .model import with_flip_tta

        module.model = with_flip_tta(module.model)
    return trainer.save_run(module, dm, out, config=cfg.to_dict(), seed=cfg.seed)
