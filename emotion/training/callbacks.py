"""Callbacks: everything a run does besides the loop. `emotion fit` uses `default_callbacks`; a user can pass
their own list to `Trainer(callbacks=[...])`, drop one, or add to it.

A `Callback` is a Keras callback (``on_epoch_end``, ``on_train_batch_end``, ... with ``self.model``) plus
Lightning's fit-level hooks ``on_fit_start(trainer, module)`` / ``on_fit_end(trainer, module)``, a
``state_dict``/``load_state_dict`` pair that `Checkpoint` saves and restores, and ``on_model_written(trainer,
module, path)``, which `RunFolder` calls with the model file before it is put in place (raise to stop it).
Plain Keras callbacks work too.

    trainer = Trainer(max_epochs=20, callbacks=default_callbacks(cfg, "runs/a") + [MyCallback()])
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from pathlib import Path

import keras
import numpy as np

from emotion import backends
from emotion.errors import EmotionError
from emotion.guard import Limits
from emotion.modelfile import load_keras_model, write_meta
from emotion.training.checkpoint import CHECKPOINT_FILE, save_checkpoint
from emotion.training.runfolder import MODEL_FILE, atomic_path, model_meta, sample_indices, write_json

RELOAD_TOLERANCE = 1e-6


class Callback(keras.callbacks.Callback):
    trainer = None  # set by Trainer.fit

    def on_fit_start(self, trainer, module) -> None:
        pass

    def on_fit_end(self, trainer, module) -> None:
        pass

    def on_model_written(self, trainer, module, path: Path) -> None:
        pass

    def state_dict(self) -> dict:
        """JSON-able values and numpy arrays that let a resumed run continue where this one stopped."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


