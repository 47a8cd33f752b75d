"""The models that ship with the package: present, small, face models, and under this process's backend each
gives the outputs recorded when it was trained (so every backend loads it the same)."""

import csv
import io
import json

import cv2
import numpy as np
import pytest
from conftest import BACKEND, run_cli

from emotion.data.synth import face
from emotion.modelfile import DEFAULT_MODEL, SHIPPED, read_meta, resolve_model
from emotion.predictor import Predictor
from emotion.training.runfolder import reference_inputs

EIGHT = ["angry", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
CLASSES = {"happy-sad": ["happy", "sad"], "fer2013-happy-sad": ["happy", "sad"], "emotions": EIGHT}
# the test-split figure each model's card gives (docs/models.md): FER2013 PrivateTest happy/sad, FER+ test (8)
FLOOR = {"happy-sad": 0.93, "fer2013-happy-sad": 0.93, "emotions": 0.80}


def test_every_model_the_card_describes_ships():
    assert set(SHIPPED) == set(CLASSES)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_the_models_ship_inside_the_package(name):
    path = resolve_model(name)
    assert path == SHIPPED[name] and path.is_file() and path.with_suffix(".onnx").is_file()
    assert path.stat().st_size < 8_000_000, "a few MB: no optimizer state"
    meta = read_meta(path)
    assert meta["name"] == name and meta["class_names"] == CLASSES[name] and meta["faces"] == "crop"
    assert meta["trained_by"].startswith(("emotion fit --config configs/", "python scripts/derive_model.py"))
    assert meta["test"]["accuracy"] >= FLOOR[name], "the test figure docs/models.md gives"


def test_the_default_is_a_happy_sad_model():
    assert resolve_model() == SHIPPED[DEFAULT_MODEL] and read_meta(resolve_model())["class_names"] == ["happy", "sad"]


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_the_shipped_model_gives_its_recorded_outputs_under_this_backend(name):
    clf = Predictor.load(name)
    assert clf.face_model and clf.image_size == 48 and clf.color == "grayscale"
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


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    image = np.asarray(face(0, np.random.default_rng(3), size=160).convert("RGB"))
    path = tmp_path_factory.mktemp("photo") / "face.png"
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path


def test_eight_emotion_rows_in_predict_json_and_csv(photo):
    done = run_cli("predict", "--model", "emotions", "--json", str(photo))
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert list(row["probs"]) == EIGHT and row["label"] in EIGHT
    assert row["p"] == pytest.approx(max(row["probs"].values())) and sum(row["probs"].values()) == pytest.approx(1)
    done = run_cli("predict", "--model", "emotions", "--csv", str(photo))
    table = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [c for c in table[0] if c.startswith("p_")] == [f"p_{c}" for c in EIGHT]
    assert float(table[0][f"p_{row['label']}"]) == pytest.approx(row["p"], abs=1e-4)


def test_eight_emotion_columns_in_the_video_csv(photo, tmp_path):
    tile = cv2.resize(cv2.imread(str(photo)), (120, 120))
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for i in range(5):
        frame = np.full((240, 320, 3), 110, np.uint8)
        frame[40:160, 30 + 10 * i:150 + 10 * i] = tile
        writer.write(frame)
    writer.release()
    done = run_cli("video", str(clip), "--model", "emotions", "--csv", str(tmp_path / "frames.csv"))
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(open(tmp_path / "frames.csv")))
    assert [c for c in rows[0] if c.startswith("p_")] == [f"p_{c}" for c in EIGHT] and len(rows) >= 5
    labelled = [r for r in rows if r["label"]]
    assert labelled and all(r["label"] in EIGHT for r in labelled)
