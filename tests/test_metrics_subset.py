"""`emotion test` on a folder whose classes are a subset of the model's: scored by name, with --restrict."""

import numpy as np
import pytest

from emotion.metrics import score, score_classes

pytestmark = pytest.mark.once
MODEL = ["angry", "happy", "neutral", "sad"]


def test_a_face_predicted_as_a_class_without_a_folder_counts_as_wrong():
    probs = np.array([[0.1, 0.7, 0.1, 0.1],    # happy, right
                      [0.1, 0.2, 0.6, 0.1],    # neutral: no folder, wrong
                      [0.1, 0.1, 0.1, 0.7],    # sad, right
                      [0.0, 0.5, 0.1, 0.4]])   # happy, wrong
    labels = np.array([0, 0, 1, 1])  # folder classes: happy, sad
    r = score_classes(probs, labels, ["happy", "sad"], MODEL)
    assert r["accuracy"] == 0.5 and r["predicted_classes"] == MODEL
    assert r["confusion_matrix"] == [[0, 1, 1, 0], [0, 1, 0, 1]]  # rows: the folder's classes; columns: the model's
    assert r["per_class"]["happy"]["recall"] == 0.5 and r["per_class"]["sad"]["recall"] == 0.5
    assert r["per_class"]["happy"]["precision"] == 0.5 and r["per_class"]["sad"]["precision"] == 1.0
    assert r["balanced_accuracy"] == 0.5
    assert r["loss"] == pytest.approx(-np.mean(np.log([0.7, 0.2, 0.7, 0.4])))


def test_restrict_takes_the_top_class_among_the_folders_classes():
    probs = np.array([[0.1, 0.2, 0.6, 0.1], [0.0, 0.5, 0.1, 0.4], [0.3, 0.1, 0.2, 0.4]])
    labels = np.array([0, 1, 1])
    r = score_classes(probs, labels, ["happy", "sad"], MODEL, restrict=True)
    # row 0: happy 0.2 > sad 0.1 (neutral no longer counts); row 1: happy beats sad (wrong); row 2: sad
    assert r["confusion_matrix"] == [[1, 0], [1, 1]] and r["predicted_classes"] == ["happy", "sad"]
    assert r["balanced_accuracy"] == pytest.approx(0.75)


def test_the_model_s_own_classes_score_as_before():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), 20)
    labels = rng.integers(0, 4, 20)
    a, b = score_classes(probs, labels, MODEL, MODEL), score(probs, labels, MODEL)
    assert {k: a[k] for k in b} == b
    binary = rng.random(10)
    two = np.stack([1 - binary, binary], 1)
    assert score_classes(two, labels[:10] % 2, ["happy", "sad"], ["happy", "sad"])["accuracy"] == \
        score(binary, labels[:10] % 2, ["happy", "sad"])["accuracy"]
