"""`emotion bench` in quick mode (tiny sizes, one repeat: well-formed files, no timing assertions), its
flag checks, and the backend speed patches: each must compute exactly what Keras's own op computes."""

import json
import os

import numpy as np
import pytest
from conftest import BACKEND, run_cli

from emotion import backends
from emotion.cli import main
from emotion.tools import bench, bench_report

INSTALLED = backends.installed()


def one_line_error(capsys, argv):
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) == 1 and err[0].startswith("emotion: error:"), err
    return err[0]


@pytest.mark.parametrize("argv, words", [
    (["--backends", "mxnet"], "unknown backend"),
    (["--backends", ","], "unknown backend"),
    (["--repeats", "0"], "at least 1"),
    (["--batch-size", "many"], "invalid int value"),
    (["--image-size", "8"], "at least 16"),
    (["--precision", "fp8"], "invalid choice: 'fp8'"),
    (["--device", "tpu"], "device must be one of"),
])
def test_bad_flags_give_one_line(capsys, tmp_path, argv, words):
    assert words in one_line_error(capsys, ["bench", "--data", str(tmp_path), *argv])


def test_missing_data_folder_gives_one_line(capsys, tmp_path):
    assert "not found" in one_line_error(capsys, ["bench", "--quick", "--data", str(tmp_path / "nope")])


def test_quick_config():
    cfg = bench.make_config(quick=True, backends="torch,jax,torch", batch_size="4")
    assert cfg.backends == ["torch", "jax"] and cfg.batch_size == 4 and cfg.image_size == 32
    assert cfg.repeats == 1 and cfg.quick


def test_measure_quick_under_this_backend(synth_dir):
    cfg = bench.make_config(quick=True, data=str(synth_dir), backends=BACKEND)
    r = bench.measure(cfg)
    assert r["backend"] == BACKEND
    assert r["compute"]["compile_s"] > 0 and r["compute"]["step_s"]["median"] > 0
    assert r["compute"]["step_cpu_s"]["median"] > 0 and r["end_to_end"]["warm_step_cpu_s"]["median"] > 0
    e2e = r["end_to_end"]
    assert e2e["images_per_epoch"] > 0 and e2e["cold_epoch_s"] >= e2e["first_epoch_s"] > 0
    assert len(e2e["warm_step_s"]["values"]) == cfg.repeats
    inf = r["inference"]
    assert inf["latency_s"]["p95"] >= inf["latency_s"]["p50"] > 0 and inf["images_per_s"]["median"] > 0
    assert r["memory"]["peak_host_mb"] > 0
    assert r["forward_macs"] > 0 and r["train_gflop_per_image"] > 2 * r["forward_gflop_per_image"]
    assert r["dtype_policy"] == "float32"


def test_measure_quick_in_mixed_bfloat16(synth_dir):
    cfg = bench.make_config(quick=True, data=str(synth_dir), backends=BACKEND, precision="mixed_bfloat16")
    r = bench.measure(cfg)
    assert r["dtype_policy"] == "mixed_bfloat16"
    assert r["compute"]["step_s"]["median"] > 0 and r["inference"]["images_per_s"]["median"] > 0


def stats(v):
    return {"median": v, "min": v * 0.9, "max": v * 1.2, "values": [v * 0.9, v, v * 1.2]}


def made_up_row():
    """One backend's measurements, shaped like `measure`'s (no timings taken)."""
    return {"keras_version": "3", "framework_version": "1", "devices": ["cpu:0"], "forward_gflop_per_image": 0.24,
            "train_gflop_per_image": 0.67,
            "compute": {"compile_s": 2.0, "step_s": stats(0.3), "step_cpu_s": stats(0.5)},
            "end_to_end": {"cold_epoch_s": 5.0, "first_epoch_s": 3.0, "warm_step_s": stats(0.32),
                           "warm_step_cpu_s": stats(0.55)},
            "inference": {"compile_s": 0.2, "latency_s": {"p50": 0.004, "p95": 0.006}, "images_per_s": stats(300.0)},
            "memory": {"peak_host_mb": 1500.0, "peak_device_mb": None}}


