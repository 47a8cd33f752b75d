"""Shared fixtures. The suite runs once per backend (KERAS_BACKEND set by `nox -s tests`), each backend in its
own process; tests marked `cross_backend` start one subprocess per installed backend themselves."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Keep decoded-image caches out of the user's home, and pick a backend before anything imports Keras.
os.environ.setdefault("EMOTION_CACHE", tempfile.mkdtemp(prefix="emotion-cache-"))
from emotion import backends  # noqa: E402

BACKEND = backends.select()
REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_collection_modifyitems(config, items):
    """Tests marked ``once`` use no Keras backend (decoding, caches, detectors, configs, pip): `nox -s tests` sets
    EMOTION_TESTS_ONCE_DONE for every backend after its first, and they are skipped there. A plain pytest runs them."""
    if os.environ.get("EMOTION_TESTS_ONCE_DONE"):
        skip = pytest.mark.skip(reason="touches no backend: ran under the first backend of this `nox -s tests`")
        for item in items:
            if item.get_closest_marker("once"):
                item.add_marker(skip)


def pytest_report_header(config):
    return f"emotion backend: {BACKEND} (installed: {', '.join(backends.installed())})"


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A small synthetic happy/sad set (30 per class, 64 px)."""
    from emotion.data.synth import generate

    out = tmp_path_factory.mktemp("synth")
    generate(out, per_class=30, seed=0, size=64)
    return out


def write_image(path: Path, size=(40, 40), mode="RGB", fmt=None, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"RGB": 3, "RGBA": 4, "L": 1, "CMYK": 3}[mode]
    arr = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    img = Image.fromarray(arr[..., 0] if channels == 1 else arr)
    img.convert(mode).save(path, format=fmt)
    return path


def write_classes(root: Path, per_class: int = 3, size=(12, 12)) -> Path:
    """``root/happy/h<i>.png`` and ``root/sad/s<i>.png``: ``per_class`` random images each, all different."""
    for i in range(per_class):
        write_image(root / "happy" / f"h{i}.png", size=size, seed=i)
        write_image(root / "sad" / f"s{i}.png", size=size, seed=1000 + i)
    return root


def run_cli(*args: str, backend: str | None = None, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    """`python -m emotion ARGS` in a fresh process (with ``backend`` as KERAS_BACKEND)."""
    env = dict(os.environ, KERAS_BACKEND=backend or BACKEND)
    return subprocess.run([sys.executable, "-m", "emotion", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout)


def run_python(code: str, backend: str, timeout=600) -> subprocess.CompletedProcess:
    env = dict(os.environ, KERAS_BACKEND=backend)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)


def tiny_face_model(path: Path, class_names=("happy", "sad")) -> Path:
    """A small untrained face model (24x24 grey; one sigmoid for two classes, else a softmax), saved with its
    emotion.json: quick to load and compile under every backend."""
    import keras

    from emotion.modelfile import write_meta

    keras.utils.set_random_seed(0)
    inputs = keras.Input((24, 24, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    k = len(class_names)
    head = keras.layers.Dense(1, activation="sigmoid") if k == 2 else keras.layers.Dense(k, activation="softmax")
    keras.Model(inputs, head(x)).save(path)
    write_meta(path, {"class_names": list(class_names), "faces": "crop"})
    return path


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` and holds one empty data chunk: a decompression bomb's
    header, without the memory to build one."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")
