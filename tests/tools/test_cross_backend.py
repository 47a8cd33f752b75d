"""What must not depend on the backend: each installed backend runs in its own process."""

import json

import pytest
from conftest import run_python

from emotion import backends

pytestmark = pytest.mark.cross_backend
INSTALLED = backends.installed()

# One process per backend does both jobs (a process costs seconds of imports): the split and batch order its
# data module gives, and a trained model saved with its predictions. Keras runs as the CLI runs it, with the
# backend's speed settings on (`backends.configure`).
SAVE = """
import json, sys, numpy as np
from emotion import backends; backends.select()
import keras
backends.configure()
from emotion.config import DataConfig
from emotion.data.datamodule import EmotionDataModule
from emotion.models.module import EmotionClassifier
dm = EmotionDataModule(DataConfig(data=sys.argv[2], image_size=16, batch_size=8, cache="off"), seed=5).setup()
loader = dm.train_dataloader()
epochs = []
for _ in range(2):
    epochs.append([float(loader[i][0].sum()) for i in range(len(loader))])
    loader.on_epoch_end()
keras.utils.set_random_seed(0)
module = EmotionClassifier("seed", (32, 32, 3), 2)
model = module.compile()
x = np.random.default_rng(0).uniform(0, 255, (16, 32, 32, 3)).astype("float32")
model.fit(x, (np.arange(16) % 2).astype("float32")[:, None], epochs=1, verbose=0)  # an optimizer state too
model.save(sys.argv[1] + "/" + keras.backend.backend() + ".keras")
np.save(sys.argv[1] + "/" + keras.backend.backend() + ".npy", model.predict(x, verbose=0))
print(json.dumps({"split": {s: getattr(dm, s).paths for s in ("train", "val", "test")}, "batches": epochs}))
"""

LOAD = """
import sys, json, numpy as np
from emotion import backends; backends.select()
import keras
backends.configure()
x = np.random.default_rng(0).uniform(0, 255, (16, 32, 32, 3)).astype("float32")
out = {}
for name in sys.argv[2].split(","):
    p = keras.saving.load_model(sys.argv[1] + "/" + name + ".keras").predict(x, verbose=0)
    out[name] = float(np.max(np.abs(p - np.load(sys.argv[1] + "/" + name + ".npy"))))
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def saved(synth_dir, tmp_path_factory):
    """{backend: its split and batch order}, with each backend's model saved in the folder returned."""
    folder = tmp_path_factory.mktemp("cross")
    results = {}
    for b in INSTALLED:
        code = SAVE.replace("sys.argv[1]", repr(str(folder))).replace("sys.argv[2]", repr(str(synth_dir)))
        proc = run_python(code, b)
        assert proc.returncode == 0, proc.stderr[-2000:]
        results[b] = json.loads(proc.stdout.strip().splitlines()[-1])
    return folder, results


@pytest.mark.skipif(len(INSTALLED) < 2, reason="needs two installed backends")
def test_same_split_and_batch_order_under_every_backend(saved):
    _, results = saved
    first = results[INSTALLED[0]]
    assert first["batches"][0] != first["batches"][1], "epochs are reshuffled"
    for b in INSTALLED[1:]:
        assert results[b] == first, f"{b} differs from {INSTALLED[0]}"


@pytest.mark.skipif(len(INSTALLED) < 2, reason="needs two installed backends")
def test_keras_file_loads_under_every_backend_with_equal_predictions(saved):
    folder, _ = saved
    matrix = {}
    for b in INSTALLED:
        code = LOAD.replace("sys.argv[1]", repr(str(folder))).replace("sys.argv[2]", repr(",".join(INSTALLED)))
        proc = run_python(code, b)
        assert proc.returncode == 0, proc.stderr[-2000:]
        matrix[b] = json.loads(proc.stdout.strip().splitlines()[-1])
    for loader, row in matrix.items():
        for saver, delta in row.items():
            assert delta <= 1e-5, f"saved by {saver}, loaded by {loader}: max |dP| = {delta}"
