"""A run folder that is never half-written, and never written by two processes at once.

    with RunLock("runs/a"):                     # a second fit into runs/a refuses in one line
        write_atomic("runs/a/metrics.json", text)  # a temporary name in the folder, then os.replace

Every file is written under a temporary name beside its target and renamed into place (`os.replace` is atomic on
POSIX), so a kill leaves either the old file or the new one, never a truncated one. The model and its
`metrics.json` carry the same ``run_id``: a reader can tell that they belong together.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from emotion import __version__, backends
from emotion.errors import EmotionError
from emotion.files import atomic_path, write_atomic  # noqa: F401 (the run folder's writers; callers import them here)

if TYPE_CHECKING:  # annotations only: this module imports no framework
    import keras

    from emotion.data.datamodule import EmotionDataModule

LOCK_FILE = ".lock"
MODEL_FILE = "imageclassifier.keras"


class RunLock:
    """An exclusive `flock` on ``<folder>/.lock`` for as long as a fit writes the folder. The kernel drops it when
    the process ends, however it ends, so a killed run never leaves a stale lock; a run that ends removes the file
    (a finished run folder holds no ``.lock``). Removing it is safe against a process waiting on it: whoever takes
    the lock checks that the file it locked is still the one at the path, and starts again if not."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_FILE
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise EmotionError(f"{self.folder} is in use by another fit (pid {holder}); wait for it, or pick "
                                   "another --out") from None
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:  # removed by the run that held it, between our open and our lock
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            try:
                os.unlink(self.folder / LOCK_FILE)  # while still holding it; a waiter then sees another file
            except FileNotFoundError:
                pass
            os.close(self._fd)  # releases the lock
            self._fd = None


def write_json(target: str | Path, obj) -> None:
    write_atomic(target, json.dumps(obj, indent=2))


def clean_temporaries(folder: str | Path) -> None:
    """Remove what a killed writer left behind (``.name.XXXX.tmp*`` files)."""
    for p in Path(folder).glob(".*.tmp*"):
        if p.is_file() and not p.is_symlink():
            p.unlink()


# ------------------------------------------------------------------------------------------ what it holds
def sample_indices(labels, n: int = 4) -> np.ndarray:
    """The first images of each class in turn (class 0, class 1, ..., class 0, ...), ``n`` in all: a sample
    grid that shows every class, not the first ``n`` files of the first class."""
    labels = np.asarray(labels)
    queues = [list(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    out = []
    while len(out) < min(n, len(labels)):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return np.array(out, dtype=int)


def reference_inputs(shape, n: int = 4) -> np.ndarray:
    """Generated images on which a model's outputs are recorded at training time (`model_meta`), so a copy of
    the model can be checked anywhere, under any backend."""
    return np.random.default_rng(0).integers(0, 256, (n, *shape), dtype=np.uint8)


def model_meta(model: keras.Model, dm: EmotionDataModule, preset: str) -> dict:
    """What a `.keras` carries for its users (`emotion.modelfile.read_meta`)."""
    ref = reference_inputs(model.input_shape[1:])
    return {
        "class_names": dm.class_names,
        "faces": "crop" if dm.cfg.faces in ("crop", "given") else "none",
        # trained on crops: the margin they were cut with; on given faces: the detector's own at inference
        "margin": dm.detector().margin if dm.cfg.faces == "crop" else None,
        "detector": dm.cfg.detector,
        "image_size": dm.cfg.image_size,
        "color": dm.cfg.color,
        "preset": preset,
        "emotion_version": __version__,
        **backends.describe(),
        "reference": {"inputs": "numpy default_rng(0).integers(0, 256, (4, H, W, C), uint8)",
                      "outputs": np.asarray(model.predict(ref.astype(np.float32), verbose=0)).tolist()},
    }
