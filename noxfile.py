"""Sessions that drive emotion. `nox -l` lists them.

    nox -s train-jax                       # install emotion[jax], train the seed CNN on data/ (synthetic if empty)
    nox -s train-torch -- --data ../shared/data/web-happy-sad --out runs/torch
    nox -s tests                           # the whole suite under JAX, TensorFlow and PyTorch, each in its own process
    nox -s tests -- -k split               # arguments after -- go to pytest
    nox -s lint
"""

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
    """Every test under every backend, each backend in its own pytest process, then the cross-backend tests."""
    session.install("-e", ".[all,dev]")
    for backend in BACKENDS:
        session.log(f"--- tests under KERAS_BACKEND={backend}")
        session.run("pytest", "-m", "not cross_backend", *session.posargs, env={"KERAS_BACKEND": backend})
    session.log("--- cross-backend tests (one subprocess per backend)")
    session.run("pytest", "-m", "cross_backend", *session.posargs, env={"KERAS_BACKEND": BACKENDS[0]},
                success_codes=[0, 5])  # 5: -k deselected them all


@nox.session
def lint(session):
    session.install("ruff")
    session.run("ruff", "check", ".")