def test_report_files_from_a_made_up_run(tmp_path):
    """markdown() and chart() on a report shaped like run_bench's (no processes, no timings taken)."""
    row = made_up_row()
    report = {"settings": bench.BenchConfig().to_dict(), "machine": {**bench.machine(), "sgemm_gflops": 150.0},
              "backends": {"jax": row, "torch": {**row, "compute": {"compile_s": 1, "step_s": stats(0.6),
                                                                    "step_cpu_s": stats(0.9)}}},
              "reference": {"warm_step_s": stats(0.7), "first_epoch_s": 8.0}}
    report["summary"] = bench_report.summarize(report)
    assert report["summary"]["rows"]["torch"]["compute_x_fastest"] == pytest.approx(2.0)
    text = bench_report.markdown(report)
    assert "| jax |" in text and "| reference" in text and "NOT met" in text
    bench_report.chart(report, tmp_path / "bench.png")
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"
    assert "| jax | 0.300 (0.270–0.360) | 1.00× | 0.320 (0.288–0.384) | 1.00× | 1.07 | 2.19× | 5.00 | 2.00 |" in text
    assert "not installed" not in text.lower()


def test_gpu_rows_get_no_share_of_the_cpu_floor():
    """The floor is the host CPU's sgemm rate: a GPU row's share of it would be a meaningless 1000%."""
    gpu = {**made_up_row(), "devices": ["gpu:0"], "accelerators": ["NVIDIA H200"]}
    report = {"settings": bench.BenchConfig().to_dict(), "machine": {**bench.machine(), "sgemm_gflops": 150.0},
              "backends": {"jax": gpu, "torch": made_up_row()}}
    report["summary"] = bench_report.summarize(report)
    text = bench_report.markdown(report)
    assert "no yardstick for a GPU" in text and "- devices: jax gpu:0 (NVIDIA H200); torch cpu:0\n" in text
    assert "| jax | 4.0 | 6.0 | 300.0 (270.0–360.0) | – |" in text
    assert "| torch | 4.0 | 6.0 | 300.0 (270.0–360.0) | –" not in text


def test_report_names_the_data_parallel_scaling():
    row = {**made_up_row(), "scaling": {"devices": 2, "step_s": {"1": stats(0.4), "2": stats(0.25)}, "speedup": 1.6,
                                        "efficiency": 0.8}}
    skipped = "--devices 2: data-parallel training runs under the JAX backend only"
    other = {**made_up_row(), "scaling": {"skipped": skipped}}
    report = {"settings": {**bench.BenchConfig().to_dict(), "devices": 2},
              "machine": {**bench.machine(), "sgemm_gflops": 150.0}, "backends": {"jax": row, "torch": other}}
    report["summary"] = bench_report.summarize(report)
    text = bench_report.markdown(report)
    assert ("- jax, data parallel: compute step 0.400 s on 1 device, 0.250 s on 2 (same global batch): speedup 1.60x, "
            "scaling efficiency 80%") in text
    assert "- torch, data parallel: data parallel skipped: --devices 2: data-parallel training runs under the " \
           "JAX" in text


