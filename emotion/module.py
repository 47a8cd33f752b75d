"""`EmotionClassifier`: the LightningModule analogue. What is learned (model, loss, optimizer, metrics),
kept apart from how it is trained (`emotion.trainer.Trainer`).

    module = EmotionClassifier("seed", input_shape=(256, 256, 3), num_classes=2, learning_rate=1e-3)
    module.compile(steps_per_epoch=7, epochs=20)
    module.model.summary()
"""

from __future__ import annotations

import keras

from .model import build_model


class EmotionClassifier:
    def __init__(self, preset: str = "seed", input_shape=(256, 256, 3), num_classes: int = 2,
                 learning_rate: float = 1e-3, lr_schedule: str = "constant", label_smoothing: float = 0.0,
                 precision: str | None = None):
        self.preset, self.num_classes = preset, num_classes
        self.learning_rate, self.lr_schedule, self.label_smoothing = learning_rate, lr_schedule, label_smoothing
        self.model = build_model(preset, input_shape, num_classes, precision)

    @property
    def binary(self) -> bool:
        return self.num_classes == 2

    def loss(self):
        # batches carry one-hot labels for more than two classes (emotion.data.make_batches)
        if self.binary:
            return keras.losses.BinaryCrossentropy(label_smoothing=self.label_smoothing)
        return keras.losses.CategoricalCrossentropy(label_smoothing=self.label_smoothing)

    def metrics(self) -> list:
        if self.binary:
            return [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.Precision(name="precision"),
                    keras.metrics.Recall(name="recall")]
        return [keras.metrics.CategoricalAccuracy(name="accuracy")]

    def optimizer(self, steps_per_epoch: int = 1, epochs: int = 1):
        lr = self.learning_rate
        if self.lr_schedule == "cosine":
            lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, steps_per_epoch * epochs))
        return keras.optimizers.Adam(learning_rate=lr)

    def compile(self, steps_per_epoch: int = 1, epochs: int = 1) -> keras.Model:
        self.model.compile(optimizer=self.optimizer(steps_per_epoch, epochs), loss=self.loss(),
                           metrics=self.metrics())
        return self.model

