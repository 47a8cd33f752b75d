"""The Python way in (`emotion.load(...).predict(...)`) and the ONNX runtime that needs no deep-learning framework."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

import emotion
from emotion.data.synth import face
from emotion.errors import EmotionError
from emotion.images import decode_image
from emotion.modelfile import read_meta, resolve_model
from emotion.predictor import Predictor
from emotion.training.runfolder import reference_inputs


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A drawn face on a larger canvas, saved as a JPEG."""
    img, _ = face(0, np.random.default_rng(3), size=160, with_box=True)
    path = tmp_path_factory.mktemp("api") / "face.jpg"
    img.save(path, quality=95)
    return path


@pytest.fixture(scope="module")
def clf():
    return emotion.load()


def test_the_input_is_named_for_its_contract():
    from emotion.models.presets import build_model

    assert build_model("seed", (32, 32, 3)).inputs[0].name == "rgb_0_255"
    assert build_model("vgg-bn", (32, 32, 1)).inputs[0].name == "gray_0_255"
    assert emotion.load().model.inputs[0].name == "gray_0_255"  # the shipped model says so too
    onnx = Predictor.load(runtime="onnx").model
    assert onnx.input_name == "gray_0_255" and onnx.input_shape[1:] == (48, 48, 1)


def test_predict_a_file_and_the_same_image_as_an_array_agree(clf, photo):
    rows = clf.predict(photo)
    assert rows and rows[0]["file"] == str(photo)
    same = clf.predict(decode_image(photo))
    assert [r["label"] for r in same] == [r["label"] for r in rows]
    np.testing.assert_allclose([r["p"] for r in same], [r["p"] for r in rows], atol=1e-6)
    assert set(rows[0]["probs"]) == {"happy", "sad"} and abs(sum(rows[0]["probs"].values()) - 1) < 1e-5


def test_an_array_scaled_to_0_1_is_warned_about(clf, photo):
    image = decode_image(photo)
    with warnings.catch_warnings(record=True) as seen:  # raw 0-255 values: no such warning
        warnings.simplefilter("always")
        clf.predict(image)
    assert not [w for w in seen if "[0, 1]" in str(w.message)]
    with pytest.warns(UserWarning, match=r"\[0, 1\].*multiply by 255"):
        clf.predict(image / 255.0)


@pytest.mark.parametrize("bad", [np.zeros((4,)), np.zeros((8, 8, 2)), np.array([["a"]]), np.full((8, 8, 3), np.nan)])
def test_arrays_that_are_not_images_are_refused_in_one_line(clf, bad):
    with pytest.raises(EmotionError):
        clf.predict(bad)


def test_a_missing_file_is_an_error(clf, tmp_path):
    with pytest.raises(EmotionError, match="not found"):
        clf.predict(tmp_path / "nope.jpg")


def test_the_shipped_onnx_gives_the_recorded_outputs():
    onnx = Predictor.load(runtime="onnx")
    assert onnx.class_names == ["happy", "sad"] and onnx.faces == "all"  # its metadata came along
    x = reference_inputs(onnx.model.input_shape[1:]).astype(np.float32)
    recorded = np.array(read_meta(resolve_model())["reference"]["outputs"])
    np.testing.assert_allclose(onnx.model.predict_on_batch(x), recorded, atol=1e-4)


def test_runtime_onnx_refuses_a_keras_file_and_names_the_export_command(tmp_path):
    with pytest.raises(EmotionError, match="emotion export"):
        Predictor.load(resolve_model(), runtime="onnx")


@pytest.mark.cross_backend
def test_predict_with_onnx_imports_no_framework_and_agrees_with_keras(photo):
    """`emotion predict --runtime onnx` with keras, tensorflow, jax and torch made unimportable."""
    block = "import sys\nfor m in ('keras', 'tensorflow', 'jax', 'torch'): sys.modules[m] = None\n"
    code = block + ("from emotion.cli import main\n"
                    f"sys.exit(main(['predict', '--runtime', 'onnx', '--json', {str(photo)!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    onnx_rows = json.loads(done.stdout)
    keras_rows = emotion.load().predict(photo)
    assert [r["label"] for r in onnx_rows] == [r["label"] for r in keras_rows]
    np.testing.assert_allclose([r["p"] for r in onnx_rows], [r["p"] for r in keras_rows], atol=1e-4)


def test_a_reader_that_goes_away_is_told_in_one_line(tmp_path, photo):
    """`emotion predict ... | head -1`: a closed pipe is a user condition (issue 29): the rest of the output is
    dropped, one line says why, exit 2, no traceback."""
    for i in range(40):
        (tmp_path / f"{i:02d}.jpg").write_bytes(photo.read_bytes())
    proc = subprocess.Popen([sys.executable, "-m", "emotion", "predict", "--runtime", "onnx", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 2, err
    assert err.strip().splitlines() == [
        "emotion: error: cannot write the output (standard output, where it is redirected): "
        "the reader of the output went away (a closed pipe)"], err