def test_a_backend_that_is_not_installed_is_named_and_left_out(synth_dir, tmp_path, monkeypatch):
    """run_bench follows `harness.plan`: the missing backend gets no process, no row, and is named in the report;
    with none installed it is a one-line error. (The per-backend processes are faked here.)"""
    monkeypatch.setattr(backends, "installed", lambda: ["jax", "torch"])
    ran = []
    monkeypatch.setattr(bench, "run_backend", lambda cfg, b, log, stock=False: ran.append(b) or made_up_row())
    cfg = bench.make_config(quick=True, data=str(synth_dir), out=str(tmp_path), backends="torch,tensorflow",
                            reference=False)
    said = []
    report = bench.run_bench(cfg, log=said.append)
    assert ran == ["torch"] and list(report["backends"]) == ["torch"] and report["not_installed"] == ["tensorflow"]
    assert set(report["summary"]["rows"]) == {"torch"}
    assert any("backend tensorflow is not installed: left out" in m for m in said)
    assert json.loads((tmp_path / "bench.json").read_text())["not_installed"] == ["tensorflow"]
    text = (tmp_path / "bench.md").read_text()
    assert "left out and not compared: tensorflow" in text and "| tensorflow |" not in text
    with pytest.raises(bench.EmotionError, match="bench needs at least one installed backend; installed: jax, torch"):
        bench.run_bench(bench.make_config(quick=True, data=str(synth_dir), out=str(tmp_path / "none"),
                                          backends="tensorflow"), log=said.append)
    assert not (tmp_path / "none").exists()


# ------------------------------------------------------------------------------ speed patches = Keras's ops
def _pool_cases():
    rng = np.random.default_rng(0)
    x = np.maximum(rng.standard_normal((2, 9, 11, 3)), 0).astype("float32")  # ReLU-like: many tied zeros
    x[..., 1] = np.round(x[..., 1] * 2)  # more ties among positive values
    # as Keras's pooling layers call the backend op: explicit strides
    return x, [((2, 2), (2, 2), "valid"), ((3, 3), (3, 3), "valid"), ((2, 3), (2, 3), "valid"),
               ((2, 2), (1, 1), "valid"), ((2, 2), (2, 2), "same")]


@pytest.mark.skipif(BACKEND != "jax", reason="the JAX max-pool patch")
def test_jax_fast_max_pool_equals_keras():
    import jax
    import jax.numpy as jnp
    from emotion.backends import jax as bj
    from keras.src.backend.jax import nn as jax_nn

    bj.install_fast_max_pool()
    fast, original = jax_nn.max_pool, jax_nn.max_pool.emotion_original
    x, cases = _pool_cases()
    assert bj._fast_pool_window(jnp.asarray(x), 2, None, "valid", None) == (2, 2)
    for pool, strides, padding in cases:
        y_fast = fast(jnp.asarray(x), pool, strides, padding)
        y_orig = original(jnp.asarray(x), pool, strides, padding)
        np.testing.assert_array_equal(np.asarray(y_fast), np.asarray(y_orig))
        w = jnp.asarray(np.random.default_rng(1).standard_normal(y_orig.shape).astype("float32"))
        grads = [jax.jit(jax.grad(lambda v, f=f, a=(pool, strides, padding), w=w: (f(v, *a) * w).sum()))(
            jnp.asarray(x)) for f in (fast, original)]
        np.testing.assert_array_equal(np.asarray(grads[0]), np.asarray(grads[1]))


@pytest.mark.skipif(BACKEND != "jax", reason="jit for JAX models with affine augmentation layers")
def test_jax_jits_models_with_affine_augmentation():
    """Keras marks RandomRotation/Zoom/Translation as not jittable (for TensorFlow's XLA); under JAX the
    patched check lets `compile` jit such a model, the jitted layers compute what the eager ones do from the
    same seed state, and a layer that really is not jittable still turns jit off."""
    import jax
    import keras
    from emotion.backends import jax as bj

    from emotion.models.module import EmotionClassifier

    bj.allow_jit_with_affine_augmentation()
    model = EmotionClassifier("seed-plus", (32, 32, 3), 2).compile()
    assert model.jit_compile is True
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    y = np.array([[0], [1], [0], [1]], "float32")
    assert np.isfinite(model.train_on_batch(x, y, return_dict=True)["loss"])
    for layer in (keras.layers.RandomRotation(0.1, seed=1), keras.layers.RandomZoom(0.2, seed=2),
                  keras.layers.RandomTranslation(0.1, 0.1, seed=3)):
        inputs = keras.Input((32, 32, 3))
        m = keras.Model(inputs, layer(inputs, training=True))
        state = [v.value for v in m.non_trainable_variables]
        eager = m.stateless_call([], state, x, training=True)[0]
        jitted = jax.jit(lambda s, v, m=m: m.stateless_call([], s, v, training=True)[0])(state, x)
        np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-5, atol=1e-3)
        assert np.abs(np.asarray(eager) - x).max() > 1  # the layer did transform the images
    inputs = keras.Input((4,), dtype="int32")
    hashed = keras.Model(inputs, keras.layers.Hashing(8)(inputs))
    hashed.compile(loss="mse")
    assert hashed.jit_compile is False


