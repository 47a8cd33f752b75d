"""Prove the backends agree: train the same model from the same initial weights on the same batches under
JAX, TensorFlow and PyTorch, each in its own process, and compare what came out.

    emotion parity                                     # 3 epochs of ../shared/data/web-happy-sad at 128x128
    emotion parity --data DIR --out runs/parity --epochs 2 --image-size 64 --backends jax,torch

Steps (the parent process never imports Keras; each step below is `step` run by `emotion.tools.harness` under the
backend, in a fresh process):
1. ``init``: build the model once (under the first backend) and save ``init.weights.h5``. Keras initializers
   draw different numbers on each backend, so every backend loads these weights instead of seeding its own.
2. ``train``: under each backend, load the initial weights and train with `emotion.training.trainer.Trainer` on the data
   module's batches; a fingerprint (sha1) of every batch the fit consumed is recorded, per epoch, so the report
   can show that every backend saw the same batches in the same order. Saves ``<backend>/model.keras``, the
   test-split probabilities and ``<backend>/result.json`` (history, val and test metrics, batch fingerprints).
3. ``crossload``: under each backend, load every backend's ``model.keras`` (3x3) and predict the test split;
   max |dP| against the saving backend's own predictions.

The parent then compares (`compare`), writes ``parity.json`` and ``parity.md`` (`render`) and fails, naming each
broken tolerance, when one is exceeded. A backend that is not installed is reported as such and left out of
every comparison: it is never counted as agreeing.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from emotion import backends
from emotion.config import add_arguments as add_settings
from emotion.config import config_from_args, from_dict, load_config, parse_names
from emotion.data.datamodule import EmotionDataModule
from emotion.errors import EmotionError
from emotion.files import write_atomic
from emotion.metrics import score
from emotion.modelfile import load_keras_model
from emotion.tools import harness
from emotion.tools.parity_report import Tolerances, compare, render

DEFAULT_DATA = "../shared/data/web-happy-sad"
INIT_WEIGHTS = "init.weights.h5"
MODEL_FILE = "model.keras"


# The settings parity shares with `emotion fit` (declared once, in emotion.config), and its own defaults for them.
SETTINGS = ["seed", "data.data", "data.classes", "data.image_size", "data.color", "data.batch_size", "data.split",
            "data.cache", "model.preset", "model.learning_rate", "trainer.epochs", "trainer.out"]
DEFAULTS = {"data.data": DEFAULT_DATA, "data.image_size": 128, "trainer.epochs": 3, "trainer.out": "runs/parity"}


def default_config(**overrides) -> dict:
    """The config parity trains with by default, as a dict; ``overrides``: ``{"section.key": value}``."""
    return load_config(None, {**DEFAULTS, **overrides}).to_dict()


@dataclass
class ParitySpec:
    """Everything a worker process needs; written to ``OUT/spec.json``. ``config``: an `emotion.config.Config`
    as a dict (the data, model and trainer settings `emotion fit` has too); the rest is parity's own."""

    config: dict = field(default_factory=default_config)
    backends: list[str] = field(default_factory=list)  # empty: every installed backend
    perturb: dict[str, float] = field(default_factory=dict)  # backend -> learning rate (to see parity fail)
    deterministic: bool = True
    precision: str = "float64"  # float64 | float32: the dtype every layer computes and stores in

    @property
    def cfg(self):
        return from_dict(self.config)

    def data_config(self):
        return self.cfg.data

    # the settings the steps read, by name
    seed = property(lambda self: self.config["seed"])
    data = property(lambda self: self.config["data"]["data"])
    image_size = property(lambda self: self.config["data"]["image_size"])
    batch_size = property(lambda self: self.config["data"]["batch_size"])
    preset = property(lambda self: self.config["model"]["preset"])
    learning_rate = property(lambda self: self.config["model"]["learning_rate"])
    epochs = property(lambda self: self.config["trainer"]["epochs"])
    out = property(lambda self: self.config["trainer"]["out"])

    def learning_rate_for(self, backend: str) -> float:
        return float(self.perturb.get(backend, self.learning_rate))


log = harness.log  # progress lines go to stderr


# ============================================================================================ worker side
def _digest(x) -> str:
    return hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest()[:12]


def _recording(loader, events: list):
    """Wrap a `PyDataset` so every batch Keras asks for is fingerprinted, with the epoch hooks as markers."""
    import keras  # here, so that the framework loads only when needed

    class Recording(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=1, use_multiprocessing=False)

        def __len__(self):
            return len(loader)

        def __getitem__(self, i):
            x, y = loader[i]
            events.append(("batch", int(i), _digest(x) + _digest(y)[:4]))
            return x, y

        def on_epoch_begin(self):
            events.append(("begin",))

        def on_epoch_end(self):
            events.append(("end",))
            loader.on_epoch_end()

    return Recording()


