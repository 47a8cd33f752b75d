"""emotion: facial-emotion classifiers written once in Keras 3, run under JAX, TensorFlow or PyTorch.

    import emotion
    clf = emotion.load()                      # the happy/sad face model that ships; or "emotions", a .keras, an .onnx
    clf.predict("photo.jpg")                  # [{"face": 0, "box": [x, y, w, h], "label": "happy", "p": 0.98, ...}]

    from emotion import Trainer, EmotionClassifier, EmotionDataModule, Predictor, load

The public names are imported when first used, so ``import emotion`` imports no framework and takes
milliseconds: `Trainer`, `EmotionClassifier` and `EmotionDataModule`'s batches import Keras, under the backend
``KERAS_BACKEND`` names (or ``emotion.backends.select("jax")`` before them); `load` picks one for a `.keras` and
none for an `.onnx`.
"""

from __future__ import annotations

import importlib
import sys

__version__ = "0.1.0"
__all__ = ["EmotionClassifier", "EmotionDataModule", "Predictor", "Trainer", "load", "__version__"]

# public name -> the module that defines it
_LAZY = {
    "Trainer": "emotion.training.trainer",
    "EmotionClassifier": "emotion.models.module",
    "EmotionDataModule": "emotion.data.datamodule",
    "Predictor": "emotion.predictor",
}


_NEED_KERAS = {"Trainer", "EmotionClassifier"}


def __getattr__(name: str):
    if name in _LAZY:
        if name in _NEED_KERAS and "keras" not in sys.modules:  # the backend set up before Keras is imported
            from emotion import backends  # lazy: `import emotion` stays fast

            backends.select()
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # once: later lookups are plain attribute reads
        return value
    raise AttributeError(f"module 'emotion' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def load(model=None, runtime: str | None = None, faces: str | None = None, detector: str | None = None,
         min_face_score: float | None = None):
    """A `Predictor` for ``model``: a shipped model's name (``happy-sad``, the default, ``emotions`` for eight
    emotions, ``fer2013-happy-sad``), a `.keras` or an `.onnx`. ``runtime`` 'onnx' runs the ONNX export under
    onnxruntime, with no deep-learning framework. A `.keras` runs under ``KERAS_BACKEND`` (else Keras's default).
    ``faces``: 'largest', 'all' or 'none' (default: the model's own); ``min_face_score``: the BlazeFace score a
    face needs (default 0.5; docs/faces.md).

        import emotion
        clf = emotion.load("emotions", runtime="onnx")
        rows = clf.predict("photo.jpg")        # one row per face: label, p, probs of every class, box
    """
    from emotion import backends  # lazy: `import emotion` stays fast
    from emotion.modelfile import resolve_model  # lazy: `import emotion` stays fast
    from emotion.predictor import Predictor  # lazy: `import emotion` stays fast

    path = resolve_model(model, runtime)
    if path.suffix == ".keras" and "keras" not in sys.modules:
        backends.select()
    return Predictor.load(path, faces=faces, detector=detector, runtime=runtime, min_face_score=min_face_score)
