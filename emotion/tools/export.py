"""Export a `.keras` model with Keras's own `model.export`, then verify the artifact with its own runtime.

    emotion export --model runs/jax/imageclassifier.keras --format onnx --out exports/model.onnx
    emotion export --backend tensorflow --model M.keras --format litert --out m.tflite --quantize int8

    report = export_model("M.keras", "onnx", "exports/model.onnx")   # under the running backend
    report["max_abs_dp"], report["ok"]

Formats (Keras 3.15 names): ``tf_saved_model`` (a folder), ``onnx`` (.onnx), ``litert`` (.tflite), ``openvino``
(.xml, with its .bin beside it) and ``torch`` (.pt2). Which backend writes which, and the modules each needs, is
in the backend modules' ``EXPORT_FORMATS`` tables (`backends.export_formats`); a combination outside them fails
with the reason, before anything is written. A `.keras` loads under every backend, so ``--backend`` picks the
exporter.

Right after writing, the artifact is loaded with its own runtime (onnxruntime, TensorFlow, the LiteRT
interpreter, OpenVINO, torch.export), run on the test images and compared with the Keras model: max |dP| must
be <= 1e-4. A quantized LiteRT model (``--quantize dynamic|int8``, int8 calibrated on training images) must
instead keep test accuracy within 1 point of the float model; its size and accuracy change are reported.
A failed check deletes nothing and exits non-zero.

The test images are the model's own test split of the data folder given with ``--data``, split with the run's
seed and fractions (from the ``metrics.json`` beside the model, where there is one). Without ``--data``, 32
seeded random images stand in (float formats only), and the report says so. Nothing beside the model decides
where to read or write: its ``metrics.json`` gives class names, seed and split fractions, never a path (not its
data folder, not its cache). The model file passes `emotion.guard` first (``--max-model-mb``).

``emotion export --matrix --model M.keras --out DIR [--data D] [--backends jax,torch]`` exports to every format
from every installed backend, each in its own process (`emotion.tools.harness`), and writes ``DIR/export.md`` (the
matrix), ``DIR/export.json`` and a log per cell (``DIR/BACKEND/FORMAT.log``).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emotion import backends
from emotion.config import DataConfig
from emotion.data.datamodule import EmotionDataModule
from emotion.errors import EmotionError
from emotion.guard import MAX_MODEL_MB, Limits
from emotion.metrics import predicted_labels
from emotion.modelfile import ONNX_META_KEY, load_keras_model, read_meta
from emotion.tools import harness


@dataclass(frozen=True)
class Format:
    suffix: str | None  # None: a folder
    runtime: str  # the module that loads it for the check
    what: str


FORMATS = {
    "tf_saved_model": Format(None, "tensorflow", "TensorFlow SavedModel (folder), checked with tf.saved_model.load"),
    "onnx": Format(".onnx", "onnxruntime", "ONNX, checked with onnxruntime"),
    "litert": Format(".tflite", "ai_edge_litert", "LiteRT (TFLite) flatbuffer, checked with the LiteRT interpreter"),
    "openvino": Format(".xml", "openvino", "OpenVINO IR (.xml + .bin), checked with OpenVINO's CPU runtime"),
    "torch": Format(".pt2", "torch", "PyTorch ExportedProgram, checked with torch.export.load"),
}
QUANTIZE = ("dynamic", "int8")
TOLERANCE = 1e-4  # max |dP| of a float export against the Keras model
ACCURACY_POINTS = 1.0  # max test-accuracy change of a quantized export, in percentage points
CALIBRATION_IMAGES = 100
RANDOM_IMAGES = 32


log = harness.log  # progress lines go to stderr


# ============================================================================================ checks
def check_request(fmt: str, out: str | Path, quantize: str | None, backend: str) -> Path:
    """Everything that can be refused before the model loads: format, path, quantization, backend, modules."""
    if fmt not in FORMATS:
        raise EmotionError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    out = Path(out)
    spec = FORMATS[fmt]
    if spec.suffix and out.suffix != spec.suffix:
        raise EmotionError(f"{fmt} export writes a {spec.suffix} file: --out must end in {spec.suffix}, got {out}")
    if spec.suffix is None:
        if out.exists() and not out.is_dir():
            raise EmotionError(f"{fmt} export writes a folder, but {out} is a file")
        if out.is_dir() and any(out.iterdir()) and not (out / "saved_model.pb").is_file():
            raise EmotionError(f"{out} is a folder that holds files but no SavedModel; nothing was overwritten "
                               "(choose a new or empty folder)")
    elif out.is_dir():
        raise EmotionError(f"--out {out} is a folder; give a file name ending in {spec.suffix}")
    if quantize is not None and fmt != "litert":
        raise EmotionError(f"--quantize applies to the litert format only, not {fmt}")
    if quantize is not None and quantize not in QUANTIZE:
        raise EmotionError(f"--quantize must be one of {', '.join(QUANTIZE)}, got {quantize!r}")

    writable = backends.export_formats(backend)
    if fmt not in writable:
        why = backends.export_unsupported(backend).get(fmt, "not supported")
        others = [b for b in backends.NAMES if fmt in backends.export_formats(b)]
        hint = f"; export it with --backend {' or '.join(others)} (a .keras loads under any backend)" if others else ""
        raise EmotionError(f"cannot export {fmt} under the {backend} backend: {why}{hint}")
    if quantize is not None:
        if not hasattr(importlib.import_module(f"emotion.backends.{backend}"), "litert_quantization"):
            raise EmotionError(f"LiteRT quantization is not available under the {backend} backend; "
                               "use --backend tensorflow")
    needed = [*writable[fmt], spec.runtime]
    if fmt == "litert":  # the interpreter: ai-edge-litert, else TensorFlow's own tf.lite
        needed = [m for m in needed if m != "ai_edge_litert"] if _have("tensorflow") else needed
    missing = [m for m in dict.fromkeys(needed) if not _have(m)]
    if missing:
        raise EmotionError(f"{fmt} export under {backend} needs the module(s) {', '.join(missing)}: "
                           "pip install -e '.[export]'")
    return out


def _have(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def single_file_onnx(path: Path) -> None:
    """Fold weights that an exporter wrote to a side file (jax2onnx writes ``X.onnx.data``) back into ``path``,
    so the model is one self-contained file; the side files it referenced are then removed."""
    import onnx  # here: onnx is optional or slow to import
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    sides = {e.value for t in _get_all_tensors(model) if uses_external_data(t) for e in t.external_data
             if e.key == "location"}
    if not sides:
        return
    model = onnx.load(str(path))
    onnx.save_model(model, str(path))
    for side in sides:
        (path.parent / side).unlink(missing_ok=True)


def artifact_bytes(out: Path, fmt: str) -> int:
    if out.is_dir():
        return sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    size = out.stat().st_size if out.is_file() else 0
    if fmt == "openvino" and out.with_suffix(".bin").is_file():
        size += out.with_suffix(".bin").stat().st_size
    return size


# ============================================================================================ data
@dataclass
class CheckData:
    images: np.ndarray  # uint8 (n, s, s, c)
    labels: np.ndarray | None
    calibration: np.ndarray | None  # training images for int8 ranges
    source: str


def run_settings(model_path: Path) -> dict:
    """What the ``metrics.json`` beside a model may tell the check: class names, seed, split fractions, each
    only when it has the right type. Never a path: its data folder and cache are ignored."""
    meta = model_path.with_name("metrics.json")
    try:
        run = json.loads(meta.read_text()) if meta.is_file() and meta.stat().st_size < 10_000_000 else {}
    except (OSError, ValueError, RecursionError):
        run = {}
    run = run if isinstance(run, dict) else {}
    cfg = run.get("config") if isinstance(run.get("config"), dict) else {}
    dcfg = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
    out = {}
    names = run.get("class_names")
    if isinstance(names, list) and 2 <= len(names) <= 1000 and all(isinstance(n, str) for n in names):
        out["class_names"] = names
    seed = run.get("seed", cfg.get("seed"))
    if isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**32:
        out["seed"] = seed
    split = dcfg.get("split")
    if (isinstance(split, list) and len(split) in (2, 3)
            and all(isinstance(f, int | float) and not isinstance(f, bool) and 0 <= f <= 1 for f in split)):
        out["split"] = split
    return out


def check_data(model_path: Path, model, data: str | None, class_names: list[str] | None = None) -> CheckData:
    """The model's test split (and training images for calibration) of ``data``; without it, random images."""
    _, size, _, channels = model.input_shape
    if data and not Path(data).is_dir():
        raise EmotionError(f"data folder not found: {data}")
    if not data:
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (RANDOM_IMAGES, size, size, channels), dtype=np.uint8)
        return CheckData(images, None, None, f"{RANDOM_IMAGES} seeded random images (no --data given)")
    folder = data
    run = run_settings(model_path)
    names = class_names or run.get("class_names")
    dc = DataConfig(data=str(folder), classes=names, image_size=int(size),
                    color="grayscale" if channels == 1 else "rgb", split=run.get("split") or [0.7, 0.2, 0.1])
    dm = EmotionDataModule(dc, seed=run.get("seed", 0)).setup()
    part, which = (dm.test, "test") if len(dm.test) else (dm.val, "val")
    if not len(part):
        raise EmotionError(f"no test or val images in {folder} to check the export on")
    calibration = dm.train.images[np.random.default_rng(0).permutation(len(dm.train))[:CALIBRATION_IMAGES]]
    return CheckData(part.images, part.labels, calibration, f"{len(part)} {which} images of {folder}")


