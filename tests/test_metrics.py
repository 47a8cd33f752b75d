"""Undefined metrics (0/0) are said to be undefined: null in JSON, a warning line, never a made-up 0 or 1."""

import json

import numpy as np
import pytest

from emotion.metrics import score

pytestmark = pytest.mark.once  # touches no Keras backend: `nox -s tests` runs it once


def test_a_class_missing_from_the_split_has_null_recall_and_a_warning():
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.1, 0.6, 0.3]])
    r = json.loads(json.dumps(score(probs, labels, ["angry", "happy", "sad"])))  # as metrics.json holds it
    sad = r["per_class"]["sad"]
    assert sad == {"precision": None, "recall": None, "f1": None, "support": 0}
    assert r["per_class"]["angry"]["recall"] == 0.5 and r["per_class"]["happy"]["precision"] == pytest.approx(2 / 3)
    assert r["recall"] == pytest.approx((0.5 + 1.0) / 2)  # the macro mean over the classes where it is defined
    assert r["balanced_accuracy"] == pytest.approx(0.75)
    assert any("'sad' has no images here" in w for w in r["warnings"])


def test_a_class_never_predicted_has_null_precision_but_a_defined_f1():
    labels = np.array([0, 0, 0, 1])
    r = score(np.zeros(4), labels, ["happy", "sad"])  # always happy
    assert r["precision"] is None and r["recall"] == 0.0 and r["f1"] == 0.0
    assert r["warnings"] == ["no image was predicted as 'sad': its precision is undefined (null)"]
    assert "warnings" not in score(labels.astype(float), labels, ["happy", "sad"])


def test_cv_summary_skips_undefined_folds():
    from emotion.training.cv import _summary

    s = _summary([0.5, None, 1.0])
    assert s["mean"] == pytest.approx(0.75) and s["undefined_in"] == [1]
    assert _summary([None, None])["mean"] is None
