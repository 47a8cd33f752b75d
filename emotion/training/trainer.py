"""`Trainer`: how a module is trained. It runs the loops (Keras `fit` underneath) and nothing else; what a run
writes, checks and measures are callbacks (`emotion.training.callbacks`), as in Lightning.

    seed_everything(0)
    dm = EmotionDataModule(cfg.data, seed=0).setup()
    module = EmotionClassifier("seed", dm.input_shape, dm.num_classes)
    trainer = Trainer(max_epochs=20, precision="float32", callbacks=default_callbacks(cfg, "runs/a"))
    trainer.fit(module, dm)                                    # or ckpt_path="runs/a/checkpoints/last.npz"
    trainer.test(module, dm)         # {"accuracy": .., "precision": .., "confusion_matrix": ..}
"""

from __future__ import annotations

import time

import keras
import numpy as np

from emotion import backends
from emotion.data.datamodule import EmotionDataModule
from emotion.errors import EmotionError, raise_if_stopped
from emotion.metrics import score
from emotion.models.module import EmotionClassifier
from emotion.models.surgery import freeze_features
from emotion.training.callbacks import Callback, EarlyStopping, EpochTimer
from emotion.training.checkpoint import assign, read_checkpoint


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """The backend's device setup, then Python, numpy and backend RNGs (`keras.utils.set_random_seed`)."""
    backends.configure(deterministic=deterministic)
    keras.utils.set_random_seed(seed)


class _Loop(keras.callbacks.Callback):
    """The Trainer's own link to each epoch: it sets the data order for the epoch (a function of the epoch
    number, so a resumed run sees the batches an uninterrupted one would), records the history and calls the
    module's epoch hooks. It runs before every other callback. After each batch it raises a Ctrl-C or SIGTERM
    that Python lost where it arrived (`emotion.errors.stops_as_interrupts`)."""

    def __init__(self, trainer: Trainer, loader, rng=None):
        super().__init__()
        self.trainer, self.loader, self.rng = trainer, loader, rng

    def on_epoch_begin(self, epoch, logs=None):
        if self.rng is not None:  # a resumed run: the global random state as it was after the last epoch, set
            backends.set_rng_state(self.rng)  # here, after Keras's build pass (which may draw from it)
            self.rng = None
        if hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(epoch + 1)
        self.trainer.module.on_train_epoch_start(self.trainer, epoch)

    def on_train_batch_end(self, batch, logs=None):
        raise_if_stopped()

    def on_epoch_end(self, epoch, logs=None):
        raise_if_stopped()
        for k, v in (logs or {}).items():
            self.trainer.history.setdefault(k, []).append(float(v))
        self.trainer.current_epoch = epoch + 1
        self.trainer.module.on_train_epoch_end(self.trainer, epoch, dict(logs or {}))