# ============================================================================================ runtimes
def _batched(fn, x: np.ndarray, batch: int | None) -> np.ndarray:
    """``fn`` over ``x`` in chunks of ``batch`` (a fixed batch dimension), or in one call."""
    if not batch:
        return np.asarray(fn(x))
    outs = []
    for i in range(0, len(x), batch):
        chunk = x[i:i + batch]
        pad = batch - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
        outs.append(np.asarray(fn(chunk))[: batch - pad])
    return np.concatenate(outs)


def _fixed(dim) -> int | None:
    return int(dim) if isinstance(dim, int | np.integer) and dim > 0 else None


def add_onnx_meta(path: Path, model_path: Path) -> None:
    """Carry the model's `emotion.json` (class names, whether it crops faces, ...) into the ONNX file's
    metadata_props, where `emotion predict --runtime onnx` reads it."""
    import onnx  # here: onnx is optional or slow to import

    meta = read_meta(model_path)
    if not meta:
        return
    model = onnx.load(str(path))
    del model.metadata_props[:]
    model.metadata_props.add(key=ONNX_META_KEY, value=json.dumps(meta))
    onnx.save_model(model, str(path))


def run_onnx(path: Path):
    import onnxruntime as ort  # here: onnxruntime is optional or slow to import

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    return lambda x: _batched(lambda b: session.run(None, {inp.name: b})[0], x, _fixed(inp.shape[0]))


