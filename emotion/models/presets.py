"""Model presets: each a plain function returning an uncompiled Keras model, built by one registry.

    model = build_model("seed", input_shape=(256, 256, 3), num_classes=2)
    model.count_params()   # 3,696,625

Every model takes raw 0-255 pixels: rescaling is its first layer, so a saved `.keras` cannot be fed
differently scaled pixels than it was trained on. Two classes end in one sigmoid unit (P(second class));
more end in a softmax. `precision="mixed_bfloat16"` (or `"mixed_float16"`) builds the same layers with
Keras's mixed-precision policy: float32 weights, bfloat16/float16 compute, and a float32 head.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import keras
from keras import layers

from emotion.config import PRECISIONS
from emotion.errors import EmotionError

PRESETS: dict[str, Callable] = {}


def register(name: str):
    def wrap(fn):
        PRESETS[name] = fn
        return fn

    return wrap


def head(num_classes: int) -> layers.Layer:
    # under a mixed policy the probabilities (and so the loss) stay float32, as Keras's mixed-precision guide
    # advises; otherwise the head follows the global policy (float64 in `emotion parity`)
    mixed = keras.config.dtype_policy().compute_dtype in ("float16", "bfloat16")
    dtype = "float32" if mixed else None
    if num_classes == 2:
        return layers.Dense(1, activation="sigmoid", name="head", dtype=dtype)
    return layers.Dense(num_classes, activation="softmax", name="head", dtype=dtype)


def input_name(channels: int) -> str:
    """The input's name states its contract: raw 0-255 pixel values (the model rescales inside), RGB or gray.
    It is the name of the input in the `.keras` and in every export (ONNX, SavedModel signature, ...)."""
    return "gray_0_255" if channels == 1 else "rgb_0_255"


def model_input(input_shape) -> keras.KerasTensor:
    return keras.Input(tuple(input_shape), name=input_name(int(input_shape[-1])))


def build_model(preset: str, input_shape=(256, 256, 3), num_classes: int = 2,
                precision: str | None = None, **preset_args) -> keras.Model:
    """`precision`: one of PRECISIONS, set as Keras's dtype policy while the layers are made (each layer keeps
    it, in the model and in its `.keras` file) and put back afterwards; None: the global policy as it is.
    ``preset_args``: keyword arguments of the preset's function (``dropout=0.3`` for `seed-plus`, ...)."""
    if preset not in PRESETS:
        raise EmotionError(f"unknown preset {preset!r}; choose one of {', '.join(sorted(PRESETS))}")
    if num_classes < 2:
        raise EmotionError(f"need at least two classes, got {num_classes}")
    fn = PRESETS[preset]
    takes = [p for p in inspect.signature(fn).parameters if p not in ("input_shape", "num_classes")]
    unknown = sorted(set(preset_args) - set(takes))
    if unknown:
        raise EmotionError(f"preset {preset!r} takes no argument(s) {unknown}; it takes: {', '.join(takes) or 'none'}")
    if precision is not None and precision not in PRECISIONS:
        raise EmotionError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    previous = keras.config.dtype_policy()
    if precision is not None:
        keras.config.set_dtype_policy(precision)
    try:
        return fn(tuple(input_shape), num_classes, **preset_args)
    finally:
        keras.config.set_dtype_policy(previous)


@register("seed")
def seed(input_shape, num_classes):
    """The seed notebook's CNN, unchanged: three conv/max-pool blocks (16, 32, 16 filters), Dense(256)."""
    return keras.Sequential(
        [
            model_input(input_shape),
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


def augmentation(flip=True, rotation=0.04, zoom=0.1, translation=0.1, contrast=0.2, brightness=0.0, blur=0.0,
                 erasing=0.0) -> list[layers.Layer]:
    """Keras random layers: active in `fit` only, identity in `predict`/`evaluate`, the same on every backend.
    ``brightness`` (a share of the 0-255 range), ``blur`` (the most a Gaussian blur of sigma up to 1.5 is mixed
    in) and ``erasing`` (the most probability of one random patch blanked, as hands and hair hide faces) are off at
    0, so presets that do not ask for them are built as before."""
    out = [layers.RandomFlip("horizontal")] if flip else []
    out += [layers.RandomRotation(rotation, fill_mode="nearest"), layers.RandomZoom(zoom, fill_mode="nearest"),
            layers.RandomTranslation(translation, translation, fill_mode="nearest"),
            layers.RandomContrast(contrast, value_range=(0, 255))]
    if brightness:
        out.append(layers.RandomBrightness(brightness, value_range=(0, 255)))
    if blur:
        out.append(layers.RandomGaussianBlur(blur, kernel_size=5, sigma=(0.1, 1.5), value_range=(0, 255)))
    if erasing:
        out.append(layers.RandomErasing(erasing, value_range=(0, 255)))
    return out


def augmented_and_rescaled(inputs, **augment):
    """The stem of the stronger presets: `augmentation(**augment)` (training only), then Rescaling(1/255)."""
    x = inputs
    for layer in augmentation(**augment):
        x = layer(x)
    return layers.Rescaling(1.0 / 255)(x)


def conv_bn(x, filters: int, kernel: int = 3):
    x = layers.Conv2D(filters, kernel, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.Activation("relu")(x)


@register("seed-plus")
def seed_plus(input_shape, num_classes, dropout: float = 0.5):
    """The seed's CNN, unchanged, plus what its README promised and a small data set needs: augmentation
    (flip, ±11° rotation, 10% zoom, 5% shift, contrast; training only) and dropout before and after Dense(256).
    Same parameters as `seed` (3,696,625 at 256x256). A batch-norm + global-pooling variant of it reached only
    0.66 and 0.50 test accuracy on the first two folds of web-happy-sad (211 training photos, 20 epochs)."""
    inputs = model_input(input_shape)
    x = augmented_and_rescaled(inputs, rotation=0.03, zoom=0.1, translation=0.05, contrast=0.1)
    for filters in (16, 32, 16):
        x = layers.Conv2D(filters, 3, activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(256, activation="relu")(x)
    x = layers.Dropout(dropout)(x)
    return keras.Model(inputs, head(num_classes)(x), name="seed_plus")


@register("vgg-bn")
def vgg_bn(input_shape, num_classes, widths=(32, 64, 128, 256), dropout: float = 0.3, augment: dict | None = None):
    """A VGG-style net for small faces (FER2013's 48x48): four blocks of two 3x3 conv + batch norm
    (32, 64, 128, 256 filters) and max pooling, global average pooling, dropout, Dense(128), dropout, the head.
    Mild augmentation (flip, ±11° rotation, 8% zoom, 6% shift, contrast) runs in training only; FER2013's
    faces are already aligned, and stronger augmentation left this net underfitting in 15 epochs
    (train accuracy = val accuracy = 0.91). ``augment`` overrides `augmentation`'s strengths. ~1.2M parameters."""
    inputs = model_input(input_shape)
    x = augmented_and_rescaled(inputs, **{"rotation": 0.03, "zoom": 0.08, "translation": 0.06, "contrast": 0.2,
                                          **(augment or {})})
    for filters in widths:
        x = conv_bn(x, filters)
        x = conv_bn(x, filters)
        x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(128, activation="relu")(x)
    x = layers.Dropout(0.2)(x)
    return keras.Model(inputs, head(num_classes)(x), name="vgg_bn")
