"""Weight surgery on built networks, apart from the networks themselves (`emotion.models.presets`): start from
another model's weights (`transfer_weights`), mix them back in (`mix_weights`, WiSE-FT), freeze all but the head,
wrap a trained model for inference and for test-time flips, move its head's prior (`adjust_logits`), and
average several trained models (`ensemble`).

    copied = transfer_weights(shipped, fresh)        # layers copied; the head too where its shape matches
    model = with_flip_tta(model)                     # the mean of the model on each face and its mirror
    adjust_logits(model, train_counts, 0.5)          # rare classes answered more often (logit adjustment)
    model = ensemble([seed0, seed1])                 # the mean of two networks' probabilities
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from emotion.errors import EmotionError
from emotion.models.presets import model_input

ENSEMBLE = "ensemble"  # the name of the layer that averages an ensemble's members


def unwrap(model: keras.Model) -> keras.Model:
    """The trained network inside a `with_flip_tta` wrapper (or the model itself)."""
    if any(layer.name == "flip_tta" for layer in model.layers):
        return next(layer for layer in model.layers if isinstance(layer, keras.Model))
    return model


def members(model: keras.Model) -> list[keras.Model]:
    """The models an `ensemble` averages (each as it was given, flip-TTA wrapper and all), or ``[model]``."""
    if any(layer.name == ENSEMBLE for layer in model.layers):
        return [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return [model]


def _weighted_layers(model: keras.Model) -> list[layers.Layer]:
    """The layers with weights of the network inside a flip-TTA wrapper (or of the model), in order."""
    if len(members(model)) > 1:
        raise EmotionError(f"{model.name!r} is an ensemble of {len(members(model))} networks: take one of them "
                           "first (python scripts/derive_model.py MODEL --member 0 --out RUN)")
    return [layer for layer in unwrap(model).layers if layer.weights]


def transfer_weights(source: keras.Model, target: keras.Model) -> int:
    """Copy ``source``'s weights into ``target`` layer by layer (both from one preset and input shape); the
    head is copied too where its shape matches (same number of classes), else it keeps its fresh weights.
    Returns the number of layers copied."""
    src, dst = _weighted_layers(source), _weighted_layers(target)
    shapes = [[tuple(w.shape) for w in layer.weights] for layer in src]
    wanted = [[tuple(w.shape) for w in layer.weights] for layer in dst]
    body = slice(0, -1)  # every layer but the head
    if len(src) != len(dst) or shapes[body] != wanted[body]:
        raise EmotionError(f"cannot start from {source.name!r} (input {source.input_shape[1:]}): it was built from "
                           f"another preset or input size than {target.name!r} (input {target.input_shape[1:]})")
    copied = 0
    for s, d, a, b in zip(src, dst, shapes, wanted, strict=True):
        if a == b:
            d.set_weights(s.get_weights())
            copied += 1
    return copied


def mix_weights(source: keras.Model, target: keras.Model, keep: float) -> int:
    """WiSE-FT (Wortsman et al., 2022, "Robust fine-tuning of zero-shot models"): each of ``target``'s weights
    becomes ``keep * source + (1 - keep) * target``, layer by layer as `transfer_weights` pairs them; a layer whose
    shapes differ (a head for other classes) keeps ``target``'s. Returns the number of layers mixed."""
    src, dst = _weighted_layers(source), _weighted_layers(target)
    if len(src) != len(dst):
        raise EmotionError(f"cannot mix {source.name!r} into {target.name!r}: other layers")
    mixed = 0
    for s, d in zip(src, dst, strict=True):
        a, b = s.get_weights(), d.get_weights()
        if [w.shape for w in a] == [w.shape for w in b]:
            d.set_weights([keep * x + (1 - keep) * y for x, y in zip(a, b, strict=True)])
            mixed += 1
    return mixed


def freeze_features(model: keras.Model, frozen: bool) -> None:
    """Freeze (or unfreeze) every layer but the head. Frozen batch-norm layers run in inference mode."""
    for layer in model.layers:
        layer.trainable = not frozen or layer.name == "head"


def for_inference(model: keras.Model) -> keras.Model:
    """``model`` wrapped so that it is always called with ``training=False``. Keras's exporters trace
    ``model.__call__`` with no ``training`` argument, and its random preprocessing layers then default to
    training mode: a model with augmentation exported as it is either fails (tf2onnx has no random ops) or
    augments every input it serves. The wrapper keeps the input's name and the model's weights."""
    inputs = keras.Input(model.input_shape[1:], name=model.inputs[0].name)
    return keras.Model(inputs, model(inputs, training=False), name=model.name)


def with_flip_tta(model: keras.Model) -> keras.Model:
    """Test-time augmentation for mirror-symmetric tasks (faces): the mean of the model's outputs on the image
    and on its left-right mirror. A plain functional model (`keras.ops.flip`), so it saves, loads on every
    backend and exports like any other; training is unchanged (apply after `fit`)."""
    inputs = model_input(model.input_shape[1:])
    mirrored = keras.ops.flip(inputs, axis=2)
    outputs = layers.Average(name="flip_tta")([model(inputs), model(mirrored)])
    return keras.Model(inputs, outputs, name=f"{model.name}_tta")


