"""The model that ships with the package: present, small, a face model, and under this process's backend it
gives the outputs recorded when it was trained (so every backend loads it the same)."""

import numpy as np

from emotion.infer import DEFAULT_MODEL, SHIPPED, Predictor, read_meta, resolve_model
from emotion.training.trainer import reference_inputs


def test_the_default_model_ships_inside_the_package():
    path = resolve_model()
    assert path == SHIPPED[DEFAULT_MODEL] and path.is_file()
    assert path.stat().st_size < 8_000_000, "a few MB: no optimizer state"
    meta = read_meta(path)
    assert meta["class_names"] == ["happy", "sad"] and meta["faces"] == "crop"
    assert meta["trained_by"].startswith("emotion fit --config configs/")
    assert meta["test"]["accuracy"] >= 0.93, "the FER2013 PrivateTest figure the README gives"


def test_the_shipped_model_gives_its_recorded_outputs_under_this_backend():
    clf = Predictor.load()
    assert clf.face_model and clf.faces == "largest" and clf.image_size == 48 and clf.color == "grayscale"
    x = reference_inputs(clf.model.input_shape[1:])
    recorded = np.array(read_meta(resolve_model())["reference"]["outputs"])
    got = np.asarray(clf.model.predict(x.astype(np.float32), verbose=0))
    assert got.shape == recorded.shape
    np.testing.assert_allclose(got, recorded, atol=1e-4)
    assert len(np.unique(np.round(recorded, 3))) > 1, "the reference inputs tell outputs apart"
