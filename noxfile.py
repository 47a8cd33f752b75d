"""Sessions that drive emotion. `nox -l` lists them.

    nox -s train-jax                       # install emotion[jax], train the seed CNN on data/ (synthetic if empty)
    nox -s train-torch -- --data ../shared/data/web-happy-sad --out runs/torch
    nox -s tests                           # the whole suite under JAX, TensorFlow and PyTorch, each in its own process
    nox -s tests -- -k split               # arguments after -- go to pytest
    nox -s lint
    nox -s docs                            # mkdocs build --strict of docs/ into runs/site/
    nox -s fuzz                            # tests/test_fuzz.py with 2000 examples each (EMOTION_FUZZ_EXAMPLES)
    nox -s parity                          # the backends agree: same weights, same batches, same metrics
    nox -s export                          # one model to SavedModel, ONNX, LiteRT, OpenVINO, torch, each verified
    nox -s bench                           # time every backend and the seed notebook's pipeline (runs/bench/)
    nox -s serve-bench -- --seconds 5      # load-test `emotion serve`, batched and not (runs/serve-bench/)
"""

import os
from pathlib import Path

import nox

nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "tests"]

ROOT = Path(__file__).parent
BACKENDS = ("jax", "tensorflow", "torch")
# The seed notebook's settings: 256x256, batch 32, 20 epochs, 70/20/10.
SEED_SETTINGS = ["--epochs", "20", "--batch-size", "32", "--image-size", "256", "--split", "0.7,0.2,0.1"]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _has_images(folder: Path) -> bool:
    return folder.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.rglob("*"))


def _with_out(args, folder: str) -> list[str]:
    """The session's arguments, with ``--out folder`` unless they name one."""
    return list(args) if "--out" in args else [*args, "--out", folder]


def _train(session: nox.Session, backend: str) -> None:
    session.install("-e", f".[{backend}]")
    args = list(session.posargs)
    if "--data" not in args:
        if not _has_images(ROOT / "data"):
            session.log("data/ holds no images: drawing a synthetic happy/sad face set there "
                        "(emotion synth data). Pass -- --data DIR to train on your own.")
            session.run("emotion", "synth", "data")
        args = ["--data", "data", *args]
    if "--out" not in args:
        args += ["--out", f"models/{backend}"]
    if "--resume" not in args and "--overwrite" not in args:
        args.append("--overwrite")  # the main job trains again each time it is run (-- --resume continues one)
        session.log("a finished run in the --out folder is replaced (emotion fit --overwrite)")
    session.run("emotion", "fit", "--backend", backend, *SEED_SETTINGS, *args)


@nox.session(name="train-jax")
def train_jax(session):
    """Train the seed CNN under JAX (installs emotion[jax] only)."""
    _train(session, "jax")


@nox.session(name="train-tensorflow")
def train_tensorflow(session):
    """Train the seed CNN under TensorFlow (installs emotion[tensorflow] only)."""
    _train(session, "tensorflow")


@nox.session(name="train-torch")
def train_torch(session):
    """Train the seed CNN under PyTorch (installs emotion[torch] only)."""
    _train(session, "torch")


@nox.session
def tests(session):
    """Every test under every backend, each backend in its own pytest process, then the cross-backend tests.
    Tests marked ``once`` touch no backend (decoding, caches, detectors, configs): they run under the first."""
    session.install("-e", ".[all,dev,export,serve]")
    # The tests check behaviour, not speed: XLA (JAX, and TensorFlow's jit_compile) compiles their many small
    # programs at its lowest optimisation level (the time it saves: docs/benchmarks.md).
    fast_compile = {"XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0 "
                                 "--xla_llvm_disable_expensive_passes=true".strip()}
    for i, backend in enumerate(BACKENDS):
        session.log(f"--- tests under KERAS_BACKEND={backend}")
        once_done = {"EMOTION_TESTS_ONCE_DONE": "1"} if i else {}
        session.run("pytest", "-m", "not cross_backend", "--durations=10", *session.posargs,
                    env={"KERAS_BACKEND": backend, **once_done, **fast_compile})
    session.log("--- cross-backend tests (one subprocess per backend)")
    session.run("pytest", "-m", "cross_backend", "--durations=10", *session.posargs,
                env={"KERAS_BACKEND": BACKENDS[0], **fast_compile},
                success_codes=[0, 5])  # 5: -k deselected them all


