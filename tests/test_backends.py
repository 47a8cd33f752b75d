"""`backends.default`: the backend a command picks when none is named is the one Keras itself would pick."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from emotion import backends

pytestmark = pytest.mark.once  # reads the environment and keras.json; imports no framework


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(backends, "installed", lambda: ["jax", "tensorflow", "torch"])
    return tmp_path


def test_tensorflow_when_installed_even_beside_jax(env):
    assert backends.default() == "tensorflow"


def test_the_first_installed_without_tensorflow(env, monkeypatch):
    monkeypatch.setattr(backends, "installed", lambda: ["jax", "torch"])
    assert backends.default() == "jax"
    monkeypatch.setattr(backends, "installed", lambda: [])
    with pytest.raises(backends.BackendError, match="no Keras backend installed"):
        backends.default()


def test_keras_json_then_the_environment_win(env, monkeypatch):
    (env / "keras.json").write_text(json.dumps({"backend": "torch", "floatx": "float32"}))
    assert backends.default() == "torch"
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert backends.default() == "jax"


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '{"backend": 3}', ""])
def test_a_broken_keras_json_is_ignored(env, text):
    (env / "keras.json").write_text(text)
    assert backends.default() == "tensorflow"


def test_jax_compilation_cache_lives_in_emotions_cache_folder(monkeypatch, tmp_path):
    """backends/jax.py keeps JAX's compiled programs between processes (loading a model compiles one
    initializer per weight shape), in jax/ of emotion's cache folder, unless the user says otherwise."""
    from emotion.backends import jax as jax_backend

    for k in ("JAX_COMPILATION_CACHE_DIR", "EMOTION_JAX_CACHE", "XDG_CACHE_HOME",
              "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("EMOTION_CACHE", str(tmp_path / "c"))
    assert jax_backend.compilation_cache_dir() == str(tmp_path / "c" / "jax")
    monkeypatch.delenv("EMOTION_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert jax_backend.compilation_cache_dir() == str(tmp_path / "home" / ".cache" / "emotion" / "jax")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert jax_backend.compilation_cache_dir() == str(tmp_path / "xdg" / "emotion" / "jax")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "mine"))
    assert jax_backend.compilation_cache_dir() == str(tmp_path / "mine")
    monkeypatch.setenv("EMOTION_JAX_CACHE", "off")
    assert jax_backend.compilation_cache_dir() is None
    monkeypatch.delenv("EMOTION_JAX_CACHE")
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    monkeypatch.setenv("EMOTION_CACHE", "off")
    assert jax_backend.compilation_cache_dir() is None
    monkeypatch.setenv("EMOTION_CACHE", str(tmp_path / "c"))
    jax_backend.use_compilation_cache()
    assert os.environ["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "c" / "jax")
    assert os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "0"


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed here")
def test_a_second_process_reads_compiled_programs_from_the_cache(tmp_path):
    code = ("from emotion import backends; backends.select('jax'); import keras, numpy as np; "
            "m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]); m.predict(np.ones((2, 4)), verbose=0)")
    env = {**os.environ, "EMOTION_CACHE": str(tmp_path), "KERAS_BACKEND": "jax"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300)
    first = sorted(p.name for p in (tmp_path / "jax").iterdir())
    assert any(n.endswith("-cache") for n in first)
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300)
    assert sorted(p.name for p in (tmp_path / "jax").iterdir()) == first, "the second process compiled nothing new"
