"""`emotion bench`: time the same model under each backend, each backend in its own process.

    emotion bench --data ../shared/data/web-happy-sad                 # every installed backend + the reference
    emotion bench --backends jax,torch --repeats 7 --out runs/bench   # bench.md, bench.json, bench.png
    emotion bench --quick                                             # tiny sizes, one repeat (the tests)
    emotion bench --backends jax --devices 2     # + compute step on 1 and 2 devices, and the scaling efficiency
    emotion bench --backends jax --devices all   # ... on every device JAX sees (a GPU machine)

Per backend (`measure` in a fresh process under that backend, run by `emotion.tools.harness`):
1. compute only: ``train_on_batch`` on one in-memory batch already converted to the backend's tensors;
   the first call (trace/compile + first step) is reported apart as ``compile_s``;
2. end to end: ``fit`` on the real input pipeline (`emotion.data.datamodule`, from the image files, with an empty
   decode cache) -- the first, cold epoch (decoding every file) and the warm epochs after it;
3. inference: ``predict_on_batch`` latency at batch 1 (p50/p95) and throughput at the training batch size;
4. peak host memory (``ru_maxrss``) and peak accelerator memory where there is one;
5. with ``--devices N``: the compute-only step of a fresh model on 1 and on N devices (data parallel, the same
   global batch), the speedup and the scaling efficiency (speedup / N). Where the backend has no data parallel
   it says why; on a machine without N accelerators, JAX shows the CPU as N devices (``EMOTION_CPU_DEVICES``).

The reference row is the seed notebook's own pipeline (``scripts/seed_reference.py``: tf.data take/skip,
``x/255`` map, no cache, every JPEG decoded again every epoch), run under TensorFlow.

Step times are seconds per ``batch_size`` images: an epoch's seconds are divided by its images and multiplied
by the batch size, so a partial last batch does not flatter the end-to-end numbers. Every measurement is
repeated (``--repeats``); the report gives the median and the spread (min-max) of the repeats, and ratios
between backends measured in the same run, which survive a noisy machine far better than absolute seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emotion import backends
from emotion.config import DataConfig, ModelConfig, TrainerConfig, load_config, overrides_from_args
from emotion.config import add_arguments as add_settings
from emotion.data.datamodule import EmotionDataModule
from emotion.data.folders import class_folders
from emotion.errors import EmotionError
from emotion.files import write_atomic
from emotion.tools import harness
from emotion.tools.bench_report import chart, markdown, scaling_line, summarize

BACKENDS = backends.NAMES
DEVICES = ("auto", "cpu", "gpu")
REPO = Path(__file__).resolve().parents[2]
REFERENCE_SCRIPT = REPO / "scripts" / "seed_reference.py"


# The settings bench shares with `emotion fit` (declared once, in emotion.config), by their names here.
SHARED = {"data": "data.data", "out": "trainer.out", "preset": "model.preset", "image_size": "data.image_size",
          "batch_size": "data.batch_size", "precision": "trainer.precision"}
DEFAULTS = {"trainer.out": "runs/bench"}


@dataclass
class BenchConfig:
    backends: list[str] = field(default_factory=lambda: list(BACKENDS))
    data: str = DataConfig.data
    out: str = DEFAULTS["trainer.out"]
    preset: str = ModelConfig.preset
    image_size: int = DataConfig.image_size
    batch_size: int = DataConfig.batch_size
    precision: str = TrainerConfig.precision
    device: str = "auto"  # auto: the accelerator where the backend finds one; cpu: hide accelerators
    repeats: int = 5  # timed repeats of every measurement (and warm epochs end to end)
    steps: int = 5  # training steps per compute-only repeat
    latency_runs: int = 50  # batch-1 predictions for p50/p95
    reference: bool = True
    stock: bool = False  # also time each backend with the speed settings off (EMOTION_FAST_KERNELS=0)
    timeout: int = 3600  # seconds per backend process
    quick: bool = False
    devices: int | str = 1  # > 1 or "all": also time the compute step data-parallel on those devices (step 5)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


QUICK = {"image_size": 32, "batch_size": 8, "repeats": 1, "steps": 1, "latency_runs": 3}


def _positive_int(name: str, value) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise EmotionError(f"--{name.replace('_', '-')} must be a whole number, got {value!r}") from None
    if number < 1:
        raise EmotionError(f"--{name.replace('_', '-')} must be at least 1, got {number}")
    return number


def make_config(**flags) -> BenchConfig:
    """A checked `BenchConfig` from flag values (strings or numbers; None keeps the default). The shared
    settings are checked by `emotion.config.validate`, bench's own here.

    ``quick=True`` switches to tiny sizes and one repeat unless a size is given explicitly.
    """
    flags = {k: v for k, v in flags.items() if v is not None}
    cfg = BenchConfig()
    if flags.get("quick"):
        cfg.quick = True
        for k, v in QUICK.items():
            setattr(cfg, k, v)
    if "backends" in flags:
        cfg.backends = harness.check_names(flags["backends"])
    for name in ("image_size", "batch_size", "repeats", "steps", "latency_runs", "timeout", "devices"):
        if name in flags:
            all_devices = name == "devices" and flags[name] == "all"  # resolved by each backend's process
            setattr(cfg, name, "all" if all_devices else _positive_int(name, flags[name]))
    for name in ("data", "out", "preset", "precision"):
        if name in flags:
            setattr(cfg, name, str(flags[name]))
    load_config(None, {key: getattr(cfg, name) for name, key in SHARED.items()})  # the shared settings' checks
    if cfg.devices != "all" and cfg.batch_size % cfg.devices:
        raise EmotionError(f"--batch-size {cfg.batch_size} is not a multiple of --devices {cfg.devices}")
    if cfg.image_size < 16:
        raise EmotionError(f"--image-size must be at least 16 (three 2x2 poolings), got {cfg.image_size}")
    if "device" in flags:
        if flags["device"] not in DEVICES:
            raise EmotionError(f"--device must be one of {', '.join(DEVICES)}, got {flags['device']!r}")
        cfg.device = flags["device"]
    for name in ("reference", "stock"):
        if name in flags:
            setattr(cfg, name, bool(flags[name]))
    return cfg


# ============================================================================================ worker (one backend)
def _stats(values) -> dict:
    v = np.asarray(values, dtype=float)
    return {"median": float(np.median(v)), "min": float(v.min()), "max": float(v.max()),
            "values": [round(float(x), 6) for x in v]}


def _forward_macs(model) -> dict:
    """Multiply-accumulates per image of the Conv2D/Dense layers (the arithmetic that dominates), with the
    first such layer's share (it needs no input gradient in training)."""
    macs = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind in ("Conv2D", "Conv1D", "Conv3D"):
            out = layer.output.shape
            k = layer.kernel.shape  # (*window, in/groups, filters)
            macs.append(int(np.prod(out[1:])) * int(np.prod(k[:-1])))
        elif kind == "Dense":
            macs.append(int(np.prod(layer.kernel.shape)) * int(np.prod(layer.output.shape[1:-1]) or 1))
    total = sum(macs)
    return {"forward_macs": total, "first_layer_macs": macs[0] if macs else 0,
            # forward + weight gradients + input gradients (none for the first layer), 2 FLOP per MAC
            "forward_gflop_per_image": 2 * total / 1e9,
            "train_gflop_per_image": 2 * (3 * total - (macs[0] if macs else 0)) / 1e9}


