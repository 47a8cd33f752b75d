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
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emotion import backends
from emotion.config import DataConfig, ModelConfig, TrainerConfig
from emotion.errors import EmotionError
from emotion.tools import harness

BACKENDS = backends.NAMES
DEVICES = ("auto", "cpu", "gpu")
REPO = Path(__file__).resolve().parents[2]
REFERENCE_SCRIPT = REPO / "scripts" / "seed_reference.py"
TARGETS = {"pipeline": 1.10, "vs_reference": 2.0, "spread": 1.5}


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
    from emotion.config import load_config

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
    import keras

    from emotion.config import DataConfig
    from emotion.data.datamodule import EmotionDataModule
    from emotion.models.module import EmotionClassifier

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
    from emotion.models.module import EmotionClassifier

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
    import resource

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
    log(f"  {backend}{' (stock)' if stock else ''}: compute step {result['compute']['step_s']['median']:.3f} s, end to end "
        f"{result['end_to_end']['warm_step_s']['median']:.3f} s, {result['inference']['images_per_s']['median']:.1f} img/s")
    if result.get("scaling"):
        log(f"  {backend}: {scaling_line(result['scaling'])}")
    return result


def scaling_line(sc: dict) -> str:
    """One line for a `measure_scaling` result."""
    if "skipped" in sc:
        return f"data parallel skipped: {sc['skipped']}"
    n, step = sc["devices"], sc["step_s"]
    return (f"compute step {step['1']['median']:.3f} s on 1 device, {step[str(n)]['median']:.3f} s on {n} "
            f"(same global batch): speedup {sc['speedup']:.2f}x, scaling efficiency {sc['efficiency']:.0%}")


def run_reference(cfg: BenchConfig, log=print) -> dict | None:
    import importlib.util

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
    from emotion.data.folders import class_folders

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
    (out / "bench.json").write_text(json.dumps(report, indent=2))
    (out / "bench.md").write_text(markdown(report))
    chart(report, out / "bench.png")
    log(f"wrote {out / 'bench.md'}, {out / 'bench.json'}, {out / 'bench.png'}")
    return report


# ============================================================================================ report
def summarize(report: dict) -> dict:
    """Ratios to the fastest backend and to the reference, the arithmetic floor, and the speed targets."""
    rows = report["backends"]
    cfg = report["settings"]
    compute = {b: r["compute"]["step_s"]["median"] for b, r in rows.items()}
    e2e = {b: r["end_to_end"]["warm_step_s"]["median"] for b, r in rows.items()}
    cpu = {b: r["end_to_end"]["warm_step_cpu_s"]["median"] for b, r in rows.items()}
    ref = report.get("reference")
    ref_step = ref["warm_step_s"]["median"] if ref else None
    first = next(iter(rows.values()))
    gflops = report["machine"]["sgemm_gflops"]
    floor_step = first["train_gflop_per_image"] * cfg["batch_size"] / gflops
    floor_img_s = gflops / first["forward_gflop_per_image"]
    out = {"fastest_compute": min(compute, key=compute.get), "fastest_end_to_end": min(e2e, key=e2e.get),
           "floor": {"train_gflop_per_step": first["train_gflop_per_image"] * cfg["batch_size"],
                     "step_s": floor_step, "forward_gflop_per_image": first["forward_gflop_per_image"],
                     "images_per_s": floor_img_s},
           "rows": {}}
    for b in rows:
        out["rows"][b] = {
            "compute_x_fastest": compute[b] / min(compute.values()),
            "end_to_end_x_fastest": e2e[b] / min(e2e.values()),
            "end_to_end_cpu_x_fastest": cpu[b] / min(cpu.values()),
            "end_to_end_over_compute_cpu": cpu[b] / rows[b]["compute"]["step_cpu_s"]["median"],
            "end_to_end_over_compute": e2e[b] / compute[b],
            "speedup_vs_reference": ref_step / e2e[b] if ref_step else None,
            "x_floor": e2e[b] / floor_step,
            "inference_share_of_floor": rows[b]["inference"]["images_per_s"]["median"] / floor_img_s,
        }
    fastest = min(e2e.values())
    out["targets"] = {
        "end_to_end <= 1.10 x compute, every backend": all(
            v["end_to_end_over_compute"] <= TARGETS["pipeline"] for v in out["rows"].values()),
        "end_to_end <= 1.10 x compute, every backend (CPU seconds)": all(
            v["end_to_end_over_compute_cpu"] <= TARGETS["pipeline"] for v in out["rows"].values()),
        "fastest end to end >= 2 x faster than the seed reference": (
            ref_step / fastest >= TARGETS["vs_reference"]) if ref_step else None,
        "every backend within 1.5 x of the fastest (end to end)": all(
            v["end_to_end_x_fastest"] <= TARGETS["spread"] for v in out["rows"].values()),
        "every backend within 1.5 x of the fastest (compute only)": all(
            v["compute_x_fastest"] <= TARGETS["spread"] for v in out["rows"].values()),
        "every backend within 1.5 x of the fastest (end to end, CPU seconds)": all(
            v["end_to_end_cpu_x_fastest"] <= TARGETS["spread"] for v in out["rows"].values()),
    }
    return out


