"""Transfer learning under the backend of this process: --init-from copies a run's weights, --freeze-epochs
trains the head alone first."""

import json

import keras
import numpy as np
import pytest
from conftest import BACKEND

from emotion.cli import main
from emotion.config import load_config
from emotion.data.datamodule import EmotionDataModule
from emotion.errors import EmotionError
from emotion.models.module import EmotionClassifier
from emotion.models.presets import build_model
from emotion.models.surgery import mix_weights, transfer_weights, with_flip_tta
from emotion.training.trainer import Trainer, seed_everything


@pytest.fixture(scope="module")
def source(synth_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("source")
    assert main(["fit", "--data", str(synth_dir), "--out", str(out), "--epochs", "1", "--image-size", "32",
                 "--batch-size", "16", "--quiet", "--tta-flip"]) == 0
    return out / "imageclassifier.keras"


def test_transfer_copies_every_weight_through_the_tta_wrapper(source):
    trained = keras.saving.load_model(source)
    fresh = build_model("seed", (32, 32, 3), 2)
    assert transfer_weights(trained, fresh) == len([layer for layer in fresh.layers if layer.weights])
    inner = next(layer for layer in trained.layers if isinstance(layer, keras.Model))
    for a, b in zip(inner.get_weights(), fresh.get_weights(), strict=True):
        assert np.array_equal(a, b)


def test_transfer_to_more_classes_keeps_a_fresh_head_and_refuses_other_shapes():
    source = build_model("seed", (32, 32, 3), 2)
    six = build_model("seed", (32, 32, 3), 6)
    head = six.get_layer("head").get_weights()[0].copy()
    copied = transfer_weights(with_flip_tta(source), six)
    assert copied == len([layer for layer in six.layers if layer.weights]) - 1
    assert np.array_equal(six.get_layer("head").get_weights()[0], head)
    with pytest.raises(EmotionError, match="another preset or input size"):
        transfer_weights(source, build_model("seed", (48, 48, 3), 2))
    with pytest.raises(EmotionError, match="another preset or input size"):
        transfer_weights(source, build_model("vgg-bn", (32, 32, 3), 2))


def test_freeze_epochs_train_only_the_head_first(synth_dir):
    seed_everything(0)
    cfg = load_config(None, {"data.data": str(synth_dir), "data.image_size": 32, "data.batch_size": 16,
                             "trainer.epochs": 2, "trainer.verbose": 0, "trainer.tensorboard": False,
                             "trainer.freeze_epochs": 1, "model.init_from": "x.keras"})
    dm = EmotionDataModule(cfg.data).setup()
    module = EmotionClassifier("seed", dm.input_shape, dm.num_classes)
    snapshots = []

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append([w.copy() for w in module.model.get_weights()])

    before = [w.copy() for w in module.model.get_weights()]
    history = Trainer.from_config(cfg, callbacks=[Snapshot()]).fit(module, dm)
    assert len(history["loss"]) == 2 and len(history["val_loss"]) == 2
    head = len(before) - 2  # the head's kernel and bias are the last two arrays
    first, second = snapshots
    assert all(np.array_equal(a, b) for a, b in zip(before[:head], first[:head], strict=True)), "features frozen"
    assert not np.array_equal(before[head], first[head]), "the head trains in the frozen epoch"
    assert not np.array_equal(first[0], second[0]), "everything trains afterwards"
    assert all(layer.trainable for layer in module.model.layers)


def test_fit_init_from_through_the_cli(source, synth_dir, tmp_path, capsys):
    assert main(["fit", "--data", str(synth_dir), "--out", str(tmp_path / "t"), "--epochs", "2", "--image-size",
                 "32", "--batch-size", "16", "--quiet", "--init-from", str(source), "--freeze-epochs", "1"]) == 0
    assert "started from" in capsys.readouterr().err
    metrics = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert metrics["config"]["model"]["init_from"] == str(source) and len(metrics["history"]["loss"]) == 2
    rc = main(["fit", "--data", str(synth_dir), "--out", str(tmp_path / "u"), "--epochs", "2", "--freeze-epochs", "1"])
    assert rc == 2 and "needs init_from" in capsys.readouterr().err
    rc = main(["fit", "--data", str(synth_dir), "--out", str(tmp_path / "v"), "--image-size", "48",
               "--init-from", str(source), "--epochs", "1"])
    assert rc == 2 and "another preset or input size" in capsys.readouterr().err


@pytest.mark.parametrize("why, words", [("missing", "model file not found"), ("foreign", "not a Keras model file"),
                                        ("too big", "--max-model-mb raises it")])
def test_a_bad_init_from_file_is_one_line_before_any_data_is_read(source, synth_dir, tmp_path, capsys, why, words):
    model, limit = {"missing": (tmp_path / "none.keras", []), "foreign": (synth_dir / "happy" / "happy_0000.jpg", []),
                    "too big": (source, ["--max-model-mb", "0.001"])}[why]
    rc = main(["fit", "--data", str(synth_dir), "--out", str(tmp_path / "t"), "--epochs", "1", "--image-size", "32",
               "--init-from", str(model), *limit])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("emotion: error:") and words in err[0], err
    assert not (tmp_path / "t").exists()


def test_mix_weights_is_the_weighted_mean_layer_by_layer():
    start, trained = build_model("seed", (32, 32, 3), 2), build_model("seed", (32, 32, 3), 2)
    a, b = start.get_weights(), trained.get_weights()
    assert mix_weights(with_flip_tta(start), trained, 0.25) == len([la for la in trained.layers if la.weights])
    for x, y, z in zip(a, b, trained.get_weights(), strict=True):
        np.testing.assert_allclose(z, 0.25 * x + 0.75 * y, rtol=1e-6, atol=1e-7)
    six = build_model("seed", (32, 32, 3), 6)
    head = six.get_layer("head").get_weights()[0].copy()
    assert mix_weights(start, six, 0.5) == len([la for la in six.layers if la.weights]) - 1
    assert np.array_equal(six.get_layer("head").get_weights()[0], head), "a head of other shape is kept"


@pytest.mark.skipif(BACKEND != "tensorflow", reason="trains twice, once under TensorFlow: the mix is numpy on "
                    "get_weights and the callback is backend-neutral (transfer itself is tested under each backend)")
def test_keep_init_mixes_the_starting_weights_into_the_saved_model(source, synth_dir, tmp_path, capsys):
    args = ["fit", "--data", str(synth_dir), "--image-size", "32", "--batch-size", "16", "--quiet", "--epochs", "1",
            "--init-from", str(source), "--lr", "0.01"]
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0
    assert main([*args, "--out", str(tmp_path / "kept"), "--keep-init", "0.5"]) == 0
    start, plain, kept = (keras.saving.load_model(p) for p in
                          (source, tmp_path / "plain" / "imageclassifier.keras",
                           tmp_path / "kept" / "imageclassifier.keras"))
    for s, p, k in zip(start.get_weights(), plain.get_weights(), kept.get_weights(), strict=True):
        np.testing.assert_allclose(k, 0.5 * s + 0.5 * p, rtol=1e-4, atol=1e-5)  # the same training, then mixed
    assert not all(np.allclose(s, p) for s, p in zip(start.get_weights(), plain.get_weights(), strict=True))
    metrics = json.loads((tmp_path / "kept" / "metrics.json").read_text())
    assert metrics["config"]["model"]["keep_init"] == 0.5
    rc = main(["fit", "--data", str(synth_dir), "--out", str(tmp_path / "w"), "--keep-init", "0.5"])
    assert rc == 2 and "keep_init needs init_from" in capsys.readouterr().err
    rc = main([*args, "--out", str(tmp_path / "x"), "--keep-init", "1"])
    assert rc == 2 and "keep_init must be a number in [0, 1)" in capsys.readouterr().err