def _timed(fn, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def _timed_cpu(fn, n: int, cpu: list) -> float:
    """Wall seconds per call; CPU seconds per call (this process, all threads) appended to ``cpu``."""
    c = time.process_time()
    wall = _timed(fn, n)
    cpu.append((time.process_time() - c) / n)
    return wall


def measure(cfg: BenchConfig) -> dict:
    """Every measurement for the backend of this process (Keras imported here)."""
    import keras  # here, so that the framework loads only when needed

    from emotion.models.module import EmotionClassifier  # here, so that the framework loads only when needed

    keras.utils.set_random_seed(0)
    backends.configure()
    info = backends.describe()
    if cfg.device == "gpu" and not any(d.split(":")[0] in ("gpu", "cuda") for d in info["devices"]):
        raise EmotionError(f"--device gpu: {info['backend']} sees no GPU (devices: {info['devices']})")

    cache = tempfile.mkdtemp(prefix="emotion-bench-cache-")
    t0 = time.perf_counter()
    dm = EmotionDataModule(DataConfig(data=cfg.data, image_size=cfg.image_size, batch_size=cfg.batch_size,
                                      cache=cache), seed=0).setup()
    decode_s = time.perf_counter() - t0
    module = EmotionClassifier(cfg.preset, dm.input_shape, dm.num_classes, precision=cfg.precision)
    model = module.compile()
    result = {**info, "params": int(model.count_params()), "dtype_policy": model.dtype_policy.name,
              **_forward_macs(model)}

    # 1. compute only: one batch already on the device, train_on_batch (returns numpy logs: synchronous)
    rng = np.random.default_rng(0)
    b, s, c = cfg.batch_size, cfg.image_size, dm.input_shape[-1]
    x = keras.ops.convert_to_tensor(rng.uniform(0, 255, (b, s, s, c)).astype("float32"))
    labels = np.arange(b) % dm.num_classes
    y = keras.ops.convert_to_tensor(labels.astype("float32")[:, None] if dm.num_classes == 2
                                    else np.eye(dm.num_classes, dtype="float32")[labels])  # as emotion.data.batches
    compile_s = _timed(lambda: model.train_on_batch(x, y), 1)
    model.train_on_batch(x, y)  # one untimed warm step (allocators, caches)
    cpu: list[float] = []
    steps = [_timed_cpu(lambda: model.train_on_batch(x, y), cfg.steps, cpu) for _ in range(cfg.repeats)]
    result["compute"] = {"compile_s": compile_s, "step_s": _stats(steps), "step_cpu_s": _stats(cpu)}

    # 2. end to end: the project's pipeline, fit on the training split; decode happened in setup (cold cache)
    timer = _epoch_timer(keras)
    train = dm.train_dataloader()
    model.fit(train, epochs=1 + cfg.repeats, verbose=0, callbacks=[timer], shuffle=False)  # as Trainer.fit
    n_train = len(dm.train)
    per_step = [sec / n_train * b for sec in timer.seconds]
    result["end_to_end"] = {
        "images_per_epoch": n_train, "steps_per_epoch": len(train), "decode_s": decode_s,
        "first_epoch_s": timer.seconds[0], "cold_epoch_s": decode_s + timer.seconds[0],
        "warm_step_s": _stats(per_step[1:]),
        "warm_step_cpu_s": _stats([sec / n_train * b for sec in timer.cpu_seconds[1:]]),
    }

    # 3. inference: batch-1 latency and batched throughput through the compiled predict function
    one = x[:1]
    first_1 = _timed(lambda: model.predict_on_batch(one), 1)
    model.predict_on_batch(one)
    latency = [_timed(lambda: model.predict_on_batch(one), 1) for _ in range(cfg.latency_runs)]
    first_b = _timed(lambda: model.predict_on_batch(x), 1)
    model.predict_on_batch(x)
    batched = [_timed(lambda: model.predict_on_batch(x), cfg.steps) for _ in range(cfg.repeats)]
    result["inference"] = {
        "compile_s": first_1 + first_b,
        "latency_s": {"p50": float(np.percentile(latency, 50)), "p95": float(np.percentile(latency, 95)),
                      "values": [round(v, 6) for v in latency]},
        "batch_s": _stats(batched),
        "images_per_s": _stats([b / t for t in batched]),
    }

    # 4. memory
    result["memory"] = {"peak_host_mb": _peak_rss_mb(), "peak_device_mb": _mb(backends.peak_device_memory())}
    if cfg.devices != 1:
        result["scaling"] = measure_scaling(cfg, dm, rng.uniform(0, 255, (b, s, s, c)).astype("float32"),
                                            keras.ops.convert_to_numpy(y))
    return result


def measure_scaling(cfg: BenchConfig, dm, x: np.ndarray, y: np.ndarray) -> dict:
    """Compute-only step seconds of a fresh model on 1 and on ``cfg.devices`` devices (the same global batch,
    split over the devices), the speedup and the efficiency (speedup / devices); {"skipped": why} where the
    backend cannot."""
    from emotion.models.module import EmotionClassifier  # here, so that the framework loads only when needed

    steps: dict = {}
    n_all = cfg.devices
    if n_all == "all":  # every device this backend trains on
        n_all = backends.data_parallel("all")
        backends.data_parallel(1)
        if n_all == 1:
            return {"skipped": f"--devices all: {backends.current()} trains on one device here "
                               f"({', '.join(backends.describe()['devices'])})"}
        if cfg.batch_size % n_all:
            return {"skipped": f"--batch-size {cfg.batch_size} is not a multiple of the {n_all} devices"}
    try:
        for n in (n_all, 1):  # N first: a backend that cannot says so before anything is built
            backends.data_parallel(n)  # before the model is built: its weights are made on the devices
            model = EmotionClassifier(cfg.preset, dm.input_shape, dm.num_classes, precision=cfg.precision).compile()
            model.train_on_batch(x, y)  # compile
            model.train_on_batch(x, y)
            steps[n] = _stats([_timed(lambda m=model: m.train_on_batch(x, y), cfg.steps) for _ in range(cfg.repeats)])
    except backends.BackendError as e:
        return {"skipped": str(e)}
    finally:
        backends.data_parallel(1)
    speedup = steps[1]["median"] / steps[n_all]["median"]
    return {"devices": n_all, "step_s": {str(n): steps[n] for n in (1, n_all)}, "speedup": speedup,
            "efficiency": speedup / n_all}


def _epoch_timer(keras):
    class EpochTimer(keras.callbacks.Callback):
        """Wall-clock seconds of each epoch's training (no validation is run)."""

        seconds: list[float] = []
        cpu_seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._t, self._c = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds = [*self.seconds, time.perf_counter() - self._t]
            self.cpu_seconds = [*self.cpu_seconds, time.process_time() - self._c]

    return EpochTimer()


def _peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def _mb(n):
    return None if n is None else n / 2**20


def worker(config: dict) -> dict:
    """`measure` from a `BenchConfig` as JSON: the step `emotion.tools.harness` runs under each backend."""
    return measure(BenchConfig(**config))


# ============================================================================================ driver (all backends)
def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        mem_gb = None
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(mem_gb, 1) if mem_gb else None,
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "numpy": np.__version__, "load_average": [round(x, 2) for x in os.getloadavg()]}


