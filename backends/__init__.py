"""The only backend-specific code in the project.

`select(name)` must run before anything imports Keras: it sets ``KERAS_BACKEND`` and the environment a
framework reads at import time (JAX's memory preallocation, TensorFlow's log level). `configure()` then sets
what can only be set once the framework is imported (TensorFlow memory growth, determinism, PyTorch threads),
and `describe()` reports the backend, its framework version and its devices for ``metrics.json``.

    from emotion import backends
    backends.select("jax")          # before `import keras`
    import keras
    backends.configure(deterministic=True)
    backends.describe()  # {"backend": "jax", "framework_version": "0.10.2", "devices": ["cpu:0"], ...}
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import importlib.util
import json
import os
import sys

NAMES = ("jax", "tensorflow", "torch")
_FRAMEWORK = {"jax": "jax", "tensorflow": "tensorflow", "torch": "torch"}
_DISPLAY = {"jax": "JAX", "tensorflow": "TensorFlow", "torch": "PyTorch"}


class BackendError(RuntimeError):
    """A backend was asked for that does not exist or is not installed."""


def fast_kernels() -> bool:
    """Each backend module's speed settings are on unless ``EMOTION_FAST_KERNELS=0`` (stock Keras, for
    comparison: `emotion bench --stock`)."""
    return os.environ.get("EMOTION_FAST_KERNELS", "1") != "0"


def installed() -> list[str]:
    """Backends whose framework can be imported in this environment."""
    return [name for name in NAMES if importlib.util.find_spec(_FRAMEWORK[name]) is not None]


def _module(name: str):
    return importlib.import_module(f"emotion.backends.{name}")


def _keras_config_backend() -> str | None:
    """The ``backend`` of Keras's own config file (``$KERAS_HOME/keras.json``, else ``~/.keras/keras.json``), read
    without importing Keras; None where there is none or it cannot be read."""
    path = os.path.join(os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras"), "keras.json")
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f).get("backend")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def default() -> str:
    """What Keras itself would pick: ``KERAS_BACKEND``, else keras.json's ``backend``, else TensorFlow. Where that
    framework is not installed, the first installed of jax, tensorflow, torch (installing an extra that pulls in
    another framework, as `[export]` pulls in JAX, does not move a TensorFlow user to it)."""
    name = os.environ.get("KERAS_BACKEND") or _keras_config_backend()
    if name:
        return name
    available = installed()
    if not available:
        raise BackendError("no Keras backend installed: pip install -e '.[tensorflow]' (or [jax], [torch])")
    return "tensorflow" if "tensorflow" in available else available[0]


def select(name: str | None = None, deterministic: bool = False) -> str:
    """Pick the backend (default: `default()`, as Keras would) before Keras is imported."""
    name = name or default()
    if name not in NAMES:
        raise BackendError(f"unknown backend {name!r}: choose one of {', '.join(NAMES)}")
    if "keras" in sys.modules and os.environ.get("KERAS_BACKEND", name) != name:
        raise BackendError(f"Keras is already imported with backend {os.environ['KERAS_BACKEND']!r}")
    if importlib.util.find_spec(_FRAMEWORK[name]) is None:
        onnx = importlib.util.find_spec("onnxruntime") is not None and not installed()
        raise BackendError(f"backend {name!r} is not installed here: " + (
            "--runtime onnx runs a shipped model (or an .onnx export) with the onnxruntime that is, or " if onnx
            else "") + f"pip install -e '.[{name}]'")
    os.environ["KERAS_BACKEND"] = name
    _module(name).prepare(deterministic=deterministic)
    return name


def current() -> str:
    import keras  # here, so that the framework loads only when needed

    return keras.backend.backend()


def configure(deterministic: bool = False) -> None:
    """Device setup and determinism switches for the running backend (after Keras is imported)."""
    _module(current()).configure(deterministic=deterministic)


def peak_device_memory() -> int | None:
    """Peak bytes the running backend has allocated on its first accelerator; None on a CPU-only run."""
    fn = getattr(_module(current()), "peak_device_memory", None)
    return fn() if fn else None


# Keras modules whose ``tf.available`` only asks whether a value could be a TensorFlow one (or seeds TensorFlow)
_ASKS_ONLY = frozenset({"keras.src.utils.rng_utils", "keras.src.saving.serialization_lib",
                        "keras.src.legacy.saving.json_utils", "keras.src.distribution.distribution_lib"})


def leave_tensorflow_unimported() -> None:
    """Under JAX or PyTorch, stop Keras from importing TensorFlow only to ask whether it could (idempotent).

    Keras asks ``tf.available`` (its lazy ``tensorflow`` module) in `keras.utils.set_random_seed` and each
    time it serializes an object (``isinstance(obj, tf.TensorShape)``, ``tf.DType``, ``tf.TypeSpec``), and the
    asking imports TensorFlow where it is installed: 3 s of a 1-epoch JAX fit's 19 s here, and several hundred MB,
    for a framework these backends never run. After this call, those callers alone (`_ASKS_ONLY`) are told
    TensorFlow is available only once something has imported it, which is exact for them: no object is a
    TensorFlow one, and no ``tf.data`` pipeline needs seeding, before TensorFlow is imported. Every other caller
    gets Keras's own answer (the string preprocessing layers, Hashing, StringLookup..., which run on TensorFlow
    under every backend, still import it), and code that uses TensorFlow imports it as before."""
    from keras.src.utils import module_utils  # here, so that the framework loads only when needed

    lazy = module_utils.tensorflow
    if getattr(type(lazy), "imported_only", False) or "tensorflow" in sys.modules:
        return

    class ImportedOnly(type(lazy)):
        imported_only = True

        @property
        def available(self):
            if "tensorflow" not in sys.modules and sys._getframe(1).f_globals.get("__name__") in _ASKS_ONLY:
                return False
            return super().available

    lazy.__class__ = ImportedOnly


def rng_state():
    """The framework's global random state that training consumes outside Keras's seed generators (PyTorch:
    Keras's unseeded dropout fast path draws from torch's global generator), as a numpy array; None where
    there is none. `emotion.training.callbacks.Checkpoint` saves it so a resumed run draws what an uninterrupted
    one would."""
    fn = getattr(_module(current()), "rng_state", None)
    return fn() if fn else None


def set_rng_state(state) -> None:
    fn = getattr(_module(current()), "set_rng_state", None)
    if fn and state is not None:
        fn(state)


def data_parallel(devices: int | str = 1) -> int:
    """Split each training batch over ``devices`` (a count, or ``"all"``) of the running backend's devices, the
    model replicated on each (`keras.distribution.DataParallel`); call before the model is built. Returns the
    number of devices used; 1 leaves one device (and clears a distribution an earlier call set). Raises
    `BackendError` (one line, naming what works) where the backend cannot, or has fewer devices.

    Only JAX can: Keras 3's `keras.distribution` has no PyTorch side, and its TensorFlow side is a prototype Keras
    marks 'DO NOT USE' (no value distribution, not used by fit). Those backends train on one device."""
    name = current()
    fn = getattr(_module(name), "data_parallel", None)
    if fn is not None:
        return fn(devices)
    if devices != "all" and int(devices) > 1:  # "all": every device this backend trains on, one
        raise BackendError(f"--devices {devices}: data-parallel training runs under the JAX backend only "
                           f"(--backend jax); {_DISPLAY[name]} trains on one device")
    return 1


def initialize_processes(num_processes: int, process_id: int, coordinator: str) -> None:
    """Join ``num_processes`` processes (this one is ``process_id``) that train one model together, each on its
    own devices, meeting at ``coordinator`` (HOST:PORT of process 0). Call before the framework computes
    anything; `data_parallel` then spans every process's devices. Raises `BackendError` (one line) where the
    backend cannot (under Keras 3, every backend but JAX)."""
    name = os.environ.get("KERAS_BACKEND") or current()
    fn = getattr(_module(name), "initialize_processes", None)
    if fn is None:
        raise BackendError(f"--num-processes {num_processes}: training over several processes runs under the JAX "
                           f"backend only (--backend jax); {_DISPLAY[name]} trains in one process")
    fn(num_processes, process_id, coordinator)


def exchange(text: str) -> list[str]:
    """Every process's ``text`` (UTF-8, up to `EXCHANGE_BYTES`), in process order: a meeting point after
    `initialize_processes` that every process must reach (each sends its own, each gets all)."""
    return _module(current()).exchange(text)


EXCHANGE_BYTES = 2048


def resolve_devices(devices: int | str, available: int) -> int:
    n = available if devices == "all" else int(devices)
    if n < 1:
        raise BackendError(f"--devices must be a positive count or 'all', got {devices!r}")
    if n > available:
        raise BackendError(f"--devices {n}: the {current()} backend sees {available} device(s)")
    return n


def enable_float64() -> None:
    """Let the running backend compute in float64 (`keras.config.set_floatx("float64")` does the rest).

    JAX silently computes float64 arrays in float32 unless x64 is switched on; the others need nothing."""
    fn = getattr(_module(current()), "enable_float64", None)
    if fn:
        fn()


def export_formats(name: str | None = None) -> dict[str, tuple[str, ...]]:
    """``{format: modules it needs}`` that `model.export` writes under backend ``name`` (default: the running one).
    Reads the backend module's table only: the framework is not imported."""
    return dict(getattr(_module(name or current()), "EXPORT_FORMATS", {}))


