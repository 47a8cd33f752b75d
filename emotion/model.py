"""Model presets: each a plain function returning an uncompiled Keras model, built by one registry.

    model = build_model("seed", input_shape=(256, 256, 3), num_classes=2)
    model.count_params()   # 3,696,625

Every model takes raw 0-255 pixels: rescaling is its first layer, so a saved `.keras` cannot be fed
differently scaled pixels than it was trained on. Two classes end in one sigmoid unit (P(second class));
more end in a softmax.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import layers

from .errors import EmotionError

PRESETS: dict[str, Callable] = {}


def register(name: str):
    def wrap(fn):
        PRESETS[name] = fn
        return fn

    return wrap


def head(num_classes: int) -> layers.Layer:
    if num_classes == 2:
        return layers.Dense(1, activation="sigmoid", name="head")
    return layers.Dense(num_classes, activation="softmax", name="head")


def build_model(preset: str, input_shape=(256, 256, 3), num_classes: int = 2) -> keras.Model:
    if preset not in PRESETS:
        raise EmotionError(f"unknown preset {preset!r}; choose one of {', '.join(sorted(PRESETS))}")
    if num_classes < 2:
        raise EmotionError(f"need at least two classes, got {num_classes}")
    return PRESETS[preset](tuple(input_shape), num_classes)


@register("seed")
def seed(input_shape, num_classes):
    """The seed notebook's CNN, unchanged: three conv/max-pool blocks (16, 32, 16 filters), Dense(256)."""
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Rescaling(1.0 / 255),
            layers.Conv2D(16, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(16, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(256, activation="relu"),
            head(num_classes),
        ],
        name="seed",
    )