@nox.session
def parity(session):
    """Train under JAX, TensorFlow and PyTorch from the same initial weights on the same batches; compare
    per-epoch and test metrics and cross-load every .keras (runs/parity/parity.md). Args go to `emotion parity`."""
    session.install("-e", ".[all]")
    session.run("emotion", "parity", *_with_out(session.posargs, "runs/parity"))


@nox.session
def export(session):
    """Export one trained model to every format from every backend that can, each verified with its own runtime
    (runs/export/export.md). `-- --model FILE.keras` skips the training; `-- --data DIR` picks the images."""
    session.install("-e", ".[all,export]")
    args = list(session.posargs)
    data = args[args.index("--data") + 1] if "--data" in args else "../shared/data/web-happy-sad"
    if not _has_images(ROOT / data):
        session.log(f"{data} holds no images: drawing a synthetic face set in data/ (emotion synth data)")
        if not _has_images(ROOT / "data"):
            session.run("emotion", "synth", "data")
        data = "data"
    model = args[args.index("--model") + 1] if "--model" in args else "runs/export/model/imageclassifier.keras"
    if "--model" not in args:
        session.run("emotion", "fit", "--backend", "tensorflow", "--data", data, "--out", "runs/export/model",
                    "--epochs", "15", "--image-size", "128", "--quiet")
    session.run("emotion", "export", "--matrix", "--model", model, "--out", "runs/export", "--data", data)


@nox.session
def bench(session):
    """Time training and inference under JAX, TensorFlow and PyTorch (each in its own process) and the seed
    notebook's own pipeline (runs/bench/bench.md, bench.json, bench.png). Args go to `emotion bench`."""
    session.install("-e", ".[all]")
    args = list(session.posargs)
    if "--data" not in args:
        data = "../shared/data/web-happy-sad"  # the seed's web photos where they are; else data/ (synthetic if empty)
        if not _has_images(ROOT / data):
            data = "data"
            if not _has_images(ROOT / data):
                session.log("data/ holds no images: drawing a synthetic happy/sad face set there (emotion synth data)")
                session.run("emotion", "synth", "data")
        args = ["--data", data, *args]
    session.run("emotion", "bench", *_with_out(args, "runs/bench"))


@nox.session(name="serve-bench")
def serve_bench(session):
    """Load-test `emotion serve` on loopback, with dynamic batching and without, at 1/8/32/64 clients on face
    crops and photos (runs/serve-bench/serve-bench.md, .json, .png). Args go to `emotion serve-bench`."""
    session.install("-e", ".[all,serve]")
    session.run("emotion", "serve-bench", *_with_out(session.posargs, "runs/serve-bench"))


@nox.session
def fuzz(session):
    """The fuzz tests (tests/test_fuzz.py: hostile .keras files through the guard and the load, random YAML through
    load_config) with many random examples instead of a few: EMOTION_FUZZ_EXAMPLES (default 2000), under
    KERAS_BACKEND (default jax). Failures replay from .hypothesis/."""
    session.install("-e", ".[all,dev]")
    examples = os.environ.get("EMOTION_FUZZ_EXAMPLES", "2000")
    backend = os.environ.get("KERAS_BACKEND", "jax")
    session.run("pytest", "tests/test_fuzz.py", "--hypothesis-show-statistics", *session.posargs,
                env={"EMOTION_FUZZ_EXAMPLES": examples, "KERAS_BACKEND": backend})


@nox.session
def lint(session):
    session.install("ruff")
    session.run("ruff", "check", ".")


@nox.session
def docs(session):
    """Build the documentation site (`mkdocs.yml`, `docs/`) into runs/site/ with `mkdocs build --strict`:
    a broken link or anchor, or a page missing from the nav, fails. Installs the package with its `docs`
    extra; griffe reads the API pages from the source and imports nothing. Args go to `mkdocs build`."""
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", *session.posargs, env={"NO_MKDOCS_2_WARNING": "1"})