def _spread(stats: dict, scale: float = 1.0, fmt: str = "{:.3f}") -> str:
    med, lo, hi = (stats[k] * scale for k in ("median", "min", "max"))
    if len(stats["values"]) < 2:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(lo)}–{fmt.format(hi)})"


def _ratio(x) -> str:
    return "–" if x is None else f"{x:.2f}×"


def _on_accelerator(row: dict) -> bool:
    """Whether a backend's row ran on an accelerator (the arithmetic floor is the host CPU's sgemm rate)."""
    return any(not d.startswith("cpu") for d in row.get("devices", []))


def _accelerators(row: dict) -> str:
    names = row.get("accelerators") or []
    return f" ({', '.join(sorted(set(names)))})" if names else ""


def markdown(report: dict) -> str:
    cfg, m, summary = report["settings"], report["machine"], report["summary"]
    rows, ref, stock = report["backends"], report.get("reference"), report.get("stock") or {}
    floor = summary["floor"]
    versions = ", ".join(f"{b} {r['framework_version']}" for b, r in rows.items())
    keras_version = next(iter(rows.values()))["keras_version"]
    fastest = min(r["end_to_end"]["warm_step_s"]["median"] for r in rows.values())
    fastest_compute = min(r["compute"]["step_s"]["median"] for r in rows.values())
    ref_step = ref["warm_step_s"]["median"] if ref else None
    missing = harness.missing_note(report.get("not_installed") or [])

    speed = []
    for b, r in rows.items():
        s = summary["rows"][b]
        speed.append([b, _spread(r["compute"]["step_s"]), _ratio(s["compute_x_fastest"]),
                      _spread(r["end_to_end"]["warm_step_s"]), _ratio(s["end_to_end_x_fastest"]),
                      f"{s['end_to_end_over_compute']:.2f}", _ratio(s["speedup_vs_reference"]),
                      f"{r['end_to_end']['cold_epoch_s']:.2f}", f"{r['compute']['compile_s']:.2f}"])
    for b, r in stock.items():
        c, e = r["compute"]["step_s"], r["end_to_end"]["warm_step_s"]
        speed.append([f"{b}, stock Keras (`EMOTION_FAST_KERNELS=0`)", _spread(c), _ratio(c["median"] / fastest_compute),
                      _spread(e), _ratio(e["median"] / fastest), f"{e['median'] / c['median']:.2f}",
                      _ratio(ref_step / e["median"] if ref_step else None), f"{r['end_to_end']['cold_epoch_s']:.2f}",
                      f"{r['compute']['compile_s']:.2f}"])
    if ref:
        speed.append(["reference (seed notebook pipeline, tensorflow)", "–", "–", _spread(ref["warm_step_s"]),
                      _ratio(ref["warm_step_s"]["median"] / fastest), "–", "1.00×", f"{ref['first_epoch_s']:.2f}", "–"])

    named = [*rows.items(), *((f"{b}, stock Keras", r) for b, r in stock.items())]
    best_c = min(r["compute"]["step_cpu_s"]["median"] for r in rows.values())
    best_e = min(r["end_to_end"]["warm_step_cpu_s"]["median"] for r in rows.values())
    cpu = [[b, _spread(c), _ratio(c["median"] / best_c), _spread(e), _ratio(e["median"] / best_e)]
           for b, c, e in ((b, r["compute"]["step_cpu_s"], r["end_to_end"]["warm_step_cpu_s"]) for b, r in named)]

    inference = []
    for b, r in named:
        inf, mem = r["inference"], r["memory"]
        share = "–" if _on_accelerator(r) else f"{inf['images_per_s']['median'] / floor['images_per_s']:.0%}"
        inference.append([b, f"{inf['latency_s']['p50'] * 1e3:.1f}", f"{inf['latency_s']['p95'] * 1e3:.1f}",
                          _spread(inf["images_per_s"], fmt="{:.1f}"), share, f"{inf['compile_s']:.2f}",
                          f"{mem['peak_host_mb']:.0f}",
                          "–" if mem["peak_device_mb"] is None else f"{mem['peak_device_mb']:.0f}"])

    lines = [
        "# emotion bench", "",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, {m['os']}; load average "
        f"{m['load_average'][0]} at start, {m.get('load_average_end', ['?'])[0]} at end",
        f"- versions: Keras {keras_version}; {versions}; Python {m['python']}, numpy {m['numpy']}",
        "- devices: " + "; ".join(f"{b} {', '.join(r['devices'])}" + _accelerators(r) for b, r in rows.items()),
        f"- settings: preset `{cfg['preset']}`, {cfg['image_size']}×{cfg['image_size']}, batch {cfg['batch_size']}, "
        f"{cfg['precision']}, device {cfg['device']}, {cfg['repeats']} repeat(s)"
        + (" (quick mode)" if cfg["quick"] else "") + f", data `{cfg['data']}`",
        f"- arithmetic floor: {floor['train_gflop_per_step']:.1f} GFLOP per training step at numpy's "
        f"{m['sgemm_gflops']:.0f} GFLOP/s sgemm = {floor['step_s']:.3f} s/step; inference "
        f"{floor['forward_gflop_per_image']:.3f} GFLOP/image = {floor['images_per_s']:.0f} images/s"
        + ("; the host CPU's rate, no yardstick for a GPU (no share of floor for its rows)"
           if any(_on_accelerator(r) for r in rows.values()) else ""),
        *([f"- {missing}"] if missing else []),
        *(f"- {b}, data parallel: {scaling_line(r['scaling'])}" for b, r in rows.items() if r.get("scaling")),
        "", "Seconds per training step of "
        f"{cfg['batch_size']} images: median (min–max over repeats). Compute only: `train_on_batch` on tensors "
        "already in memory. End to end: `fit` on the image files through `emotion.data.datamodule`, warm epochs; the "
        "cold epoch decodes every file (decode + first epoch). Ratios are to the fastest backend of this run.",
        "",
        harness.table(["backend", "compute step s", "× fastest", "end-to-end step s", "× fastest", "e2e / compute",
                       "× faster than reference", "cold epoch s", "compile + first step s"], speed),
        "", "CPU seconds per step (process time of all the backend's threads): less disturbed than wall time "
        "by other programs on a shared machine, and on an idle one about wall time × busy cores.", "",
        harness.table(["backend", "compute CPU-s", "× fastest", "end-to-end CPU-s", "× fastest"], cpu),
        "", f"Inference (`predict_on_batch`); the floor is the per-image arithmetic at numpy's sgemm rate "
        f"({floor['images_per_s']:.0f} images/s).", "",
        harness.table(["backend", "batch-1 p50 ms", "batch-1 p95 ms", f"batch-{cfg['batch_size']} images/s",
                       "share of floor", "compile s", "peak host MB", "peak GPU MB"], inference),
        "", "Speed targets (medians of this run):", "",
    ]
    for name, ok in summary["targets"].items():
        lines.append(f"- {'n/a' if ok is None else 'met' if ok else 'NOT met'}: {name}")
    return "\n".join(lines) + "\n"


