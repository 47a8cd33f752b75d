"""Training end to end under the backend of this process."""

import json

import keras
import numpy as np
import pytest
from conftest import BACKEND

from emotion.config import load_config
from emotion.data.datamodule import EmotionDataModule
from emotion.models.module import EmotionClassifier
from emotion.training.callbacks import verify_reload
from emotion.training.run import fit_run
from emotion.training.trainer import Trainer, seed_everything


@pytest.fixture(scope="module")
def run(synth_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"run-{BACKEND}")
    cfg = load_config(None, {"data.data": str(synth_dir), "data.image_size": 48, "data.batch_size": 8,
                             "trainer.epochs": 2, "trainer.out": str(out), "trainer.verbose": 0})
    return out, fit_run(cfg)


def test_two_epochs_lower_the_loss(synth_dir):
    seed_everything(0)
    cfg = load_config(None, {"data.data": str(synth_dir), "data.image_size": 48, "data.batch_size": 8,
                             "trainer.epochs": 2, "trainer.verbose": 0, "trainer.tensorboard": False})
    dm = EmotionDataModule(cfg.data).setup()
    module = EmotionClassifier("seed", dm.input_shape, dm.num_classes)
    module.compile()
    before = module.model.evaluate(dm.train_dataloader(), verbose=0, return_dict=True)["loss"]
    history = Trainer.from_config(cfg).fit(module, dm)
    after = module.model.evaluate(dm.dataloader("train"), verbose=0, return_dict=True)["loss"]
    assert len(history["loss"]) == 2 and "val_loss" in history
    assert after < before, (before, after)


def test_run_folder_follows_the_contract(run):
    out, metrics = run
    for name in ("imageclassifier.keras", "metrics.json", "history.png", "samples.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert list((out / "logs").rglob("events.out.tfevents*")), "TensorBoard logs"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["backend"] == BACKEND and saved["keras_version"] == keras.__version__
    assert saved["class_names"] == ["happy", "sad"] and saved["preset"] == "seed" and saved["image_size"] == 48
    assert saved["split"] == {"train": 42, "val": 12, "test": 6}
    assert set(saved["history"]) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(saved["history"]["loss"]) == 2
    t = saved["test"]
    assert {"accuracy", "precision", "recall", "f1", "confusion_matrix"} <= set(t)
    assert np.array(t["confusion_matrix"]).sum() == 6
    assert set(t["vs_majority"]) == {"majority_share", "p_value", "better_than_majority"}
    assert saved["run_id"] and saved["module"] == "emotion.models.module:EmotionClassifier"
    assert saved["seconds"]["fit"] > 0 and saved["seconds"]["per_step"] > 0


def test_saved_model_reloads_with_equal_predictions(run, synth_dir):
    out, _ = run
    model = keras.saving.load_model(out / "imageclassifier.keras")
    x = np.random.default_rng(0).uniform(0, 255, (5, 48, 48, 3)).astype("float32")
    assert verify_reload(model, out / "imageclassifier.keras", x) <= 1e-6


def test_reload_check_fails_loudly(run, tmp_path):
    out, _ = run
    other = EmotionClassifier("seed", (48, 48, 3), 2).model  # fresh, different weights
    x = np.random.default_rng(0).uniform(0, 255, (3, 48, 48, 3)).astype("float32")
    with pytest.raises(Exception, match="predicts differently"):
        verify_reload(other, out / "imageclassifier.keras", x)


def test_sample_grid_shows_every_class():
    from emotion.training.runfolder import sample_indices

    labels = np.array([0, 0, 0, 0, 0, 1, 1, 2])
    assert sample_indices(labels, 4).tolist() == [0, 5, 7, 1]
    assert sample_indices(np.array([1, 1]), 4).tolist() == [0, 1]
