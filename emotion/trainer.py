"""`Trainer`: how a module is trained (Keras `fit` underneath), evaluated and saved as a run folder.

    seed_everything(0)
    dm = EmotionDataModule(cfg.data, seed=0).setup()
    module = EmotionClassifier("seed", dm.input_shape, dm.num_classes)
    trainer = Trainer(cfg.trainer)
    trainer.fit(module, dm)          # Keras progress bars, TensorBoard logs, epoch timings
    trainer.test(module, dm)         # {"accuracy": .., "precision": .., "confusion_matrix": ..}
    trainer.save_run(module, dm, "models/")   # .keras (reloaded and checked), metrics.json, plots
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import keras
import numpy as np

import backends

from . import plots
from .config import TrainerConfig
from .data import EmotionDataModule
from .errors import EmotionError
from .infer import write_meta
from .metrics import score
from .model import freeze_features
from .module import EmotionClassifier

MODEL_FILE = "imageclassifier.keras"
RELOAD_TOLERANCE = 1e-6


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Python, numpy and backend RNGs (`keras.utils.set_random_seed`), plus the backend's device setup."""
    keras.utils.set_random_seed(seed)
    backends.configure(deterministic=deterministic)


class EpochTimer(keras.callbacks.Callback):
    """Wall-clock seconds of each epoch (training and validation)."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []  # kept across the two fits of a frozen-then-unfrozen run

    def on_epoch_begin(self, epoch, logs=None):
        self._t = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._t)


class ScalarTensorBoard(keras.callbacks.Callback):
    """Epoch scalars to TensorBoard (`logs/train`, `logs/validation`, as Keras's own callback lays them out).

    Keras's `TensorBoard` callback needs TensorFlow installed; this one writes the same scalars through
    tensorboardX, so JAX- and PyTorch-only installs get logs too.
    """

    def __init__(self, log_dir: str | Path):
        super().__init__()
        self.log_dir = Path(log_dir)

    def on_train_begin(self, logs=None):
        from tensorboardX import SummaryWriter

        self.writers = {k: SummaryWriter(str(self.log_dir / k)) for k in ("train", "validation")}

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            which, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            self.writers[which].add_scalar(f"epoch_{name}", float(value), epoch)
        for w in self.writers.values():
            w.flush()

    def on_train_end(self, logs=None):
        for w in self.writers.values():
            w.close()


class Trainer:
    def __init__(self, cfg: TrainerConfig | None = None, callbacks: list | None = None):
        self.cfg = cfg or TrainerConfig()
        self.extra_callbacks = list(callbacks or [])
        self.history: dict = {}
        self.timer = EpochTimer()
        self.fit_seconds = 0.0

    # -------------------------------------------------------------------------------------------- loops
    def callbacks(self, log_dir: Path | None) -> list:
        cbs = [self.timer, *self.extra_callbacks]
        if self.cfg.tensorboard and log_dir is not None:
            cbs.append(ScalarTensorBoard(log_dir))
        if self.cfg.early_stopping or self.cfg.restore_best:
            cbs.append(keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=self.cfg.early_stopping or self.cfg.epochs,
                restore_best_weights=self.cfg.restore_best, verbose=min(self.cfg.verbose, 1)))
        return cbs

    def fit(self, module: EmotionClassifier, dm: EmotionDataModule, log_dir: Path | None = None) -> dict:
        """Keras `fit`. With ``freeze_epochs`` N (transfer learning), the first N epochs train the head alone
        on frozen features, then the model is compiled again (a fresh optimizer) and every layer trains."""
        train = dm.train_dataloader()
        validation = dm.val_dataloader() if len(dm.val) else None
        epochs, frozen = self.cfg.epochs, self.cfg.freeze_epochs
        phases = [(0, frozen, True), (frozen, epochs, False)] if frozen else [(0, epochs, False)]
        t0 = time.perf_counter()
        self.history = {}
        for first, last, freeze in phases:
            freeze_features(module.model, freeze)
            module.compile(steps_per_epoch=len(train), epochs=last - first)
            # shuffle=False: the data module already shuffles, seeded per epoch. Keras's own shuffle would
            # reorder the batches again with Python's global `random`, which TensorFlow's fit consumes differently
            # from JAX's and PyTorch's, so the backends would see the same batches in different orders.
            hist = module.model.fit(train, validation_data=validation, initial_epoch=first, epochs=last,
                                    shuffle=False, callbacks=self.callbacks(log_dir), verbose=self.cfg.verbose)
            for k, vals in hist.history.items():
                self.history.setdefault(k, []).extend(float(v) for v in vals)
        self.fit_seconds = time.perf_counter() - t0
        self.steps_per_epoch = len(train)
        return self.history

    def predict(self, module: EmotionClassifier | keras.Model, batches) -> np.ndarray:
        model = module.model if isinstance(module, EmotionClassifier) else module
        return np.asarray(model.predict(batches, verbose=0))

    def _score(self, module, dm: EmotionDataModule, split: str) -> dict:
        part = getattr(dm, split)
        if not len(part):
            raise EmotionError(f"the {split} split is empty")
        return score(self.predict(module, dm.dataloader(split)), part.labels, dm.class_names)

    def validate(self, module, dm: EmotionDataModule) -> dict:
        return self._score(module, dm, "val")

    def test(self, module, dm: EmotionDataModule) -> dict:
        return self._score(module, dm, "test")

    # -------------------------------------------------------------------------------------------- run folder
    def timings(self) -> dict:
        secs = getattr(self.timer, "seconds", []) or [0.0]
        warm = secs[1:] or secs
        steps = max(getattr(self, "steps_per_epoch", 1), 1)
        return {"fit": round(self.fit_seconds, 3), "first_epoch": round(secs[0], 3),
                "per_step": round(float(np.median(warm)) / steps, 4)}

    def save_run(self, module: EmotionClassifier, dm: EmotionDataModule, out: str | Path,
                 config: dict | None = None, seed: int = 0) -> dict:
        """Write the run folder; the saved `.keras` is reloaded and must predict what the live model does."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        path = out / MODEL_FILE
        module.model.save(path)
        check = dm.test if len(dm.test) else dm.val
        verify_reload(module.model, path, check.images[:64])
        write_meta(path, model_meta(module.model, dm, module.preset))

        test = self.test(module, dm) if len(dm.test) else None
        val = self.validate(module, dm) if len(dm.val) else None
        metrics = {
            **backends.describe(),
            "preset": module.preset,
            "image_size": dm.cfg.image_size,
            "color": dm.cfg.color,
            "seed": seed,
            "class_names": dm.class_names,
            "params": int(module.model.count_params()),
            "split": dm.split_sizes(),
            "invalid_files": [{"path": p, "reason": r} for p, r in dm.invalid],
            "faces": dm.face_counts(),
            "history": self.history,
            "val": val,
            "test": test,
            "seconds": self.timings(),
            "config": config or {},
        }
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        if self.history:
            plots.history(self.history, out / "history.png")
        sample = dm.test if len(dm.test) else dm.train
        shown = sample_indices(sample.labels, 4)
        probs = self.predict(module, sample.images[shown].astype(np.float32))  # only the four it shows
        plots.samples(sample.images[shown], sample.labels[shown], dm.class_names, out / "samples.png", probs)
        if test is not None:
            plots.confusion(test["confusion_matrix"], dm.class_names, out / "confusion.png")
        return metrics


def sample_indices(labels, n: int = 4) -> np.ndarray:
    """The first images of each class in turn (class 0, class 1, ..., class 0, ...), ``n`` in all: a sample
    grid that shows every class, not the first ``n`` files of the first class."""
    labels = np.asarray(labels)
    queues = [list(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    out = []
    while len(out) < min(n, len(labels)):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return np.array(out, dtype=int)


def reference_inputs(shape, n: int = 4) -> np.ndarray:
    """Generated images on which a model's outputs are recorded at training time (`model_meta`), so a copy of
    the model can be checked anywhere, under any backend."""
    return np.random.default_rng(0).integers(0, 256, (n, *shape), dtype=np.uint8)


def model_meta(model: keras.Model, dm: EmotionDataModule, preset: str) -> dict:
    """What a `.keras` carries for its users (`emotion.infer.read_meta`)."""
    from . import __version__
    from .faces import make_detector

    ref = reference_inputs(model.input_shape[1:])
    return {
        "class_names": dm.class_names,
        "faces": "crop" if dm.cfg.faces in ("crop", "given") else "none",
        # trained on crops: the margin they were cut with; on given faces: the detector's own at inference
        "margin": make_detector(dm.cfg.detector).margin if dm.cfg.faces == "crop" else None,
        "detector": dm.cfg.detector,
        "image_size": dm.cfg.image_size,
        "color": dm.cfg.color,
        "preset": preset,
        "emotion_version": __version__,
        **backends.describe(),
        "reference": {"inputs": "numpy default_rng(0).integers(0, 256, (4, H, W, C), uint8)",
                      "outputs": np.asarray(model.predict(ref.astype(np.float32), verbose=0)).tolist()},
    }


def verify_reload(model: keras.Model, path: str | Path, images: np.ndarray, tolerance=RELOAD_TOLERANCE) -> float:
    """Reload ``path`` and compare its predictions on ``images`` with ``model``'s; raise past ``tolerance``."""
    x = np.asarray(images, dtype=np.float32)
    reloaded = keras.saving.load_model(path)
    delta = float(np.max(np.abs(model.predict(x, verbose=0) - reloaded.predict(x, verbose=0)))) if len(x) else 0.0
    if not delta <= tolerance:
        raise EmotionError(f"reloaded {path} predicts differently from the trained model: max |dP| = {delta:.3g} "
                           f"> {tolerance:g}")
    return delta