def export_unsupported(name: str | None = None) -> dict[str, str]:
    """``{format: why not}`` for the formats backend ``name`` cannot write."""
    return dict(getattr(_module(name or current()), "EXPORT_UNSUPPORTED", {}))


def litert_quantization(mode: str, calibration) -> dict:
    """`model.export(format="litert", **options)` options for ``mode`` ("dynamic" or "int8") on this backend."""
    fn = getattr(_module(current()), "litert_quantization", None)
    if fn is None:
        raise BackendError(f"LiteRT quantization is not available under the {current()} backend")
    return fn(mode, calibration)


def describe() -> dict:
    """``{"backend", "framework_version", "devices"}`` of the running backend, and ``"accelerators"`` (the
    GPUs' model names, e.g. "NVIDIA H200") where it runs on any."""
    import keras  # here, so that the framework loads only when needed

    name = current()
    info = {"backend": name, "keras_version": keras.__version__}
    info.update(_module(name).describe())
    return info


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """Serve every allocation from the heap and keep freed memory for reuse (glibc ``mallopt``).

    Eager PyTorch allocates each activation and gradient afresh: the seed CNN's first layer alone makes
    130 MB tensors. glibc hands blocks that large (over its 32 MB mmap ceiling) to ``mmap`` and gives them
    back with ``munmap`` on free, so every step page-faults and zero-fills a few GB of new pages. Keeping
    them in the heap (no mmap, no trimming) lets the next step reuse the same pages: the torch training step
    went from 0.72 to 0.44 CPU-s here, with the same kernels and values. TensorFlow's CPU allocator is malloc
    too: the FER2013 recipe's step went from ~1.1 s to ~0.63 s (Keras's progress bar, same run, same busy day,
    2026-11-25), with futex/mmap/munmap taking most of the CPU before. JAX has its own allocator. Returns False
    where the C library is not glibc (nothing is changed).
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
