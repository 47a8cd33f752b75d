"""`EmotionClassifier`: the LightningModule analogue. It owns what is learned (the network, the loss, the
optimizer and its schedule, the metrics) and hooks into training; `emotion.training.trainer.Trainer` owns how.

Override any of these in a subclass and train it with `emotion fit --module mypkg.mymod:MyClassifier` (or
``model: {module: mypkg.mymod:MyClassifier}`` in YAML):

    class FocalClassifier(EmotionClassifier):
        def configure_loss(self):
            return keras.losses.BinaryFocalCrossentropy(gamma=2.0)

        def configure_optimizers(self, steps_per_epoch, epochs):
            return keras.optimizers.AdamW(self.learning_rate, weight_decay=1e-4)

        def on_train_epoch_end(self, trainer, epoch, logs):
            print(epoch, logs["val_loss"])

Hooks, in the order the Trainer calls them: ``configure_model`` (once, under the trainer's precision),
``on_fit_start``, then per epoch ``on_train_epoch_start`` / ``on_train_epoch_end`` (``logs`` holds the epoch's
metrics), ``on_fit_end``. ``configure_loss``, ``configure_metrics`` and ``configure_optimizers`` are read when
the network is compiled (once per training phase). The network stays a plain Keras model: what a run saves loads
with ``keras.saving.load_model`` where `emotion` is not installed.

    module = EmotionClassifier("seed", input_shape=(256, 256, 3), num_classes=2, learning_rate=1e-3)
    module.compile(steps_per_epoch=7, epochs=20)
    module.model.summary()
"""

from __future__ import annotations

import importlib

import keras

from emotion.errors import EmotionError
from emotion.models import find_user_module
from emotion.models.presets import build_model


class EmotionClassifier:
    """What is learned: the network (a preset from the registry), the loss, the optimizer and its schedule, the
    metrics, and hooks the `Trainer` calls. Subclass it and override any of them (module docstring).

        class Focal(EmotionClassifier):
            def configure_loss(self):
                return keras.losses.CategoricalFocalCrossentropy(gamma=2.0)

        module = Focal("vgg-bn", input_shape=(48, 48, 1), num_classes=8)   # or: emotion fit --module mod:Focal
    """

    def __init__(self, preset: str = "seed", input_shape=(256, 256, 3), num_classes: int = 2,
                 learning_rate: float = 1e-3, lr_schedule: str = "constant", label_smoothing: float = 0.0,
                 precision: str | None = None, preset_args: dict | None = None):
        self.preset, self.input_shape, self.num_classes = preset, tuple(input_shape), num_classes
        self.learning_rate, self.lr_schedule, self.label_smoothing = learning_rate, lr_schedule, label_smoothing
        self.precision, self.preset_args = precision, dict(preset_args or {})
        self.trainer = None  # set by Trainer.fit
        self._model: keras.Model | None = None

    @classmethod
    def from_config(cls, model_cfg, input_shape, num_classes: int) -> EmotionClassifier:
        """Built from the ``model`` section of a config (`emotion fit` does this, with the data's shape)."""
        return cls(preset=model_cfg.preset, input_shape=input_shape, num_classes=num_classes,
                   learning_rate=model_cfg.learning_rate, lr_schedule=model_cfg.lr_schedule,
                   label_smoothing=model_cfg.label_smoothing, preset_args=model_cfg.preset_args)

    # ------------------------------------------------------------------------------------------ the network
    @property
    def model(self) -> keras.Model:
        if self._model is None:
            self._model = self.configure_model()
        return self._model

    @model.setter
    def model(self, value: keras.Model) -> None:
        self._model = value

    @property
    def built(self) -> bool:
        return self._model is not None

    @property
    def binary(self) -> bool:
        return self.num_classes == 2

    def configure_model(self) -> keras.Model:
        """The network: a preset from the registry (`emotion.models.presets.PRESETS`), with ``preset_args``."""
        return build_model(self.preset, self.input_shape, self.num_classes, self.precision, **self.preset_args)

    # ------------------------------------------------------------------------------------------ what is learned
    def configure_loss(self):
        """A Keras loss (object or function). Batches carry (n, 1) 0/1 labels for two classes, one-hot for more."""
        if self.binary:
            return keras.losses.BinaryCrossentropy(label_smoothing=self.label_smoothing)
        return keras.losses.CategoricalCrossentropy(label_smoothing=self.label_smoothing)

    def configure_metrics(self) -> list:
        if self.binary:
            return [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.Precision(name="precision"),
                    keras.metrics.Recall(name="recall")]
        return [keras.metrics.CategoricalAccuracy(name="accuracy")]

    def configure_optimizers(self, steps_per_epoch: int = 1, epochs: int = 1):
        """The optimizer, with its learning-rate schedule over ``epochs`` of ``steps_per_epoch`` steps."""
        lr = self.learning_rate
        if self.lr_schedule == "cosine":
            lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, steps_per_epoch * epochs))
        return keras.optimizers.Adam(learning_rate=lr)

    def compile(self, steps_per_epoch: int = 1, epochs: int = 1) -> keras.Model:
        self.model.compile(optimizer=self.configure_optimizers(steps_per_epoch, epochs), loss=self.configure_loss(),
                           metrics=self.configure_metrics())
        return self.model

    # ------------------------------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer) -> None:
        pass

    def on_train_epoch_start(self, trainer, epoch: int) -> None:
        pass

    def on_train_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        pass

    def on_fit_end(self, trainer) -> None:
        pass


def load_module_class(spec: str) -> type[EmotionClassifier]:
    """``"package.module:Class"`` -> the class, which must subclass `EmotionClassifier`."""
    mod_name, cls_name = find_user_module(spec)
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise EmotionError(f"cannot import {mod_name!r} for --module {spec}: {e}") from None
    cls = getattr(mod, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, EmotionClassifier)):
        raise EmotionError(f"--module {spec}: {cls_name!r} in {mod_name} is not a subclass of "
                           "emotion.models.module.EmotionClassifier")
    return cls