# ------------------------------------------------------------------------------------------ measurements
class EpochTimer(Callback):
    """Wall-clock seconds of each epoch (training and validation), kept across phases and resumes."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._t)

    def state_dict(self) -> dict:
        return {"seconds": self.seconds}

    def load_state_dict(self, state: dict) -> None:
        self.seconds = [float(s) for s in state.get("seconds", [])]


class ScalarTensorBoard(Callback):
    """Epoch scalars to TensorBoard (`logs/train`, `logs/validation`, as Keras's own callback lays them out).

    Keras's `TensorBoard` callback needs TensorFlow installed; this one writes the same scalars through
    tensorboardX, so JAX- and PyTorch-only installs get logs too.
    """

    def __init__(self, log_dir: str | Path):
        super().__init__()
        self.log_dir = Path(log_dir)
        self.writers = None

    def on_fit_start(self, trainer, module):
        from tensorboardX import SummaryWriter  # here: tensorboardX is optional or slow to import

        self.writers = {k: SummaryWriter(str(self.log_dir / k)) for k in ("train", "validation")}

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            which, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            self.writers[which].add_scalar(f"epoch_{name}", float(value), epoch)
        for w in self.writers.values():
            w.flush()

    def on_fit_end(self, trainer, module):
        for w in self.writers.values():
            w.close()


class EarlyStopping(keras.callbacks.EarlyStopping, Callback):
    """Keras's `EarlyStopping`, with its counters (and best weights) saved in checkpoints, so a resumed run stops
    where the uninterrupted one would."""

    _restored: dict | None = None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)  # resets the counters at the start of every fit() (each training phase)...
        if self._restored is not None:  # ...but a resumed run continues with the interrupted one's
            self._apply(self._restored)
            self._restored = None

    def finish_restored(self, model) -> None:
        """A resumed run whose checkpoint was written after this callback had stopped training: end the phase as
        `on_train_end` would have (the best epoch's weights, with ``restore_best_weights``)."""
        if self._restored is not None:
            self._apply(self._restored)
            self._restored = None
        if self.restore_best_weights and self.best_weights is not None:
            model.set_weights(self.best_weights)

    def _apply(self, state: dict) -> None:
        self.wait, self.best, self.best_epoch = int(state["wait"]), float(state["best"]), int(state["best_epoch"])
        n = int(state.get("n_best", 0))
        self.best_weights = [np.asarray(state[f"best_{i}"]) for i in range(n)] if n else None

    def state_dict(self) -> dict:
        best = self.best_weights or []
        out = {"wait": int(self.wait), "best": float(self.best if self.best is not None else np.inf),
               "best_epoch": int(self.best_epoch), "n_best": len(best)}
        out.update({f"best_{i}": np.asarray(w) for i, w in enumerate(best)})
        return out

    def load_state_dict(self, state: dict) -> None:
        self._restored = state


# ------------------------------------------------------------------------------------------ the model at the end
class KeepInit(Callback):
    """At the end of training (after the best epoch is restored), mix the starting model's weights back in:
    `emotion.models.surgery.mix_weights` with share ``keep`` (``model.keep_init``): what it gains and costs is
    measured in docs/faces.md."""

    def __init__(self, init_from: str, keep: float, limits=None):
        super().__init__()
        self.init_from, self.keep, self.limits = init_from, keep, limits

    def on_fit_end(self, trainer, module):
        from emotion.models.surgery import mix_weights  # here, so that the framework loads only when needed

        mix_weights(load_keras_model(self.init_from, self.limits), module.model, self.keep)


class LogitAdjust(Callback):
    """At the end of training (after the best epoch is restored, before the flip TTA wraps the network), move the
    head's prior: `emotion.models.surgery.adjust_logits` with the training split's images per class and
    ``trainer.logit_adjust``; what the run folder saves and tests is the adjusted model."""

    def __init__(self, tau: float):
        super().__init__()
        self.tau = tau

    def on_fit_end(self, trainer, module):
        from emotion.models.surgery import adjust_logits  # here, so that the framework loads only when needed

        dm = trainer.datamodule
        counts = np.bincount(np.asarray(dm.train.labels, dtype=np.int64), minlength=dm.num_classes)
        adjust_logits(module.model, counts, self.tau)


class FlipTTA(Callback):
    """At the end of training, wrap the network in `emotion.models.surgery.with_flip_tta` (mean of image and
    mirror): what the run folder saves and tests is the wrapped model."""

    def on_fit_end(self, trainer, module):
        from emotion.models.surgery import with_flip_tta  # here, so that the framework loads only when needed

        module.model = with_flip_tta(module.model)


def plain_copy(model: keras.Model) -> keras.Model:
    """The trained network as a plain, uncompiled Keras model: no optimizer state and no loss or metric to
    deserialize, so it loads with `keras.saving.load_model` anywhere Keras is (the optimizer state lives in the
    checkpoint)."""
    compiled = model.compiled
    model.compiled = False  # clone_model compiles the copy as its source was (Keras 3.15): optimizer state and all
    try:
        copy = keras.models.clone_model(model)
    finally:
        model.compiled = compiled
    copy.set_weights(model.get_weights())
    return copy


def verify_reload(model: keras.Model, path: str | Path, images: np.ndarray, tolerance=RELOAD_TOLERANCE) -> float:
    """Reload ``path`` and compare its predictions on ``images`` with ``model``'s; raise past ``tolerance``."""
    x = np.asarray(images, dtype=np.float32)
    # through the guard like every load; its size limit raised to the file (ours, just written: never refused
    # for being big after hours of training)
    reloaded = load_keras_model(path, Limits().at_least(2 * Path(path).stat().st_size))
    delta = float(np.max(np.abs(model.predict(x, verbose=0) - reloaded.predict(x, verbose=0)))) if len(x) else 0.0
    if not delta <= tolerance:
        raise EmotionError(f"reloaded {path} predicts differently from the trained model: max |dP| = {delta:.3g} "
                           f"> {tolerance:g}")
    return delta


class ReloadCheck(Callback):
    """The model file a run writes must load and predict what the live model does (on up to 64 held-out
    images), before it replaces anything."""

    def __init__(self, tolerance: float = RELOAD_TOLERANCE):
        super().__init__()
        self.tolerance = tolerance
        self.delta: float | None = None

    def on_model_written(self, trainer, module, path):
        dm = trainer.datamodule
        check = dm.test if len(dm.test) else dm.val if len(dm.val) else dm.train
        self.delta = verify_reload(module.model, path, check.images[:64], self.tolerance)


# ------------------------------------------------------------------------------------------ checkpoints
class Checkpoint(Callback):
    """At the end of every epoch, ``<out>/checkpoints/last.npz``: every variable of the network (weights and the
    augmentation and dropout layers' random state), the optimizer's (moments, step count), the framework's
    global random state where training draws from it (`backends.rng_state`), the epoch, the history so far and
    each callback's `state_dict`. (Keras's `BackupAndRestore` keeps weights, optimizer and epoch, but neither
    random state nor history nor callback state: a run it resumes takes other augmentations and dropout masks.)
    Written to a temporary name and renamed, so a kill leaves the previous checkpoint whole. The data order is a
    function of the epoch (`emotion.data.batches.make_batches`), so nothing else is needed to continue exactly.
    Removed once the run folder is complete (keep it with ``keep=True``)."""

    def __init__(self, path: str | Path, keep: bool = False):
        super().__init__()
        self.path, self.keep = Path(path), keep

    def on_epoch_end(self, epoch, logs=None):
        save_checkpoint(self.path, self.trainer, epoch + 1)

    def on_fit_end(self, trainer, module):
        if not self.keep and self.path.exists():
            self.path.unlink()
            if not any(self.path.parent.iterdir()):
                self.path.parent.rmdir()


# ------------------------------------------------------------------------------------------ the run folder
class RunFolder(Callback):
    """Write the run folder at the end of training: the model (plain, reloaded and checked by `ReloadCheck` and
    any other `on_model_written` hook before it replaces anything), `metrics.json`, history, sample and confusion
    plots. Each file goes to a temporary name first and is renamed into place; the model and `metrics.json`
    carry the same ``run_id``. With ``write=False`` (a training process other than process 0) it computes the
    same `metrics` and writes nothing."""

    def __init__(self, out: str | Path, config: dict | None = None, write: bool = True):
        super().__init__()
        self.out, self.config, self.write = Path(out), config or {}, write
        self.metrics: dict | None = None

    def on_fit_end(self, trainer, module):
        dm = trainer.datamodule
        run_id = uuid.uuid4().hex if self.write else None
        if self.write:
            model = plain_copy(module.model)
            meta = model_meta(model, dm, module.preset)
            meta["run_id"] = run_id
            with atomic_path(self.out / MODEL_FILE) as tmp:
                os.unlink(tmp)  # Keras writes the file itself (and insists on the .keras suffix)
                model.save(tmp)
                write_meta(tmp, meta)
                for cb in trainer.callbacks:
                    if isinstance(cb, Callback):
                        cb.on_model_written(trainer, module, tmp)

        test = trainer.test(module, dm) if len(dm.test) else None
        val = trainer.validate(module, dm) if len(dm.val) else None
        metrics = {
            **backends.describe(),
            "run_id": run_id,
            "preset": module.preset,
            "module": f"{type(module).__module__}:{type(module).__qualname__}",
            "image_size": dm.cfg.image_size,
            "color": dm.cfg.color,
            "seed": self.config.get("seed", 0),
            "class_names": dm.class_names,
            "params": int(module.model.count_params()),
            "split": dm.split_sizes(),
            "invalid_files": [{"path": p, "reason": r} for p, r in dm.invalid],
            "faces": dm.face_counts(),
            "mixed_in": dm.mixed_in,
            "history": trainer.history,
            "val": val,
            "test": test,
            "seconds": trainer.timings(),
            "training_devices": trainer.devices_used,
            "training_processes": trainer.num_processes,
            "config": self.config,
        }
        if self.write:
            write_json(self.out / "metrics.json", metrics)
            self._plots(trainer, module, test)
        self.metrics = metrics

    def _plots(self, trainer, module, test) -> None:
        from emotion import plots  # here, so that the framework loads only when needed

        dm = trainer.datamodule
        with tempfile.TemporaryDirectory(dir=self.out, prefix=".plots-") as tmp:  # plots: same rule
            tmp = Path(tmp)
            made = []
            if trainer.history:
                plots.history(trainer.history, tmp / "history.png")
                made.append("history.png")
            sample = dm.test if len(dm.test) else dm.train
            shown = sample_indices(sample.labels, 4)
            probs = trainer.predict(module, sample.images[shown].astype(np.float32))
            plots.samples(sample.images[shown], sample.labels[shown], dm.class_names, tmp / "samples.png", probs)
            made.append("samples.png")
            if test is not None:
                plots.confusion(test["confusion_matrix"], dm.class_names, tmp / "confusion.png")
                made.append("confusion.png")
            for name in made:
                os.replace(tmp / name, self.out / name)


def default_callbacks(cfg, out: str | Path, write: bool = True, limits=None) -> list:
    """What `emotion fit` runs with, from a `emotion.config.Config`: timing, TensorBoard, early stopping, flip TTA,
    the reload check, the run folder and checkpoints (in the order their end-of-fit hooks run).

    ``write=False`` (a training process other than process 0): nothing is written; each callback that writes is
    a plain `Callback` in its place (a checkpoint keys callback states by position, so the list is the same,
    place for place, on every process) and the `RunFolder` only computes the metrics."""
    t, out = cfg.trainer, Path(out)

    def writing(cb):
        return cb if write else Callback()

    cbs: list = [EpochTimer()]
    if t.tensorboard:
        cbs.append(writing(ScalarTensorBoard(out / "logs")))
    if t.early_stopping or t.restore_best:
        cbs.append(EarlyStopping(monitor="val_loss", patience=t.early_stopping or t.epochs,
                                 restore_best_weights=t.restore_best, verbose=min(t.verbose, 1) if write else 0))
    if cfg.model.keep_init:
        cbs.append(KeepInit(cfg.model.init_from, cfg.model.keep_init, limits))
    if t.logit_adjust:
        cbs.append(LogitAdjust(t.logit_adjust))
    if t.tta_flip:
        cbs.append(FlipTTA())
    cbs += [writing(ReloadCheck()), RunFolder(out, cfg.to_dict(), write=write)]
    if t.checkpoint:
        cbs.append(writing(Checkpoint(out / CHECKPOINT_FILE)))
    return cbs