class Trainer:
    """``Trainer(max_epochs, precision, callbacks, ...)``; `fit(module, datamodule, ckpt_path=None)`.

    ``freeze_epochs`` N (transfer learning): the first N epochs train the head alone on frozen features, then the
    network is compiled again (a fresh optimizer) and every layer trains. ``precision``: the Keras dtype policy
    under which the module's `configure_model` builds the network.

        from emotion import EmotionClassifier, EmotionDataModule, Trainer
        from emotion.config import DataConfig

        dm = EmotionDataModule(DataConfig(data="../shared/data/web-happy-sad", image_size=64)).setup()
        module = EmotionClassifier("seed", dm.input_shape, dm.num_classes)
        history = Trainer(max_epochs=3).fit(module, dm)      # {"loss": [...], "val_accuracy": [...], ...}
    """

    def __init__(self, max_epochs: int = 20, precision: str = "float32", callbacks: list | None = None,
                 deterministic: bool = False, verbose: int = 1, freeze_epochs: int = 0, config: dict | None = None,
                 devices: int | str = 1, num_processes: int = 1):
        self.devices, self.devices_used, self.num_processes = devices, 1, num_processes
        self.max_epochs, self.precision, self.deterministic = max_epochs, precision, deterministic
        self.verbose, self.freeze_epochs, self.config = verbose, freeze_epochs, config or {}
        self.callbacks = list(callbacks) if callbacks is not None else [EpochTimer()]
        self.history: dict = {}
        self.module: EmotionClassifier | None = None
        self.datamodule: EmotionDataModule | None = None
        self.current_epoch = 0
        self.phase = 0
        self.fit_seconds = 0.0
        self.steps_per_epoch = 1

    @classmethod
    def from_config(cls, cfg, callbacks: list | None = None) -> Trainer:
        """From a `emotion.config.Config` (its ``trainer`` section; the whole config goes into checkpoints), or
        from a `TrainerConfig` alone."""
        t = getattr(cfg, "trainer", cfg)
        return cls(max_epochs=t.epochs, precision=t.precision, callbacks=callbacks, deterministic=t.deterministic,
                   verbose=t.verbose, freeze_epochs=t.freeze_epochs, devices=t.devices,
                   num_processes=t.num_processes,
                   config=cfg.to_dict() if hasattr(cfg, "trainer") else None)

    # -------------------------------------------------------------------------------------------- loops
    def build(self, module: EmotionClassifier) -> keras.Model:
        """The module's network, made by its `configure_model` under this trainer's precision (Keras's dtype
        policy, set while the layers are made) unless it is made already. With ``devices`` other than 1, the
        backend's data-parallel distribution is set first (`backends.data_parallel`), so the weights are made
        replicated on every device. With ``num_processes`` above 1 (after `backends.initialize_processes`), the
        distribution always spans every process's devices: ``devices`` then counts each process's."""
        if not module.built:
            self.devices_used = self.data_parallel(module)
            previous = keras.config.dtype_policy()
            keras.config.set_dtype_policy(self.precision)
            try:
                module.model = module.configure_model()
            finally:
                keras.config.set_dtype_policy(previous)
        return module.model

    def data_parallel(self, module: EmotionClassifier) -> int:
        try:
            return backends.data_parallel(self.devices)
        except backends.BackendError as e:
            raise EmotionError(str(e)) from None

    def phases(self) -> list[tuple[int, int, bool]]:
        """(first epoch, end epoch, features frozen) of each training phase."""
        n, frozen = self.max_epochs, self.freeze_epochs
        return [(0, frozen, True), (frozen, n, False)] if frozen else [(0, n, False)]

    def fit(self, module: EmotionClassifier, datamodule: EmotionDataModule, ckpt_path=None) -> dict:
        """Train ``module`` on ``datamodule``'s batches; with ``ckpt_path``, continue from that checkpoint."""
        self.module, self.datamodule = module, datamodule
        module.trainer = self
        ckpt = read_checkpoint(ckpt_path) if ckpt_path else None
        self.build(module)
        batch, n = datamodule.cfg.batch_size, self.devices_used
        if batch % n:
            over = f"--devices {n}" if self.num_processes == 1 else \
                f"the {n} devices of the {self.num_processes} processes"
            raise EmotionError(f"--batch-size {batch} is not a multiple of {over}: each step splits the "
                               "batch evenly over the devices")
        train = datamodule.train_dataloader()
        validation = datamodule.val_dataloader() if len(datamodule.val) else None
        self.steps_per_epoch = len(train)
        start = 0
        self.history = {}
        if ckpt is not None:
            start = int(ckpt["meta"]["epoch"])
            self.history = {k: list(v) for k, v in ckpt["meta"]["history"].items()}
            keyed = {f"{i}:{type(cb).__name__}": cb for i, cb in enumerate(self.callbacks)}
            for key, state in ckpt["callbacks"].items():
                if key in keyed:
                    keyed[key].load_state_dict(state)
        self.current_epoch = start
        for cb in self.callbacks:
            if isinstance(cb, Callback):
                cb.trainer = self
                cb.on_fit_start(self, module)
        module.on_fit_start(self)
        if ckpt is not None:
            assign(module.model.variables, ckpt["model"], "network")
        loop = _Loop(self, train, rng=ckpt["rng"] if ckpt is not None else None)
        t0 = time.perf_counter()
        stopped = ckpt["meta"]["phase"] if ckpt is not None and ckpt["meta"].get("stopped") else None
        for phase, (first, last, freeze) in enumerate(self.phases()):
            if last <= start:
                continue
            if phase == stopped:  # the interrupted run had stopped early in this phase: end it as it would have
                for cb in self.callbacks:
                    if isinstance(cb, EarlyStopping):
                        cb.finish_restored(module.model)
                ckpt = None
                continue
            self.phase = phase
            freeze_features(module.model, freeze)
            module.compile(steps_per_epoch=len(train), epochs=last - first)
            if ckpt is not None:
                if ckpt["meta"]["phase"] == phase and ckpt["optimizer"]:  # mid-phase: the optimizer goes on too
                    module.model.optimizer.build(module.model.trainable_variables)
                    assign(module.model.optimizer.variables, ckpt["optimizer"], "optimizer state")
                else:  # resumed at a phase boundary: this phase starts afresh, as it would have
                    for cb in self.callbacks:
                        if isinstance(cb, EarlyStopping):
                            cb.load_state_dict(None)
                ckpt = None
            # shuffle=False: the data module already shuffles, seeded per epoch. Keras's own shuffle would
            # reorder the batches again with Python's global `random`, which TensorFlow's fit consumes differently
            # from JAX's and PyTorch's, so the backends would see the same batches in different orders.
            module.model.fit(train, validation_data=validation, initial_epoch=max(first, start), epochs=last,
                             shuffle=False, callbacks=[loop, *self.callbacks], verbose=self.verbose)
        self.fit_seconds = time.perf_counter() - t0
        if self.num_processes > 1:  # the weights are the same on every process: each goes on alone from here
            module.model = local_copy(module.model)
        module.on_fit_end(self)
        for cb in self.callbacks:
            if isinstance(cb, Callback):
                cb.on_fit_end(self, module)
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

    def timings(self) -> dict:
        timer = next((cb for cb in self.callbacks if isinstance(cb, EpochTimer)), None)
        secs = (timer.seconds if timer else []) or [0.0]
        warm = secs[1:] or secs
        return {"fit": round(self.fit_seconds, 3), "first_epoch": round(secs[0], 3),
                "per_step": round(float(np.median(warm)) / max(self.steps_per_epoch, 1), 4)}


def local_copy(model: keras.Model) -> keras.Model:
    """``model`` as a plain (uncompiled) model on this process's devices alone, the distribution cleared: what
    follows training (test, save, plots) then runs in each process on its own, with no other process taking
    part. The weights come from the replicated copy every process holds."""
    weights = model.get_weights()
    keras.distribution.set_distribution(None)
    copy = keras.models.clone_model(model)
    copy.set_weights(weights)
    return copy