def sgemm_gflops(n: int = 1024, repeats: int = 5) -> float:
    """Best float32 matrix-multiply rate of numpy here: the yardstick for the arithmetic floor."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    a @ a
    best = min(_timed(lambda: a @ a, 1) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _worker_env(cfg: BenchConfig, stock: bool = False) -> dict:
    env = {"EMOTION_JAX_CACHE": "off"}  # compile times are measured cold, not read from JAX's disk cache
    if stock:
        env["EMOTION_FAST_KERNELS"] = "0"  # backends/*.py then leave Keras and the framework as shipped
    if cfg.devices not in (1, "all"):
        env["EMOTION_CPU_DEVICES"] = str(cfg.devices)  # JAX on a CPU: N devices (accelerators are unaffected)
    if cfg.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # every backend then falls back to the CPU
        env["HIP_VISIBLE_DEVICES"] = ""
    return env


def run_backend(cfg: BenchConfig, backend: str, log=print, stock: bool = False) -> dict:
    t = time.perf_counter()
    result = harness.run_step(backend, "emotion.tools.bench:worker", {"config": cfg.to_dict()}, what="bench",
                              timeout=cfg.timeout, env=_worker_env(cfg, stock))
    result["process_s"] = time.perf_counter() - t
    step, warm = result["compute"]["step_s"]["median"], result["end_to_end"]["warm_step_s"]["median"]
    log(f"  {backend}{' (stock)' if stock else ''}: compute step {step:.3f} s, end to end {warm:.3f} s, "
        f"{result['inference']['images_per_s']['median']:.1f} img/s")
    if result.get("scaling"):
        log(f"  {backend}: {scaling_line(result['scaling'])}")
    return result


def run_reference(cfg: BenchConfig, log=print) -> dict | None:
    if not REFERENCE_SCRIPT.is_file():
        log(f"  reference skipped: {REFERENCE_SCRIPT} not found (run from a clone of the repository)")
        return None
    if importlib.util.find_spec("tensorflow") is None:
        log("  reference skipped: it runs under TensorFlow, which is not installed")
        return None
    with tempfile.TemporaryDirectory(prefix="emotion-bench-ref-") as tmp:
        out = Path(tmp) / "reference.json"
        cmd = [sys.executable, str(REFERENCE_SCRIPT), "--data", cfg.data, "--image-size", str(cfg.image_size),
               "--batch-size", str(cfg.batch_size), "--epochs", str(1 + cfg.repeats), "--json", str(out)]
        harness.run(cmd, "tensorflow", what="the seed reference", timeout=cfg.timeout, env=_worker_env(cfg))
        result = json.loads(out.read_text())
    log(f"  reference (seed notebook pipeline, tensorflow): {result['warm_step_s']['median']:.3f} s/step")
    return result


def run_bench(cfg: BenchConfig, log=print) -> dict:
    """Run every backend and the reference, write ``bench.md``, ``bench.json``, ``bench.png`` into cfg.out."""
    class_folders(cfg.data)  # a missing or one-class data folder fails here, before any process starts
    present, missing = harness.plan(cfg.backends, what="bench", log=log)
    report = {"settings": cfg.to_dict(), "machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "not_installed": missing}
    report["machine"]["sgemm_gflops"] = round(sgemm_gflops(), 1)
    log(f"bench: {', '.join(present)} on {report['machine']['cpu']} ({report['machine']['cores']} cores); "
        f"{cfg.preset} {cfg.image_size}px batch {cfg.batch_size}, {cfg.precision}, {cfg.repeats} repeat(s)")
    report["backends"] = {b: run_backend(cfg, b, log) for b in present}
    report["stock"] = {b: run_backend(cfg, b, log, stock=True) for b in present} if cfg.stock else {}
    report["reference"] = run_reference(cfg, log) if cfg.reference else None
    report["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    report["summary"] = summarize(report)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "bench.json", json.dumps(report, indent=2))
    write_atomic(out / "bench.md", markdown(report))
    chart(report, out / "bench.png")
    log(f"wrote {out / 'bench.md'}, {out / 'bench.json'}, {out / 'bench.png'}")
    return report


# ============================================================================================ entry points
def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `emotion bench`: the shared settings (from emotion.config), then bench's own (values checked by
    `make_config`, so bad ones give one-line errors)."""
    add_settings(p, only=list(SHARED.values()), defaults=DEFAULTS)
    p.add_argument("--backends", help=f"comma-separated (default: {','.join(BACKENDS)})")
    p.add_argument("--device", help="auto (GPU where the backend finds one) | cpu | gpu (default auto)")
    p.add_argument("--repeats", help="timed repeats of each measurement (default 5)")
    p.add_argument("--steps", help="training steps per compute-only repeat (default 5)")
    p.add_argument("--latency-runs", help="batch-1 predictions for p50/p95 (default 50)")
    p.add_argument("--timeout", help="seconds allowed per backend process (default 3600)")
    p.add_argument("--no-reference", dest="reference", action="store_false", default=None,
                   help="skip the seed-notebook reference row")
    p.add_argument("--stock", action="store_true", default=None,
                   help="also time each backend as shipped (EMOTION_FAST_KERNELS=0): plain Keras rows")
    p.add_argument("--devices", help="also time the compute step data-parallel on N devices (or all the backend "
                                     "sees) against 1 (JAX)")
    p.add_argument("--quick", action="store_true", default=None,
                   help="tiny sizes, one repeat (a smoke test, not a measurement)")


def config_from_args(args) -> BenchConfig:
    shared = overrides_from_args(args)
    names = ("backends", "device", "repeats", "steps", "latency_runs", "timeout", "reference", "stock", "quick",
             "devices")
    return make_config(**{n: shared[key] for n, key in SHARED.items()}, **{n: getattr(args, n, None) for n in names})
