"""Use a saved `.keras`: load it, preprocess images exactly as training did (`emotion.data.load_image`), predict.

    clf = Predictor.load("models/imageclassifier.keras")
    clf.predict_files(["face.jpg"])   # [{"file": "face.jpg", "label": "sad", "p": 0.91, "probs": {...}}]

Class names come from the run folder's `metrics.json` beside the model; without one they are
``class_0, class_1, ...`` unless given.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from .data import load_image
from .errors import EmotionError


def load_keras_model(path: str | Path):
    """`keras.saving.load_model` with one-line errors for a missing, foreign or damaged file."""
    import keras

    path = Path(path)
    if not path.is_file():
        raise EmotionError(f"model file not found: {path}")
    if path.suffix != ".keras" or not zipfile.is_zipfile(path):
        raise EmotionError(f"not a Keras model file (.keras zip): {path}")
    try:
        return keras.saving.load_model(path)
    except Exception as e:  # keras raises ValueError, KeyError, OSError, zipfile errors...
        msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise EmotionError(f"cannot load model {path}: {msg}") from None


def class_names_for(path: str | Path, num_outputs: int) -> list[str]:
    meta = Path(path).with_name("metrics.json")
    k = max(num_outputs, 2)
    if meta.is_file():
        try:
            names = json.loads(meta.read_text()).get("class_names")
            if isinstance(names, list) and len(names) == k:
                return [str(n) for n in names]
        except (OSError, ValueError):
            pass
    return [f"class_{i}" for i in range(k)]


class Predictor:
    def __init__(self, model, class_names: list[str]):
        self.model, self.class_names = model, class_names
        _, h, w, c = model.input_shape
        if h is None or h != w:
            raise EmotionError(f"model input {model.input_shape} is not a fixed square image")
        self.image_size, self.color = int(h), ("grayscale" if c == 1 else "rgb")

    @classmethod
    def load(cls, path: str | Path, class_names: list[str] | None = None) -> Predictor:
        model = load_keras_model(path)
        outputs = int(model.output_shape[-1])
        names = class_names or class_names_for(path, outputs)
        if len(names) != max(outputs, 2):
            raise EmotionError(f"model has {max(outputs, 2)} classes but {len(names)} class names were given")
        return cls(model, names)

    def preprocess(self, path: str | Path) -> np.ndarray:
        path = Path(path)
        if not path.is_file():
            raise EmotionError(f"image not found: {path}")
        try:
            return load_image(path, self.image_size, self.color)
        except ValueError as e:
            raise EmotionError(f"cannot read image {path}: {e}") from None

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """(n, k) class probabilities for uint8 images of the model's size."""
        p = np.asarray(self.model.predict(np.asarray(images, np.float32), verbose=0), dtype=np.float64)
        return np.concatenate([1 - p, p], axis=1) if p.shape[-1] == 1 else p

    def predict_files(self, files) -> list[dict]:
        images = np.stack([self.preprocess(f) for f in files])
        out = []
        for f, p in zip(files, self.probabilities(images), strict=True):
            i = int(p.argmax())
            out.append({"file": str(f), "label": self.class_names[i], "p": float(p[i]),
                        "probs": {c: float(v) for c, v in zip(self.class_names, p, strict=True)}})
        return out