@pytest.mark.skipif(BACKEND != "torch", reason="the PyTorch max-pool/conv patches")
def test_torch_fast_ops_equal_keras():
    import torch
    from emotion.backends import torch as bt
    from keras.src.backend.torch import nn as torch_nn

    bt.install_fast_ops()
    x, cases = _pool_cases()
    pool_fast, pool_orig = torch_nn.max_pool, torch_nn.max_pool.emotion_original
    for pool, strides, padding in cases:
        outs = []
        for f in (pool_fast, pool_orig):
            v = torch.tensor(x, requires_grad=True)
            y = f(v, pool, strides, padding)
            y.backward(torch.ones_like(y) * torch.arange(y.numel()).reshape(y.shape))
            outs.append((y.detach().numpy(), v.grad.numpy()))
        np.testing.assert_array_equal(outs[0][0], outs[1][0])
        np.testing.assert_array_equal(outs[0][1], outs[1][1])
    conv_fast, conv_orig = torch_nn.conv, torch_nn.conv.emotion_original
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 12, 10, 4)).astype("float32")
    for kernel_shape, strides, padding, dilation in [((3, 3, 4, 5), 1, "valid", 1), ((3, 2, 4, 6), 2, "valid", 1),
                                                     ((3, 3, 2, 4), 1, "valid", 1), ((2, 2, 4, 3), 1, "valid", 2),
                                                     ((3, 3, 4, 5), 1, "same", 1), ((3, 3, 4, 5), 1, "same", 2),
                                                     ((3, 3, 4, 5), 2, "same", 1), ((2, 2, 4, 3), 1, "same", 1),
                                                     ((5, 3, 4, 2), 3, "same", 1)]:
        k = rng.standard_normal(kernel_shape).astype("float32")
        outs = []
        for f in (conv_fast, conv_orig):
            xv, kv = torch.tensor(x, requires_grad=True), torch.tensor(k, requires_grad=True)
            y = f(xv, kv, strides, padding, "channels_last", dilation)
            (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
            outs.append([t.detach().numpy() for t in (y, xv.grad, kv.grad)])
        for a, b in zip(*outs, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(BACKEND != "torch", reason="the PyTorch fused convolution layer call")
def test_torch_fused_conv_layer_equals_keras():
    """Conv2D with its bias added inside F.conv2d: same outputs and gradients (input, kernel, bias) as Keras's
    own call, and Keras's call where the fused one does not apply (no bias, 'same' padding, Conv1D)."""
    import keras
    import torch
    from emotion.backends import torch as bt
    from keras.src.layers.convolutional.base_conv import BaseConv

    bt.install_fast_ops()
    fused, original = BaseConv.call, BaseConv.call.emotion_original
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 11, 9, 4)).astype("float32")
    layers = [keras.layers.Conv2D(5, 3, activation="relu"), keras.layers.Conv2D(6, (3, 2), strides=2),
              keras.layers.Conv2D(4, 2, dilation_rate=2, activation="tanh"), keras.layers.Conv2D(3, 3, use_bias=False),
              keras.layers.Conv2D(3, 3, padding="same", activation="relu")]
    for layer in layers:
        layer.build(x.shape)
        layer.bias is not None and layer.bias.assign(rng.standard_normal(layer.bias.shape).astype("float32"))
        outs = []
        for call in (fused, original):
            BaseConv.call = call
            try:
                v = torch.tensor(x, requires_grad=True)
                y = layer(v)
                (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
                weights = [w.value for w in layer.trainable_weights]
                outs.append([y.detach().numpy(), v.grad.numpy()] + [w.grad.numpy().copy() for w in weights])
                for w in weights:
                    w.grad = None
            finally:
                BaseConv.call = fused
        assert len(outs[0]) == 2 + len(layer.trainable_weights)
        for a, b in zip(*outs, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert bt.fused_conv_call(layers[0], torch.tensor(x)) is not None  # the fused path was the one tested
    assert bt.fused_conv_call(layers[4], torch.tensor(x)) is not None  # 'same' with even padding too
    assert bt.fused_conv_call(layers[3], torch.tensor(x)) is None  # no bias: Keras's own call
    uneven = keras.layers.Conv2D(3, 2, padding="same")  # pads one pixel, at the end: Keras pads itself
    uneven.build(x.shape)
    assert bt.fused_conv_call(uneven, torch.tensor(x)) is None
    conv1d = keras.layers.Conv1D(3, 3)
    conv1d.build((2, 8, 4))
    assert bt.fused_conv_call(conv1d, torch.tensor(x[:, 0])) is None


@pytest.mark.skipif(BACKEND != "torch", reason="the PyTorch affine_transform patch")
def test_torch_fast_affine_transform_matches_keras():
    """grid_sample over the batch against Keras's per-image map_coordinates: same points, same bilinear
    weights, same edge handling ('nearest' and 'constant' 0), up to round-off; other cases fall back."""
    import torch
    from emotion.backends import torch as bt
    from keras.src.backend.torch import image as torch_image

    bt.install_fast_ops()
    fast, original = torch_image.affine_transform, torch_image.affine_transform.emotion_original
    rng = np.random.default_rng(4)
    x = torch.tensor(rng.uniform(0, 255, (6, 17, 13, 2)).astype("float32"))
    angle, zoom = rng.uniform(-0.6, 0.6, 6), rng.uniform(0.7, 1.4, 6)
    shift = rng.uniform(-5, 5, (6, 2))
    t = np.stack([np.cos(angle) * zoom, -np.sin(angle) * zoom, shift[:, 0], np.sin(angle) * zoom,
                  np.cos(angle) * zoom, shift[:, 1], 0 * zoom, 0 * zoom], 1).astype("float32")
    for fill_mode in ("nearest", "constant"):
        ours, keras_own = (f(x, torch.tensor(t), fill_mode=fill_mode) for f in (fast, original))
        assert ours.shape == keras_own.shape == x.shape
        np.testing.assert_allclose(ours.numpy(), keras_own.numpy(), atol=5e-3)
        assert bt.fast_affine_transform(x, torch.tensor(t), fill_mode=fill_mode) is not None
    assert np.abs(ours.numpy() - x.numpy()).max() > 1  # the transforms moved pixels
    for kwargs in ({"fill_mode": "reflect"}, {"interpolation": "nearest"}, {"fill_mode": "constant", "fill_value": 3}):
        assert bt.fast_affine_transform(x, torch.tensor(t), **kwargs) is None
    projective = t.copy()
    projective[:, 6] = 0.01
    assert bt.fast_affine_transform(x, torch.tensor(projective)) is None


@pytest.mark.skipif(BACKEND != "torch", reason="glibc malloc settings for eager PyTorch")
def test_torch_keeps_freed_memory_when_glibc():
    import platform

    from emotion.backends import torch as bt

    kept = bt.keep_freed_memory()
    assert kept == (platform.libc_ver()[0] == "glibc")


LEAVES_TF = """
import sys, numpy as np, backends
backends.select(sys.argv[1])
from emotion.training.trainer import seed_everything
import keras
seed_everything(1)  # keras.utils.set_random_seed asks tf.available
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
model.compile(optimizer="adam", loss="mse")
model.fit(np.zeros((8, 4)), np.zeros((8, 2)), verbose=0)
model.save(sys.argv[2])  # serialization asks tf.available for every object
keras.saving.load_model(sys.argv[2])
print("tensorflow" in sys.modules)
keras.layers.Hashing(8)  # runs on TensorFlow under every backend: still imports it
print("tensorflow" in sys.modules)
"""


@pytest.mark.skipif(BACKEND == "tensorflow", reason="JAX and PyTorch only: TensorFlow's backend imports it")
@pytest.mark.skipif("tensorflow" not in INSTALLED, reason="TensorFlow is not installed: nothing to keep out")
def test_jax_and_torch_seed_train_and_save_without_importing_tensorflow(tmp_path):
    import subprocess
    import sys

    script = [sys.executable, "-c", LEAVES_TF, BACKEND, str(tmp_path / "m.keras")]
    ours = subprocess.run(script, capture_output=True, text=True, timeout=300)
    assert ours.returncode == 0, ours.stderr[-2000:]
    assert ours.stdout.strip().splitlines()[-2:] == ["False", "True"]
    stock = subprocess.run(script, capture_output=True, text=True, timeout=300,
                           env={**os.environ, "EMOTION_FAST_KERNELS": "0"})
    assert stock.stdout.strip().splitlines()[-2:] == ["True", "True"], stock.stderr[-2000:]  # what the patch prevents


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.data options of Keras's PyDataset adapter")
def test_tensorflow_py_datasets_run_without_autotune():
    import numpy as np
    from emotion.backends import tensorflow as btf
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    from emotion.data.batches import make_batches

    images = np.zeros((10, 8, 8, 1), np.uint8)
    labels = np.arange(10) % 2
    btf.py_datasets_without_autotune()
    btf.py_datasets_without_autotune()  # idempotent: one wrapper, not two
    ds = PyDatasetAdapter(make_batches(images, labels, 4, shuffle=True)).get_tf_dataset()
    assert ds.options().autotune.enabled is False
    batches = list(ds)  # the same batches as before: 4 + 4 + 2 images
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]


# ------------------------------------------------------------------------------ cross-backend (run once)
def test_a_failing_backend_process_is_one_line_naming_it(synth_dir, tmp_path, capsys):
    """An error inside the backend's process (here: --device gpu where there is none) comes back through the
    harness as the command's one-line error, naming the backend; nothing is written."""
    import keras  # noqa: F401  (conftest selected this process's backend)

    if any(d.split(":")[0] in ("gpu", "cuda") for d in backends.describe()["devices"]):
        pytest.skip("this machine has a GPU")
    rc = main(["bench", "--quick", "--data", str(synth_dir), "--out", str(tmp_path / "b"), "--backends", BACKEND,
               "--device", "gpu", "--no-reference"])
    err = capsys.readouterr().err.strip().splitlines()  # bench's progress lines, then the error
    assert rc == 2 and err[-1].startswith("emotion: error:") and not any("Traceback" in ln for ln in err), err
    assert f"bench under {BACKEND} failed (exit 2): --device gpu: {BACKEND} sees no GPU" in err[-1]
    assert not (tmp_path / "b").exists()


@pytest.mark.cross_backend
def test_quick_bench_writes_md_json_png(synth_dir, tmp_path):
    """`emotion bench --quick`: one process per installed backend plus the seed reference."""
    out = tmp_path / "bench"
    proc = run_cli("bench", "--quick", "--data", str(synth_dir), "--out", str(out),
                   "--backends", ",".join(INSTALLED))
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "bench.json").read_text())
    assert list(report["backends"]) == INSTALLED
    assert set(report["summary"]["rows"]) == set(INSTALLED)
    if "tensorflow" in INSTALLED:
        ref = report["reference"]
        assert ref["warm_step_s"]["median"] > 0 and ref["images_per_epoch"] > 0
    text = (out / "bench.md").read_text()
    for b in INSTALLED:
        assert f"| {b} |" in text
    assert "quick mode" in text and "Speed targets" in text and text in proc.stdout
    assert (out / "bench.png").read_bytes()[:4] == b"\x89PNG"