def epoch_fingerprints(events: list, epochs: int) -> list[list[str]]:
    """The batches consumed in each of the last ``epochs`` epochs (between an epoch's begin and end hooks).

    Keras peeks at a batch before training (TensorFlow to learn the batch signature, JAX and PyTorch to build
    the model), outside any training epoch; taking the last ``epochs`` begin..end groups leaves those out.
    """
    groups, current = [], None
    for e in events:
        if e[0] == "begin":
            current = []
        elif e[0] == "batch" and current is not None:
            current.append(e[2])
        elif e[0] == "end" and current is not None:
            groups.append(current)
            current = None
    return groups[-epochs:]


class RecordingDataModule(EmotionDataModule):
    """The data module, with every training batch the fit consumes fingerprinted into ``events`` (`_recording`)."""

    def __init__(self, cfg, seed: int = 0, events: list | None = None):
        super().__init__(cfg, seed=seed)
        self.events = events

    def train_dataloader(self):
        loader = super().train_dataloader()
        return loader if self.events is None else _recording(loader, self.events)


def _worker_dm(spec: ParitySpec, events: list | None = None):
    return RecordingDataModule(spec.data_config(), seed=spec.seed, events=events).setup()


def _build(spec: ParitySpec, dm, learning_rate: float):
    """The module, with every `Rescaling` scale held in the compute dtype.

    Keras's TensorFlow backend turns a Rescaling layer's Python-float scale into a float32 constant before
    casting it, so under float64 TensorFlow alone would multiply by 1/255 rounded to float32 (a 6e-8 relative
    difference in every input pixel). A numpy scalar of the compute dtype is cast exactly by every backend; in
    float32 this changes nothing.
    """
    import keras  # here, so that the framework loads only when needed

    from emotion.models.module import EmotionClassifier  # here, so that the framework loads only when needed

    module = EmotionClassifier(spec.preset, dm.input_shape, dm.num_classes, learning_rate)
    for layer in module.model.layers:  # the presets are flat: no nested models
        if isinstance(layer, keras.layers.Rescaling) and isinstance(layer.scale, float):
            layer.scale = np.dtype(layer.compute_dtype).type(layer.scale)
    return module


def worker_init(spec: ParitySpec, backend: str) -> None:
    from emotion.training.trainer import seed_everything  # here, so that the framework loads only when needed

    seed_everything(spec.seed, spec.deterministic)
    dm = _worker_dm(spec)
    module = _build(spec, dm, spec.learning_rate)
    module.model.save_weights(Path(spec.out) / INIT_WEIGHTS)


def worker_train(spec: ParitySpec, backend: str) -> None:
    from emotion.training.trainer import (  # here, so that the framework loads only when needed
        Trainer,
        seed_everything,
    )  # here, so that the framework loads only when needed

    out = Path(spec.out) / backend
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(spec.seed, spec.deterministic)
    events: list = []
    dm = _worker_dm(spec, events)
    lr = spec.learning_rate_for(backend)
    module = _build(spec, dm, lr)
    module.model.load_weights(Path(spec.out) / INIT_WEIGHTS)
    trainer = Trainer(max_epochs=spec.epochs, verbose=2, deterministic=spec.deterministic)
    history = trainer.fit(module, dm)
    module.model.save(out / MODEL_FILE)
    probs = trainer.predict(module, dm.test_dataloader())
    np.save(out / "test_probs.npy", probs)
    result = {
        **backends.describe(),
        "learning_rate": lr,
        "split": dm.split_sizes(),
        "history": history,
        "val": _short(trainer.validate(module, dm)),
        "test": _short(score(probs, dm.test.labels, dm.class_names)),
        "batches": epoch_fingerprints(events, spec.epochs),
        "seconds": trainer.timings(),
    }
    write_atomic(out / "result.json", json.dumps(result, indent=2))


def _short(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "per_class"}


def worker_crossload(spec: ParitySpec, backend: str) -> None:
    from emotion.training.trainer import (  # here, so that the framework loads only when needed
        Trainer,
        seed_everything,
    )  # here, so that the framework loads only when needed

    seed_everything(spec.seed, spec.deterministic)
    dm = _worker_dm(spec)
    deltas = {}
    for saver in spec.backends:
        path = Path(spec.out) / saver / MODEL_FILE
        own = np.load(Path(spec.out) / saver / "test_probs.npy")
        probs = Trainer().predict(load_keras_model(path), dm.test_dataloader())
        deltas[saver] = float(np.max(np.abs(probs - own))) if probs.shape == own.shape else float("inf")
    write_atomic(Path(spec.out) / backend / "crossload.json", json.dumps(deltas, indent=2))


WORKERS = {"init": worker_init, "train": worker_train, "crossload": worker_crossload}


def step(name: str, spec_path: str, backend: str) -> None:
    """One step (``init``, ``train``, ``crossload``) in this process; `emotion.tools.harness` has selected the backend
    (deterministic as the spec asks) before this runs."""
    import keras  # here, so that the framework loads only when needed

    spec = ParitySpec(**json.loads(Path(spec_path).read_text()))
    if spec.precision == "float64":
        backends.enable_float64()
    keras.config.set_floatx(spec.precision)
    WORKERS[name](spec, backend)


