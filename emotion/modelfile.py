"""The model file: a `.keras` (checked by `emotion.guard` before Keras reads it) or its `.onnx` export, the
shipped models by name, and the `emotion.json` a model carries so that it is used as it was trained.

    path = resolve_model("emotions")                     # a shipped model's file, checked
    model, meta = open_model(path)                       # a Keras model (or an OnnxModel) and its emotion.json
    meta["class_names"]                                  # ['angry', 'contempt', ..., 'surprise']

`emotion.json` is a member of the `.keras` zip (plain Keras ignores it): class names, and whether the model was
trained on faces (`faces: crop`), in which case every consumer crops faces for it by default. Older run folders
without it fall back to the `metrics.json` beside the model. Training writes models with `write_meta`; inference
reads them with `open_model`; neither imports the other.
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

from emotion import backends
from emotion.errors import EmotionError
from emotion.faces.base import margin_ok
from emotion.guard import Limits, check_loaded, check_model_file
from emotion.onnxguard import check_onnx_file

META_MEMBER = "emotion.json"
ONNX_META_KEY = "emotion"  # the same JSON, in an ONNX file's metadata_props (written by `emotion export`)
SHIPPED_DIR = Path(__file__).parent / "shipped"
# name -> file inside the package: the default (FER2013 faces, then the seed's web photos) and the FER2013-only model
SHIPPED = {name: SHIPPED_DIR / f"{name}.keras" for name in ("happy-sad", "fer2013-happy-sad", "emotions")}
DEFAULT_MODEL = "happy-sad"



# ----------------------------------------------------------------------------------------------- files
RUNTIMES = ("keras", "onnx")


def runtime_for(name_or_path: str | Path | None = None, runtime: str | None = None) -> str:
    """The runtime a model runs under: the one asked for, else 'onnx' for an `.onnx` file, else 'keras'."""
    return runtime or ("onnx" if str(name_or_path or "").endswith(".onnx") else "keras")


def find_model(name_or_path: str | Path | None = None, runtime: str | None = None) -> Path:
    key = str(name_or_path) if name_or_path is not None else DEFAULT_MODEL
    if runtime is not None and runtime not in RUNTIMES:
        raise EmotionError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    path = SHIPPED.get(key, Path(key))
    if key in SHIPPED and runtime == "onnx":
        path = path.with_suffix(".onnx")
    if not path.is_file():
        what = "shipped model" if key in SHIPPED else "model file"
        raise EmotionError(f"{what} is not a regular file: {path}" if path.exists() else f"{what} not found: {path}")
    if runtime_for(path, runtime) == "onnx":
        if path.suffix != ".onnx":
            raise EmotionError(f"--runtime onnx takes an .onnx file, got {path} (make one with: emotion export "
                               f"--model {path} --format onnx --out {path.with_suffix('.onnx')})")
    elif path.suffix != ".keras":
        raise EmotionError(f"not a Keras model file (.keras zip): {path}")
    return path


def resolve_model(name_or_path: str | Path | None = None, runtime: str | None = None,
                  limits: Limits | None = None) -> Path:
    """A shipped model's name (default: the happy/sad face model) or a path, checked before anything reads it:
    a `.keras` by `emotion.guard` (a zip within ``limits``), an `.onnx` for its size. ``runtime``: 'keras' (a
    `.keras` under the running backend) or 'onnx' (its ONNX export under onnxruntime); None: from the file's
    suffix. A shipped model comes in both."""
    path = find_model(name_or_path, runtime)
    if path.suffix == ".onnx":
        check_onnx_file(path, limits)  # its size, initializers, external data, inputs, nodes, metadata
    else:
        check_model_file(path, limits, build=False)  # the file; load_keras_model checks the model's size too
    return path


def write_meta(path: str | Path, meta: dict) -> None:
    """Add (or replace) the `emotion.json` member of a saved `.keras`."""
    path = Path(path)
    with zipfile.ZipFile(path) as z:
        if META_MEMBER in z.namelist():  # zipfile cannot replace a member: rewrite the archive without it
            tmp = path.with_name(path.name + ".tmp")
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
                for info in z.infolist():
                    if info.filename != META_MEMBER:
                        out.writestr(info, z.read(info))
            os.replace(tmp, path)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as z:
        z.writestr(META_MEMBER, json.dumps(meta, indent=1))


def read_meta(path: str | Path) -> dict:
    """The model's `emotion.json`, else what the run folder's `metrics.json` says, else {}."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            if META_MEMBER in z.namelist() and z.getinfo(META_MEMBER).file_size < 1_000_000:
                meta = json.loads(z.read(META_MEMBER))
                if isinstance(meta, dict):
                    return _clean_meta(meta)
    except (OSError, ValueError, RecursionError, zipfile.BadZipFile):
        pass
    beside = path.with_name("metrics.json")  # class names and whether it saw faces; never a path
    try:
        run = json.loads(beside.read_text()) if beside.is_file() and beside.stat().st_size < 10_000_000 else {}
    except (OSError, ValueError, RecursionError):
        run = {}
    if not isinstance(run, dict):
        return {}
    cfg = run.get("config") if isinstance(run.get("config"), dict) else {}
    data = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
    faces = data.get("faces", "none")
    return _clean_meta({"class_names": run.get("class_names"),
                        "faces": "crop" if faces in ("crop", "given") else "none"})


