"""The models that ship with the package: present, small, face models, and under this process's backend each
gives the outputs recorded when it was trained (so every backend loads it the same)."""

import numpy as np
import pytest
from conftest import BACKEND

from emotion.modelfile import DEFAULT_MODEL, SHIPPED, read_meta, resolve_model
from emotion.predictor import Predictor
from emotion.training.runfolder import reference_inputs


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_the_models_ship_inside_the_package(name):
    path = resolve_model(name)
    assert path == SHIPPED[name] and path.is_file() and path.with_suffix(".onnx").is_file()
    assert path.stat().st_size < 8_000_000, "a few MB: no optimizer state"
    meta = read_meta(path)
    assert meta["name"] == name and meta["class_names"] == ["happy", "sad"] and meta["faces"] == "crop"
    assert meta["trained_by"].startswith("emotion fit --config configs/")
    assert meta["test"]["accuracy"] >= 0.90, "the FER2013 PrivateTest figure the README gives"


def test_the_default_is_the_web_photo_model_started_from_the_fer2013_one():
    assert resolve_model() == SHIPPED[DEFAULT_MODEL]
    meta = read_meta(resolve_model())
    assert "configs/web-faces-transfer.yaml" in meta["trained_by"] and "fer2013" in meta["test"]["data"]
    for name in SHIPPED:
        assert read_meta(SHIPPED[name])["test"]["accuracy"] >= 0.93, "README: FER2013 PrivateTest"


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_the_shipped_model_gives_its_recorded_outputs_under_this_backend(name):
    clf = Predictor.load(name)
    assert clf.face_model and clf.faces == "largest" and clf.image_size == 48 and clf.color == "grayscale"
    x = reference_inputs(clf.model.input_shape[1:])
    recorded = np.array(read_meta(resolve_model(name))["reference"]["outputs"])
    got = np.asarray(clf.model.predict(x.astype(np.float32), verbose=0))
    assert got.shape == recorded.shape
    np.testing.assert_allclose(got, recorded, atol=1e-4)
    assert len(np.unique(np.round(recorded, 3))) > 1, "the reference inputs tell outputs apart"


@pytest.mark.skipif(BACKEND != "jax", reason="jit of the loaded model: a JAX matter (TensorFlow runs tf.function)")
def test_a_loaded_model_is_jitted_under_jax():
    """Inference sets the backend up as training does: without it, stock Keras refuses to jit a model holding
    RandomRotation and JAX predicts it op by op (6x slower per face here)."""
    assert Predictor.load().model.jit_compile is True