def run_saved_model(path: Path):
    import tensorflow as tf  # here, so that the framework loads only when needed

    loaded = tf.saved_model.load(str(path))
    fn = loaded.serve if hasattr(loaded, "serve") else loaded.signatures["serving_default"]
    spec = fn.input_signature[0] if getattr(fn, "input_signature", None) else None
    batch = _fixed(spec.shape[0]) if spec is not None and spec.shape.rank else None

    def call(b, keep=loaded):  # `keep`: the loaded object owns the variables `fn` reads
        out = fn(tf.constant(b))
        return (next(iter(out.values())) if isinstance(out, dict) else out).numpy()

    return lambda x: _batched(call, x, batch)


def run_litert(path: Path):
    try:
        from ai_edge_litert.interpreter import Interpreter  # here: ai_edge_litert is optional or slow to import
    except ImportError:  # TensorFlow's own copy of the interpreter
        from tensorflow.lite import Interpreter  # here, so that the framework loads only when needed

    interpreter = Interpreter(model_path=str(path))
    inp = interpreter.get_input_details()[0]
    out_index = interpreter.get_output_details()[0]["index"]
    dynamic = int(inp["shape_signature"][0]) == -1

    def call(b):
        if dynamic:
            interpreter.resize_tensor_input(inp["index"], list(b.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], b.astype(inp["dtype"]))
        interpreter.invoke()
        return interpreter.get_tensor(out_index).copy()

    return lambda x: _batched(call, x, None if dynamic else int(inp["shape"][0]))


def run_openvino(path: Path):
    import openvino as ov  # here: openvino is optional or slow to import

    # f32 inference: on CPUs with bf16 units OpenVINO would otherwise pick bf16 on its own.
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    shape = compiled.input(0).get_partial_shape()
    batch = shape[0].get_length() if shape[0].is_static else None
    return lambda x: _batched(lambda b: compiled(b)[compiled.output(0)], x, batch)


def run_torch(path: Path):
    import torch  # here, so that the framework loads only when needed

    module = torch.export.load(str(path)).module()

    def call(b):
        with torch.no_grad():
            out = module(torch.from_numpy(np.ascontiguousarray(b)))
        out = out[0] if isinstance(out, list | tuple) else out
        return out.detach().cpu().numpy()

    def run(x):
        try:
            return _batched(call, x, None)
        except Exception:  # an ExportedProgram traced with a fixed batch of 1
            return _batched(call, x, 1)

    return run