def _error_bars(medians, stats) -> np.ndarray:
    return np.array([[m - s["min"] for m, s in zip(medians, stats, strict=True)],
                     [s["max"] - m for m, s in zip(medians, stats, strict=True)]])


def chart(report: dict, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, ref = report["backends"], report.get("reference")
    names = list(rows)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    xs = np.arange(len(names))
    for offset, key, sub, label, color in ((-0.2, "compute", "step_s", "compute only", "teal"),
                                           (0.2, "end_to_end", "warm_step_s", "end to end (warm)", "orange")):
        stats = [rows[b][key][sub] for b in names]
        med = np.array([s["median"] for s in stats])
        err = _error_bars(med, stats)
        left.bar(xs + offset, med, 0.4, yerr=err, capsize=3, label=label, color=color)
    if ref:
        left.axhline(ref["warm_step_s"]["median"], color="crimson", ls="--", label="seed notebook pipeline")
    left.axhline(report["summary"]["floor"]["step_s"], color="gray", ls=":", label="arithmetic floor")
    left.set_xticks(xs, names)
    left.set_ylabel(f"seconds per step (batch {report['settings']['batch_size']})")
    left.set_title("training step (lower is better)")
    left.legend(fontsize=8)
    ips = [rows[b]["inference"]["images_per_s"] for b in names]
    med = np.array([s["median"] for s in ips])
    err = _error_bars(med, ips)
    right.bar(xs, med, 0.5, yerr=err, capsize=3, color="slateblue")
    right.set_xticks(xs, names)
    right.set_ylabel("images / s")
    right.set_title(f"inference, batch {report['settings']['batch_size']} (higher is better)")
    fig.suptitle(f"emotion bench: {report['settings']['preset']} {report['settings']['image_size']}px, "
                 f"{report['machine']['cpu']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ============================================================================================ entry points
def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `emotion bench`: the shared settings (from emotion.config), then bench's own (values checked by
    `make_config`, so bad ones give one-line errors)."""
    from emotion.config import add_arguments as add_settings

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
    from emotion.config import overrides_from_args

    shared = overrides_from_args(args)
    names = ("backends", "device", "repeats", "steps", "latency_runs", "timeout", "reference", "stock", "quick",
             "devices")
    return make_config(**{n: shared[key] for n, key in SHARED.items()}, **{n: getattr(args, n, None) for n in names})