def _clean_meta(meta: dict) -> dict:
    """emotion.json as read: values of the wrong type are dropped (it names no paths; nothing in it is one)."""
    names = meta.get("class_names")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str | int) for n in names)):
        meta.pop("class_names")
    margin = meta.get("margin")
    if margin is not None and not margin_ok(margin):
        meta.pop("margin")
    for key in ("detector", "faces"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            meta.pop(key)
    return meta


def load_keras_model(path: str | Path, limits: Limits | None = None):
    """`keras.saving.load_model`, behind `emotion.guard` (the file is checked before Keras reads it, and the
    weights against the model after), with one-line errors for a missing, foreign, damaged or hostile file.
    safe_mode stays on: a file that would run code (a Lambda layer) is refused."""
    import keras  # here, so that the framework loads only when needed

    path = find_model(path)
    report = check_model_file(path, limits)
    try:
        model = keras.saving.load_model(path, safe_mode=True)
    except Exception as e:  # keras raises ValueError, KeyError, OSError, zipfile errors...
        msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise EmotionError(f"cannot load model {path}: {msg}") from None
    check_loaded(model, report, path)
    return model


class OnnxModel:
    """An ONNX export run by onnxruntime, with the part of a Keras model's interface that `Predictor` uses
    (``input_shape``, ``output_shape``, ``predict_on_batch``): no deep-learning framework is imported.
    ``meta``: the `emotion.json` that `emotion export` puts in the file's metadata (key ``emotion``)."""

    def __init__(self, path: str | Path):
        try:
            import onnxruntime as ort  # here: onnxruntime is optional or slow to import
        except ImportError:
            raise EmotionError("--runtime onnx needs onnxruntime: pip install -e '.[onnx]'") from None
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        try:
            self.session = ort.InferenceSession(str(path), options, providers=ort.get_available_providers())
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise EmotionError(f"cannot load ONNX model {path}: {str(e).strip()[:160] or type(e).__name__}") \
                from None
        (inp,), out = self.session.get_inputs(), self.session.get_outputs()[0]
        self.input_name = inp.name
        fixed = [d if isinstance(d, int) and d > 0 else None for d in inp.shape]
        self.input_shape = (None, *fixed[1:])
        self.output_shape = (None, *[d if isinstance(d, int) and d > 0 else None for d in out.shape[1:]])
        self.batch = fixed[0]  # a fixed batch size the export was traced with, else None
        try:
            meta = json.loads(self.session.get_modelmeta().custom_metadata_map.get(ONNX_META_KEY, "{}"))
        except (ValueError, RecursionError):
            meta = {}
        self.meta = meta if isinstance(meta, dict) else {}

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        try:
            return self._predict(x)
        except Exception as e:  # onnxruntime's Fail, InvalidArgument, RuntimeException...: one line, not a bug of ours
            text = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise EmotionError(f"the ONNX model failed to run: {text}") from None

    def _predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if self.batch is None or len(x) == self.batch:
            return self.session.run(None, {self.input_name: x})[0]
        parts = []
        for start in range(0, len(x), self.batch):
            part = x[start:start + self.batch]
            pad = self.batch - len(part)
            if pad:
                part = np.concatenate([part, np.zeros((pad, *part.shape[1:]), np.float32)])
            parts.append(self.session.run(None, {self.input_name: part})[0][:self.batch - pad])
        return np.concatenate(parts)


def open_model(path: str | Path | None = None, runtime: str | None = None, limits: Limits | None = None):
    """(model, meta): a Keras model (or an `OnnxModel` for runtime 'onnx' or an .onnx file) and its metadata."""
    path = resolve_model(path, runtime, limits)
    if path.suffix == ".onnx":
        model = OnnxModel(path)
        return model, model.meta or read_meta(path)
    meta = read_meta(path)

    # the backend's own setup, as for training: under JAX the shipped model (it holds Keras's affine augmentation
    # layers) is otherwise predicted op by op, not jitted (docs/benchmarks.md)
    backends.configure()
    return load_keras_model(path, limits), meta
