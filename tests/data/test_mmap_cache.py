"""Data larger than memory: the decoded-image cache is memory-mapped and read a batch at a time, so training grows
the process's resident memory by a few batches, not by the size of the data set."""

import json

import pytest
from conftest import BACKEND, run_python

# 352 images decoded at 256 px: 66 MiB of pixels. The model is as small as a model gets (the data is the point);
# it is compiled on the same batch shapes first, so what grows after that is the data's memory. A callback waits
# for every step: JAX's asynchronous dispatch would otherwise queue the epoch's batches, and their memory with them.
# The data is set up twice: decoded straight into an empty cache, then read back from it (checksum verified).
TRAIN = """
import json, resource
from pathlib import Path
import keras, numpy as np
from emotion.config import DataConfig
from emotion.data.datamodule import EmotionDataModule
from emotion.data.batches import make_batches
from emotion.data.synth import generate

root, cache = Path(ROOT), CACHE
generate(root / "data", per_class=176, seed=0, size=32)
size, batch = 256, 4

def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

class Sync(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        float(logs["loss"])
    on_test_batch_end = on_train_batch_end

model = keras.Sequential([keras.Input((size, size, 3)), keras.layers.AveragePooling2D(16), keras.layers.Flatten(),
                          keras.layers.Dense(1, activation="sigmoid")])
model.compile("adam", "binary_crossentropy")
blank = lambda n: make_batches(np.zeros((n, size, size, 3), np.uint8), np.zeros(n, int), batch, shuffle=True)
model.fit(blank(2 * batch), validation_data=blank(batch), epochs=2, verbose=0, shuffle=False, callbacks=[Sync()])
base = peak_mib()
epochs = []
for _ in range(2):
    dm = EmotionDataModule(DataConfig(data=str(root / "data"), image_size=size, batch_size=batch, cache=cache,
                                      split=[0.75, 0.25, 0.0]), seed=0).setup()
    h = model.fit(dm.train_dataloader(), validation_data=dm.val_dataloader(), epochs=1, verbose=0, shuffle=False,
                  callbacks=[Sync()])
    epochs.append(len(h.history["val_loss"]))
images = len(dm.train) + len(dm.val)
print("RESULT " + json.dumps({"data_mib": images * size * size * 3 / 2**20, "grew_mib": peak_mib() - base,
                              "epochs": epochs, "mapped": type(dm.train.images).__name__}))
"""


@pytest.mark.skipif(BACKEND != "jax", reason="the same data code under every backend: measured once, under JAX")
def test_training_holds_batches_not_the_data_set(tmp_path):
    code = TRAIN.replace("ROOT", repr(str(tmp_path))).replace("CACHE", repr(str(tmp_path / "cache")))
    proc = run_python(code, "jax")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert out["epochs"] == [1, 1] and out["mapped"] == "Rows"
    assert out["data_mib"] > 60
    # in memory (--cache off) the same run grows by ~150 MiB here: the decoded set, and copies of its splits
    assert out["grew_mib"] < out["data_mib"] / 2, out
