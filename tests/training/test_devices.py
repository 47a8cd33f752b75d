"""`--devices N`: data-parallel training (JAX) gives the one-device run's numbers; the other backends refuse."""

import json

import pytest
from conftest import BACKEND, run_python

from emotion import backends
from emotion.config import load_config
from emotion.errors import EmotionError
from emotion.tools.parity import Tolerances

# Two emulated CPU devices: XLA reads the flag when JAX starts, so the runs are in a fresh process. One process
# trains both runs (JAX sees two devices in both; --devices 1 uses one). 21 sad and 20 happy images give an
# odd training split (29), so the last batch of each epoch does not divide over the devices (it is replicated).
TWO_RUNS = """
import json, os, sys
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
from pathlib import Path
from emotion.config import load_config
from emotion.data.synth import generate
from emotion.errors import EmotionError
from emotion.training.run import fit_run
root = Path(sys.argv[1])
generate(root / "data", per_class=21, seed=0, size=32)
for p in sorted((root / "data" / "happy").iterdir())[:1]:
    p.unlink()
out = {}
for n in (1, 2):
    cfg = load_config(None, {"data.data": str(root / "data"), "data.image_size": 32, "data.batch_size": 8,
                             "trainer.epochs": 2, "trainer.verbose": 0, "trainer.tensorboard": False,
                             "trainer.checkpoint": False, "trainer.devices": n, "trainer.out": str(root / f"run{n}")})
    out[n] = fit_run(cfg)
cfg.data.batch_size, cfg.trainer.out = 7, str(root / "odd")
try:
    fit_run(cfg)
    out["odd"] = "trained"
except EmotionError as e:
    out["odd"] = str(e)
from types import SimpleNamespace
import numpy as np
from emotion.tools import bench
cfg = bench.make_config(quick=True, devices=2, steps=2)
x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
out["bench"] = bench.measure_scaling(cfg, SimpleNamespace(input_shape=(32, 32, 3), num_classes=2), x,
                                     (np.arange(8) % 2).astype("float32")[:, None])
out["bench_line"] = bench.scaling_line(out["bench"])
print("RESULT " + json.dumps(out))
"""


@pytest.mark.skipif(BACKEND != "jax", reason="data parallel runs under JAX (two emulated CPU devices)")
def test_two_devices_train_as_one(tmp_path):
    code = TWO_RUNS.replace("sys.argv[1]", repr(str(tmp_path)))
    proc = run_python(code, "jax")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT ", 1)[1])
    one, two = out["1"], out["2"]
    assert one["split"]["train"] % 2 == 1  # the uneven last batch is part of the comparison
    assert (one["training_devices"], two["training_devices"]) == (1, 2)
    assert two["devices"] == ["cpu:0", "cpu:1"]
    tol = Tolerances()
    for key in ("loss", "val_loss"):
        for a, b in zip(one["history"][key], two["history"][key], strict=True):
            assert abs(a - b) <= tol.loss_rel * abs(a), (key, one["history"][key], two["history"][key])
    for key in ("accuracy", "val_accuracy"):
        for a, b in zip(one["history"][key], two["history"][key], strict=True):
            assert abs(a - b) * 100 <= tol.accuracy_points, (key, a, b)
    for key in ("accuracy", "precision", "recall", "f1"):
        a, b = one["test"][key], two["test"][key]
        assert (a is None and b is None) or abs(a - b) * 100 <= tol.test_points, (key, a, b)
    assert "--batch-size 7 is not a multiple of --devices 2" in out["odd"], out["odd"]
    scaling = out["bench"]  # emotion bench --devices 2: step seconds on 1 and 2 devices (reported, not judged)
    assert set(scaling["step_s"]) == {"1", "2"} and all(v["median"] > 0 for v in scaling["step_s"].values())
    assert scaling["efficiency"] == pytest.approx(scaling["speedup"] / 2)
    assert "on 2 (same global batch)" in out["bench_line"]


def test_more_devices_than_there_are_is_one_line():
    """This process sees one device (JAX on a CPU without the flag); TensorFlow and PyTorch refuse any N > 1."""
    with pytest.raises(backends.BackendError) as e:
        backends.data_parallel(2)
    text = str(e.value)
    assert "\n" not in text
    assert ("sees 1 device" in text) if BACKEND == "jax" else ("JAX backend only" in text)
    assert backends.data_parallel("all") == 1 and backends.data_parallel(1) == 1


def test_bench_scaling_says_why_it_is_skipped(synth_dir):
    from types import SimpleNamespace

    import numpy as np

    from emotion.tools import bench

    cfg = bench.make_config(quick=True, devices=2, data=str(synth_dir))
    x = np.zeros((8, 32, 32, 3), "float32")
    r = bench.measure_scaling(cfg, SimpleNamespace(input_shape=(32, 32, 3), num_classes=2), x,
                              np.zeros((8, 1), "float32"))
    assert "skipped" in r and bench.scaling_line(r).startswith("data parallel skipped: --devices 2")
    cfg = bench.make_config(quick=True, devices="all", data=str(synth_dir))  # this process sees one device
    r = bench.measure_scaling(cfg, SimpleNamespace(input_shape=(32, 32, 3), num_classes=2), x,
                              np.zeros((8, 1), "float32"))
    assert r["skipped"].startswith(f"--devices all: {BACKEND} trains on one device here"), r
    with pytest.raises(EmotionError, match="--batch-size 6 is not a multiple of --devices 4"):
        bench.make_config(quick=True, devices=4, batch_size=6)


def test_devices_setting_is_checked():
    assert load_config(None, {"trainer.devices": "all"}).trainer.devices == "all"
    for bad in (0, "two", True):
        with pytest.raises(EmotionError, match="trainer.devices"):
            load_config(None, {"trainer.devices": bad})
