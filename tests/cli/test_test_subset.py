"""`emotion test` on folders whose classes are a subset of the model's: scored by name; --restrict; bad names."""

import json

import numpy as np
import pytest
from conftest import write_image

from emotion.cli import main
from emotion.modelfile import write_meta
from emotion.predictor import Predictor

CLASSES = ["angry", "happy", "sad"]


@pytest.fixture(scope="module")
def three_class_model(tmp_path_factory):
    from emotion.models.presets import build_model

    model = build_model("seed", (32, 32, 3), 3)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in model.get_weights()])
    path = tmp_path_factory.mktemp("three") / "model.keras"
    model.save(path)
    write_meta(path, {"class_names": CLASSES, "faces": "none"})
    return path


@pytest.fixture(scope="module")
def happy_sad(tmp_path_factory):
    root = tmp_path_factory.mktemp("hs")
    for i in range(6):
        write_image(root / "happy" / f"h{i}.png", size=(32, 32), seed=i)
        write_image(root / "sad" / f"s{i}.png", size=(32, 32), seed=100 + i)
    return root


def run_json(capsys, *argv):
    assert main(["test", *argv, "--json", "--quiet", "--cache", "off"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_subset_folder_is_scored_by_name_against_every_class_and_restricted(capsys, three_class_model, happy_sad):
    full = run_json(capsys, "--model", str(three_class_model), "--data", str(happy_sad))
    assert full["class_names"] == ["happy", "sad"] and full["predicted_classes"] == CLASSES
    cm = np.array(full["confusion_matrix"])
    assert cm.shape == (2, 3) and cm.sum() == 12
    # the model's own probabilities, computed here: argmax over all three, then over happy and sad only
    clf = Predictor.load(three_class_model)
    images = np.stack([clf.preprocess(p) for c in ("happy", "sad") for p in sorted((happy_sad / c).iterdir())])
    probs = clf.probabilities(images)
    truth = np.repeat([1, 2], 6)
    assert full["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == truth))
    restricted = run_json(capsys, "--model", str(three_class_model), "--data", str(happy_sad), "--restrict")
    assert restricted["predicted_classes"] == ["happy", "sad"]
    assert np.array(restricted["confusion_matrix"]).shape == (2, 2)
    picked = np.where(probs[:, 2] > probs[:, 1], 2, 1)
    recalls = [np.mean(picked[truth == c] == c) for c in (1, 2)]
    assert restricted["balanced_accuracy"] == pytest.approx(np.mean(recalls))
    assert restricted["per_class"]["sad"]["recall"] == pytest.approx(recalls[1])
    assert restricted["accuracy"] >= full["accuracy"]  # no face can be lost to angry any more


def test_a_folder_class_the_model_does_not_know_is_one_line_naming_it(capsys, three_class_model, tmp_path):
    for c in ("happy", "surprise"):
        write_image(tmp_path / c / "x.png", size=(32, 32))
    assert main(["test", "--model", str(three_class_model), "--data", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "['surprise']" in err[0] and "angry, happy, sad" in err[0], err


def test_class_folders_match_the_models_classes_ignoring_case(capsys, three_class_model, happy_sad, tmp_path):
    for c, folder in (("happy", "Happy"), ("sad", "SAD")):
        for f in (happy_sad / c).iterdir():
            (tmp_path / folder).mkdir(exist_ok=True)
            (tmp_path / folder / f.name).write_bytes(f.read_bytes())
    lower = run_json(capsys, "--model", str(three_class_model), "--data", str(happy_sad))
    upper = run_json(capsys, "--model", str(three_class_model), "--data", str(tmp_path))
    assert upper["class_names"] == ["happy", "sad"] and upper["per_class"] == lower["per_class"]
    assert upper["confusion_matrix"] == lower["confusion_matrix"]


def test_two_folders_of_one_class_are_one_line_naming_them(capsys, three_class_model, tmp_path):
    for c in ("happy", "Happy", "sad"):
        write_image(tmp_path / c / "x.png", size=(32, 32))
    assert main(["test", "--model", str(three_class_model), "--data", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'Happy', 'happy'" in err[0] and "keep one" in err[0], err
