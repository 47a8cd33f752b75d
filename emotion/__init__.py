"""emotion: a facial-emotion classifier written once in Keras 3, run under JAX, TensorFlow or PyTorch.

    import emotion
    clf = emotion.load()                      # the happy/sad face model that ships; or a run's .keras / an .onnx
    clf.predict("photo.jpg")                  # [{"face": 0, "box": [x, y, w, h], "label": "happy", "p": 0.98, ...}]

Import `emotion.data.datamodule`, `emotion.config`, `emotion.data.synth` freely; `emotion.models.presets`,
`emotion.models.module`, `emotion.training.trainer` and `emotion.infer`'s Keras runtime import Keras, so pick the
backend first (`backends.select`, or `emotion.load`, which does it).
"""

__version__ = "0.1.0"


def load(model=None, runtime: str | None = None, faces: str | None = None, detector: str | None = None,
         min_face_score: float | None = None):
    """An `emotion.infer.Predictor`: ``model`` is a shipped model's name (default: happy-sad), a `.keras` or an
    `.onnx`; ``runtime`` 'onnx' runs the ONNX export under onnxruntime, with no deep-learning framework.
    A `.keras` runs under ``KERAS_BACKEND`` (else Keras's default: `backends.default`). ``min_face_score``: the
    BlazeFace score a face needs (default 0.5; docs/faces.md)."""
    import sys

    from emotion.modelfile import resolve_model
    from emotion.predictor import Predictor

    path = resolve_model(model, runtime)
    if path.suffix == ".keras" and "keras" not in sys.modules:
        from emotion import backends

        backends.select()
    return Predictor.load(path, faces=faces, detector=detector, runtime=runtime, min_face_score=min_face_score)