def restrict_classes(model: keras.Model, keep: list[int]) -> keras.Model:
    """A model that answers among ``keep`` (indices of ``model``'s softmax classes) only, with no retraining:
    the same network with a new head whose logits are the kept rows of the old one. For two kept classes the head
    is one sigmoid unit on the difference of their logits, ``P(second) = sigmoid(z_b - z_a)``, exactly the old
    model's probability of the second class given that it is one of the two (the two-class contract: P > 0.5
    means the second class). A flip-TTA wrapper is kept around the new network.

        happy_sad = restrict_classes(emotions, [EIGHT.index("happy"), EIGHT.index("sad")])

    An `ensemble` is restricted member by member (the mean of the restricted members).
    """
    if len(members(model)) > 1:
        return ensemble([restrict_classes(m, keep) for m in members(model)], name=model.name)
    inner = unwrap(model)
    head = inner.get_layer("head")
    kernel, bias = head.get_weights()
    if kernel.shape[1] < 3 or len(keep) < 2 or len(set(keep)) != len(keep) or not all(
            0 <= k < kernel.shape[1] for k in keep):
        raise EmotionError(f"cannot keep classes {keep} of a {kernel.shape[1]}-class softmax head")
    features = head.input
    if len(keep) == 2:
        a, b = keep
        new_head = layers.Dense(1, activation="sigmoid", name="head", dtype=head.dtype_policy)
        weights = [(kernel[:, b] - kernel[:, a])[:, None], bias[b:b + 1] - bias[a:a + 1]]
    else:
        new_head = layers.Dense(len(keep), activation="softmax", name="head", dtype=head.dtype_policy)
        weights = [kernel[:, keep], bias[keep]]
    restricted = keras.Model(inner.inputs, new_head(features), name=inner.name)
    new_head.set_weights(weights)
    return with_flip_tta(restricted) if inner is not model else restricted


def adjust_logits(model: keras.Model, counts, tau: float) -> keras.Model:
    """Logit adjustment after training (Menon et al., ICLR 2021, "Long-tail learning via logit adjustment"): the
    head's logits minus ``tau * log(prior)``, the prior being ``counts`` (training examples per class), written into
    the head's bias in place (so the model saves, loads and exports as before). ``tau`` 0 leaves the model as
    trained (best plain accuracy on data distributed as the training set); 1 aims at the best balanced accuracy
    (mean recall over the classes): rare classes are answered more often. A two-class sigmoid head moves its one
    logit, ``log P(second)/P(first)``, by ``tau * log(prior_second / prior_first)``. An `ensemble`'s members
    are each adjusted. Returns ``model``."""
    if len(members(model)) > 1:
        for m in members(model):
            adjust_logits(m, counts, tau)
        return model
    head = unwrap(model).get_layer("head")
    kernel, bias = head.get_weights()
    counts = np.asarray(counts, dtype=np.float64)
    classes = max(2, kernel.shape[1])
    if counts.shape != (classes,) or not np.all(np.isfinite(counts)) or (counts < 0).any() or not 0 <= tau <= 1:
        raise EmotionError(f"logit adjustment needs {classes} non-negative class counts and tau in [0, 1], "
                           f"got {counts.tolist()} and {tau}")
    log_prior = np.log(np.maximum(counts, 1) / np.maximum(counts, 1).sum())  # a class with no example: one
    shift = log_prior[1:2] - log_prior[0:1] if kernel.shape[1] == 1 else log_prior
    head.set_weights([kernel, (bias - tau * shift).astype(bias.dtype)])
    return model


def ensemble(models: list[keras.Model], name: str = ENSEMBLE) -> keras.Model:
    """The mean of several trained models' probabilities (one input shape, one set of classes), as one plain
    functional model that saves, loads under every backend and exports like any other: networks trained from
    different seeds err on different faces, and their mean is more accurate than either (Lakshminarayanan et al.,
    2017, "Simple and scalable predictive uncertainty estimation using deep ensembles"). Each member is kept as
    given (a flip-TTA wrapper stays inside its member); an ensemble given as a member is taken apart into its own.

        emotions = ensemble([load_keras_model("seed0.keras"), load_keras_model("seed1.keras")])
    """
    flat = [m for model in models for m in members(model)]
    shapes = {tuple(m.input_shape[1:]) for m in flat}
    outputs = {tuple(m.output_shape[1:]) for m in flat}
    if len(flat) < 2 or len(shapes) > 1 or len(outputs) > 1:
        raise EmotionError(f"an ensemble needs two or more models of one input and output shape, got inputs "
                           f"{sorted(shapes)} and outputs {sorted(outputs)} from {len(flat)} model(s)")
    inputs = model_input(flat[0].input_shape[1:])
    for i, m in enumerate(flat):
        m.name = f"member_{i}"  # nested models need names of their own
    outputs = layers.Average(name=ENSEMBLE)([m(inputs) for m in flat])
    return keras.Model(inputs, outputs, name=name)
