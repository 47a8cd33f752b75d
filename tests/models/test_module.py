"""A user's LightningModule-style subclass trains through `emotion fit` with no other change, and what a run
writes is a plain Keras model."""

import json
import os
import subprocess
import sys
import textwrap

from conftest import BACKEND

USER_MODULE = '''
import json
import keras
from emotion.models.module import EmotionClassifier


class MSEClassifier(EmotionClassifier):
    """Mean squared error instead of cross-entropy, SGD instead of Adam, and a log of every epoch."""

    def configure_loss(self):
        return keras.losses.MeanSquaredError()

    def configure_optimizers(self, steps_per_epoch, epochs):
        return keras.optimizers.SGD(learning_rate=0.01)

    def on_fit_start(self, trainer):
        self.epochs_seen = []

    def on_train_epoch_end(self, trainer, epoch, logs):
        self.epochs_seen.append([epoch, logs["loss"]])

    def on_fit_end(self, trainer):
        with open("epochs.json", "w") as f:
            json.dump({"epochs": self.epochs_seen, "optimizer": type(self.model.optimizer).__name__}, f)
'''


def test_user_module_trains_through_the_cli(synth_dir, tmp_path):
    (tmp_path / "mymodels.py").write_text(USER_MODULE)
    out = tmp_path / "run"
    env = dict(os.environ, KERAS_BACKEND=BACKEND)
    proc = subprocess.run([sys.executable, "-m", "emotion", "fit", "--module", "mymodels:MSEClassifier", "--data",
                           str(synth_dir), "--out", str(out), "--epochs", "2", "--image-size", "24", "--quiet",
                           "--cache", "off"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = json.loads((tmp_path / "epochs.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert seen["optimizer"] == "SGD" and [e for e, _ in seen["epochs"]] == [0, 1]
    assert [loss for _, loss in seen["epochs"]] == metrics["history"]["loss"]
    assert max(metrics["history"]["loss"]) < 0.5, "an MSE on probabilities, not a cross-entropy (~0.69)"
    assert metrics["module"] == "mymodels:MSEClassifier"
    assert metrics["config"]["model"]["module"] == "mymodels:MSEClassifier"

    # The .keras loads and predicts where `emotion` cannot be imported, from another folder
    code = textwrap.dedent(f"""
        import sys
        sys.modules["emotion"] = None  # any import of emotion now fails
        sys.modules["mymodels"] = None
        import keras, numpy as np
        m = keras.saving.load_model({str(out / "imageclassifier.keras")!r})
        p = m.predict(np.zeros((2, 24, 24, 3), "float32"), verbose=0)
        assert p.shape == (2, 1), p.shape
        print("ok", m.compiled)
    """)
    proc = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, env=env,
                          cwd="/", timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]


def test_bad_module_specs_are_one_line_errors(synth_dir, tmp_path, capsys):
    from emotion.cli import main

    for spec, text in [("nosuchpkg:X", "cannot import"), ("emotion.models.presets:build_model", "not a subclass"),
                       ("justaname", "package.module:Class")]:
        rc = main(["fit", "--module", spec, "--data", str(synth_dir), "--out", str(tmp_path / "x"), "--epochs", "1"])
        err = capsys.readouterr().err
        assert rc == 2 and text in err.strip().splitlines()[-1], err
        if spec != "emotion.models.presets:build_model":
            assert len(err.strip().splitlines()) == 1, "before any data is read"
    assert not (tmp_path / "x").exists(), "a fit that failed leaves no run folder behind"


def test_preset_arguments_reach_the_preset(synth_dir):
    import pytest

    from emotion.errors import EmotionError
    from emotion.models.module import EmotionClassifier

    model = EmotionClassifier("vgg-bn", (32, 32, 1), 2, preset_args={"widths": [8, 16], "dropout": 0.1}).model
    convs = [layer for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
    assert [c.filters for c in convs] == [8, 8, 16, 16]
    with pytest.raises(EmotionError, match="takes no argument"):
        EmotionClassifier("seed", (32, 32, 3), 2, preset_args={"dropout": 0.1}).configure_model()
