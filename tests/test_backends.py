"""`backends.default`: the backend a command picks when none is named is the one Keras itself would pick."""

import json

import pytest

import backends

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