# ============================================================================================ parent side
def _spawn(name: str, spec: ParitySpec, spec_path: Path, backend: str, log_path: Path) -> float:
    t0 = time.perf_counter()
    harness.run_step(backend, "emotion.tools.parity:step", [name, str(spec_path), backend],
                     what=f"parity step {name!r}",
                     log=log_path, deterministic=spec.deterministic)
    return time.perf_counter() - t0


def run_parity(spec: ParitySpec, tol: Tolerances | None = None) -> dict:
    """Run every step and return the report (also written to ``OUT/parity.json`` and ``OUT/parity.md``)."""

    tol = tol or Tolerances()
    present, missing = harness.plan(spec.backends, need=2, what="parity", log=log)
    bad = [b for b in spec.perturb if b not in present]
    if bad:
        raise EmotionError(f"--perturb names backend(s) {bad} that are not compared here ({', '.join(present)})")
    spec.backends = present

    # Data errors surface here, before any framework loads; this also fills the decoded-image cache.
    dm = EmotionDataModule(spec.data_config(), seed=spec.seed).setup()
    if not len(dm.val) or not len(dm.test):
        raise EmotionError(f"parity needs non-empty val and test splits, got {dm.split_sizes()}")
    out = Path(spec.out)
    if out.exists() and not out.is_dir():
        raise EmotionError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    for b in present:
        (out / b).mkdir(exist_ok=True)
    spec_path = out / "spec.json"
    spec_path.write_text(json.dumps(asdict(spec), indent=2))
    log(f"parity: {', '.join(present)} on {spec.data} (split {dm.split_sizes()}), {spec.epochs} epoch(s) at "
        f"{spec.image_size}x{spec.image_size}, batch {spec.batch_size}, seed {spec.seed}; output in {out}")

    seconds = {"init": _spawn("init", spec, spec_path, present[0], out / "init.log")}
    log(f"parity: initial weights built under {present[0]}: {out / INIT_WEIGHTS}")
    results = {}
    for b in present:
        log(f"parity: training under {b} ...")
        seconds[f"train-{b}"] = _spawn("train", spec, spec_path, b, out / b / "train.log")
        results[b] = json.loads((out / b / "result.json").read_text())
    crossload = {}
    for b in present:
        log(f"parity: loading every backend's model.keras under {b} ...")
        seconds[f"crossload-{b}"] = _spawn("crossload", spec, spec_path, b, out / b / "crossload.log")
        crossload[b] = json.loads((out / b / "crossload.json").read_text())

    report = compare(results, crossload, tol)
    report.update({
        "spec": asdict(spec),
        "tolerances": asdict(tol),
        "backends": {"compared": present, "not_installed": missing},
        "split": dm.split_sizes(),
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    })
    write_atomic(out / "parity.json", json.dumps(report, indent=2))
    write_atomic(out / "parity.md", render(report))
    return report


# ============================================================================================ command
def add_arguments(p) -> None:
    """Flags of ``emotion parity``: the shared settings (from emotion.config), then parity's own."""
    add_settings(p, only=SETTINGS, defaults=DEFAULTS)
    p.add_argument("--backends", type=parse_names, help="comma-separated backends to compare (default: all installed)")
    p.add_argument("--precision", choices=["float64", "float32"], default="float64",
                   help="dtype every layer computes in (default float64: see docs/parity.md)")
    p.add_argument("--loss-rtol", type=float, default=0.02, help="loss tolerance, relative (default 0.02)")
    p.add_argument("--acc-tol", type=float, default=1.0, help="train/val accuracy tolerance, points (default 1)")
    p.add_argument("--test-tol", type=float, default=1.0, help="test metric tolerance, points (default 1)")
    p.add_argument("--crossload-tol", type=float, default=1e-5, help="cross-load max |dP| (default 1e-5)")
    p.add_argument("--perturb", action="append", default=[], metavar="BACKEND=LR",
                   help="train BACKEND with learning rate LR instead, to see parity catch a difference")


def _perturbations(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise EmotionError(f"--perturb expects BACKEND=LEARNING_RATE, got {item!r}") from None
    return out


def command(args) -> int:
    """``emotion parity``: run, print the tables, exit 1 naming each broken tolerance."""
    spec = ParitySpec(config=config_from_args(args, DEFAULTS).to_dict(), backends=args.backends or [],
                      perturb=_perturbations(args.perturb), precision=args.precision)
    tol = Tolerances(loss_rel=args.loss_rtol, accuracy_points=args.acc_tol, test_points=args.test_tol,
                     crossload=args.crossload_tol)
    report = run_parity(spec, tol)
    print(render(report), end="")
    print(f"\nwrote {Path(spec.out) / 'parity.md'} and {Path(spec.out) / 'parity.json'}")
    if report["ok"]:
        return 0
    for failure in report["failures"]:
        print(f"emotion: parity failed: {failure}", file=sys.stderr)
    return 1