RUNTIMES = {"tf_saved_model": run_saved_model, "onnx": run_onnx, "litert": run_litert, "openvino": run_openvino,
            "torch": run_torch}


# ============================================================================================ export
def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0][:200] if text else type(e).__name__)


def export_model(model_path: str | Path, fmt: str, out: str | Path, quantize: str | None = None,
                 data: str | None = None, tolerance: float = TOLERANCE,
                 accuracy_points: float = ACCURACY_POINTS, max_model_mb: float | None = None) -> dict:
    """Export under the running backend and verify; returns the report (``ok`` False: a check failed).
    ``max_model_mb``: raises `emotion.guard`'s limit on the model file."""
    from emotion.models.surgery import for_inference  # here, so that the framework loads only when needed

    backend = backends.current()
    limits = Limits.from_mb(max_model_mb)
    out = check_request(fmt, out, quantize, backend)
    backends.configure()  # the backend's own setup, as for training (JAX's max-pool: see docs/export.md)
    model_path = Path(model_path)
    model = load_keras_model(model_path, limits)
    if model.output_shape[-1] is None:
        raise EmotionError(f"model output {model.output_shape} has no fixed size")
    checks = check_data(model_path, model, data)
    if quantize and checks.labels is None:
        raise EmotionError("a quantized export is calibrated on training images and checked by test accuracy: "
                           "pass --data DIR")
    options = backends.litert_quantization(quantize, checks.calibration) if quantize else {}

    x = checks.images.astype(np.float32)
    expected = np.asarray(model.predict(x, verbose=0), dtype=np.float64)
    model = for_inference(model)  # augmentation off in the artifact (Keras traces __call__ without training=)
    model(x[:1])  # a freshly loaded model must have been called once before Keras exports it

    out.parent.mkdir(parents=True, exist_ok=True)
    # written into a private folder beside --out, checked there, and only then renamed into place: a full disk
    # or a failed export leaves an existing file as it was (a failed check puts the export beside it, .failed)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        art = work / out.name
        delta, got, seconds = _export_and_run(model, fmt, art, model_path, backend, options, x, expected, out)
        report = {
            "format": fmt, "backend": backend, "model": str(model_path), "out": str(out), "quantize": quantize,
            "bytes": artifact_bytes(art, fmt), "keras_bytes": model_path.stat().st_size,
            "runtime": FORMATS[fmt].runtime, "checked_on": checks.source, "images": int(len(x)),
            "max_abs_dp": delta, "seconds": round(seconds, 2),
        }
        _score(report, checks, expected, got, quantize, tolerance, accuracy_points)
        if not report["ok"]:
            report["out"] = str(out.with_name(f"{out.stem}.failed{out.suffix}"))  # kept beside, for inspection
        place(art, Path(report["out"]), fmt, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report


def place(art: Path, target: Path, fmt: str, work: Path) -> None:
    """Rename the checked artifact (and OpenVINO's .bin) onto ``target``; an old folder is moved into ``work``
    first (removed with it)."""
    if art.is_dir() and target.exists():
        os.replace(target, work / ".old")
    if fmt == "openvino" and art.with_suffix(".bin").is_file():
        os.replace(art.with_suffix(".bin"), target.with_suffix(".bin"))
    os.replace(art, target)


def _export_and_run(model, fmt, art: Path, model_path, backend, options, x, expected, out):
    t0 = time.perf_counter()
    try:
        with _quiet():
            model.export(str(art), format=fmt, verbose=False, **options)
    except OSError:
        raise  # a full disk, a read-only folder: told as such (`emotion.files.user_os_error`)
    except Exception as e:
        raise EmotionError(f"{fmt} export under {backend} failed: {_first_line(e)}") from None
    if fmt == "onnx":
        single_file_onnx(art)
        add_onnx_meta(art, model_path)
    seconds = time.perf_counter() - t0
    try:
        with _quiet():
            got = np.asarray(RUNTIMES[fmt](art)(x), dtype=np.float64).reshape(expected.shape)
    except Exception as e:
        raise EmotionError(f"the exported {out} does not run under {FORMATS[fmt].runtime}: {_first_line(e)} "
                           f"(nothing was written to {out})") from None
    return float(np.max(np.abs(got - expected))), got, seconds


def _score(report, checks, expected, got, quantize, tolerance, accuracy_points) -> None:
    delta = report["max_abs_dp"]
    if checks.labels is not None:
        labels = np.asarray(checks.labels)
        acc_keras = float(np.mean(predicted_labels(expected) == labels))
        acc_export = float(np.mean(predicted_labels(got) == labels))
        report.update(accuracy_keras=acc_keras, accuracy_export=acc_export,
                      accuracy_change_points=100 * (acc_export - acc_keras))
    report["flipped"] = int(np.sum(predicted_labels(expected) != predicted_labels(got)))
    if quantize:
        report["tolerance"] = {"accuracy_points": accuracy_points}
        report["ok"] = abs(report["accuracy_change_points"]) <= accuracy_points
    else:
        report["tolerance"] = {"max_abs_dp": tolerance}
        report["ok"] = delta <= tolerance


class _quiet:
    """Keep converters' chatter (tf2onnx, TFLite, torch.onnx print to stdout) off our stdout."""

    def __enter__(self):
        sys.stdout.flush()
        self.saved = os.dup(1)
        os.dup2(2, 1)

    def __exit__(self, *exc):
        sys.stdout.flush()
        os.dup2(self.saved, 1)
        os.close(self.saved)


def summary(r: dict) -> str:
    size = f"{r['bytes'] / 1e6:.2f} MB" + (f" (.keras {r['keras_bytes'] / 1e6:.2f} MB)" if r.get("keras_bytes") else "")
    acc = ""
    if "accuracy_keras" in r:
        acc = (f"; test accuracy {100 * r['accuracy_export']:.2f}% vs Keras {100 * r['accuracy_keras']:.2f}% "
               f"({r['accuracy_change_points']:+.2f} pt)")
    tol = r["tolerance"]
    limit = (f"|change| <= {tol['accuracy_points']:g} pt" if "accuracy_points" in tol
             else f"max |dP| <= {tol['max_abs_dp']:g}")
    what = r["format"] + (f" ({r['quantize']} quantized)" if r.get("quantize") else "")
    return (f"{what} under {r['backend']}: {r['out']}, {size}\n"
            f"checked with {r['runtime']} on {r['checked_on']}: max |dP| {r['max_abs_dp']:.3g}, "
            f"{r['flipped']} label(s) flipped{acc}\n"
            f"{'PASS' if r['ok'] else 'FAIL'} ({limit})")


# ============================================================================================ command
def add_arguments(p) -> None:
    p.add_argument("--model", required=True, help="a .keras file")
    p.add_argument("--format", choices=list(FORMATS), help="export format (Keras's names); required without --matrix")
    p.add_argument("--out", required=True, help="file to write (.onnx, .tflite, .xml, .pt2) or SavedModel folder; "
                   "with --matrix, the folder for export.md, export.json and the exports")
    p.add_argument("--quantize", choices=QUANTIZE, help="LiteRT only: dynamic (int8 weights) or int8 (calibrated)")
    p.add_argument("--data", help="data folder for the check: its test split, as the run split it (default: "
                   "32 seeded random images; a path is never taken from metrics.json)")

    p.add_argument("--max-model-mb", type=float, default=None, metavar="MB",
                   help=f"refuse a model file that unpacks to more than this (default {MAX_MODEL_MB})")
    p.add_argument("--tolerance", type=float, default=TOLERANCE, help=f"max |dP| (default {TOLERANCE:g})")
    p.add_argument("--accuracy-tol", type=float, default=ACCURACY_POINTS,
                   help=f"quantized: max test-accuracy change in points (default {ACCURACY_POINTS:g})")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out (never before the new "
                   "export is written and checked)")
    p.add_argument("--matrix", action="store_true",
                   help="export to every format from every backend, each in its own process: OUT/export.md")
    p.add_argument("--backends", help="with --matrix: comma-separated backends (default: all)")


def command(args) -> int:
    """`emotion export` without --matrix (`emotion.tools.export_matrix` has that one)."""
    if args.format is None:
        raise EmotionError("--format is required (or --matrix: every format from every backend)")
    if args.backends:
        raise EmotionError("--backends goes with --matrix; a single export runs under --backend")
    report = export_model(args.model, args.format, args.out, args.quantize, args.data, args.tolerance,
                          args.accuracy_tol, args.max_model_mb)
    print(json.dumps(report, indent=2) if args.json else summary(report))
    if not report["ok"]:
        print(f"emotion: error: the {args.format} export failed its check; it is kept for inspection as "
              f"{report['out']} ({args.out} is not replaced)", file=sys.stderr)
        return 1
    return 0


