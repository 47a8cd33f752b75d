"""JAX: no full-memory preallocation on GPUs; deterministic GPU reductions on request; CPU speed settings.

Speed (see docs/performance.md; ``EMOTION_FAST_KERNELS=0`` turns them off): XLA:CPU's YNNPACK convolutions
(an XLA flag, set in `prepare`), a max-pool whose gradient XLA:CPU runs fast (`install_fast_max_pool`, in
`configure`), and a jitted train step for models with Keras's affine augmentation layers
(`allow_jit_with_affine_augmentation`). None changes a value the model computes, nor anything saved in a
`.keras` file.
"""

import os

import numpy as np
from emotion.backends import (
    EXCHANGE_BYTES,
    BackendError,
    fast_kernels,
    leave_tensorflow_unimported,
    resolve_devices,
)

# XLA:CPU runs convolutions through its YNNPACK library path once any YNN fusion type is enabled: the seed
# CNN's convolutions (forward and both gradients) run ~2-3x faster than the default emitter. Same math.
YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type=dot"


# `model.export` formats this backend writes (emotion.tools.export), each with the modules it needs; the others
# with the reason they cannot.
EXPORT_FORMATS = {"tf_saved_model": ("tensorflow",), "onnx": ("jax2onnx", "onnx")}
EXPORT_UNSUPPORTED = {
    "litert": "Keras writes LiteRT only under TensorFlow or PyTorch",
    "openvino": "OpenVINO cannot convert the XlaCallModule op of JAX's exported graph",
    "torch": "a torch ExportedProgram needs the PyTorch backend",
}


def compilation_cache_dir() -> str | None:
    """Where JAX keeps compiled programs between processes: $JAX_COMPILATION_CACHE_DIR where the user set it,
    else ``jax/`` in emotion's cache folder ($EMOTION_CACHE, $XDG_CACHE_HOME/emotion, ~/.cache/emotion); None
    where EMOTION_JAX_CACHE or EMOTION_CACHE is "off"."""
    if os.environ.get("EMOTION_JAX_CACHE") == "off":
        return None
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return os.environ["JAX_COMPILATION_CACHE_DIR"]
    base = os.environ.get("EMOTION_CACHE")
    if base == "off":
        return None
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = os.path.join(xdg, "emotion") if xdg and os.path.isabs(xdg) else os.path.join("~", ".cache", "emotion")
    return os.path.join(os.path.expanduser(base), "jax")


def use_compilation_cache() -> None:
    """JAX's persistent compilation cache, on for every compile (JAX's default keeps only compiles over 1 s).
    Without it a JAX process compiles everything anew: loading the shipped model took 10.7 s here, 10 of them
    compiling one random initializer per weight shape (whose values the file then replaces), and 1.9 s with it.
    The cache is JAX's own (keyed by program, flags, device and jax version), capped at 1 GB."""
    where = compilation_cache_dir()
    if where is None:
        return
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", where)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(1 << 30))


def prepare(deterministic: bool = False) -> None:
    # JAX grabs 75% of GPU memory at start by default; allocate as needed instead.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    use_compilation_cache()
    flags = os.environ.get("XLA_FLAGS", "")
    cpus = os.environ.get("EMOTION_CPU_DEVICES")  # N: the CPU shows as N devices (to try --devices without GPUs)
    if cpus and "xla_force_host_platform_device_count" not in flags:
        flags = os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={int(cpus)}".strip()
    if fast_kernels() and "xla_cpu_experimental_ynn_fusion_type" not in flags:
        os.environ["XLA_FLAGS"] = (flags + " " + YNN_FLAG).strip()
    if deterministic:
        flags = os.environ.get("XLA_FLAGS", "")
        if "--xla_gpu_deterministic_ops" not in flags:
            os.environ["XLA_FLAGS"] = (flags + " --xla_gpu_deterministic_ops=true").strip()


def configure(deterministic: bool = False) -> None:
    if fast_kernels():
        leave_tensorflow_unimported()
        install_fast_max_pool()
        allow_jit_with_affine_augmentation()


# --------------------------------------------------------------------------- jit with affine augmentation
def _affine_augmentation_layers() -> tuple:
    from keras import layers  # here, so that the framework loads only when needed

    return (layers.RandomRotation, layers.RandomZoom, layers.RandomTranslation)


def allow_jit_with_affine_augmentation() -> None:
    """Let `compile` jit the train step of a model holding RandomRotation / RandomZoom / RandomTranslation.

    Those layers set ``supports_jit = False`` because TensorFlow's kernel for them
    (``ImageProjectiveTransformV3``) has no XLA lowering, and Keras then runs the *whole* train step of any
    model containing one without ``jax.jit``: op by op, about 2x slower for the `vgg-bn` preset here. Under
    JAX these layers are pure ``jax.numpy`` (``map_coordinates``) and trace fine, with the seed generator's
    state carried as a non-trainable variable like Dropout's. This wraps Keras's ``model_supports_jit`` so
    that, under this backend, those three layers no longer veto jit; any other non-jittable layer still
    does (idempotent).
    """
    from keras.src.trainers import trainer  # here, so that the framework loads only when needed

    original = trainer.model_supports_jit
    if getattr(original, "emotion_original", None) is not None:
        return
    jittable = _affine_augmentation_layers()

    def model_supports_jit(model):
        if all(layer.supports_jit or isinstance(layer, jittable) for layer in model._flatten_layers()):
            return True
        return original(model)

    model_supports_jit.emotion_original = original
    trainer.model_supports_jit = model_supports_jit


# ------------------------------------------------------------------------------------------ fast max-pool
def install_fast_max_pool() -> None:
    """Route Keras's JAX ``max_pool`` through `fast_max_pool_2d` where it applies (idempotent).

    XLA differentiates ``reduce_window(max)`` into ``select_and_scatter``, which XLA:CPU runs as a slow
    scalar loop: about a third of the seed CNN's training step. `fast_max_pool_2d` has the same forward
    values and the same gradient (to the first maximum of each window, as select_and_scatter's ``ge``
    picks it) from reshapes and elementwise selects, which XLA fuses. Other cases (strides != pool size,
    'same' padding that pads, channels_first, 1D/3D) keep Keras's implementation.
    """
    from keras.src.backend.jax import nn as jax_nn  # here, so that the framework loads only when needed

    if getattr(jax_nn.max_pool, "emotion_original", None) is not None:
        return
    original = jax_nn.max_pool

    def max_pool(inputs, pool_size, strides=None, padding="valid", data_format=None):
        window = _fast_pool_window(inputs, pool_size, strides, padding, data_format)
        if window is None:
            return original(inputs, pool_size, strides, padding, data_format)
        return fast_max_pool_2d(inputs, window)

    max_pool.emotion_original = original
    jax_nn.max_pool = max_pool


def uninstall_fast_max_pool() -> None:
    from keras.src.backend.jax import nn as jax_nn  # here, so that the framework loads only when needed

    jax_nn.max_pool = getattr(jax_nn.max_pool, "emotion_original", jax_nn.max_pool)


def _fast_pool_window(inputs, pool_size, strides, padding, data_format):
    """(p, q) where the fast path gives exactly Keras's result, else None."""
    from keras.src import backend  # here, so that the framework loads only when needed

    if getattr(inputs, "ndim", None) != 4 or backend.standardize_data_format(data_format) != "channels_last":
        return None
    pool = (pool_size, pool_size) if isinstance(pool_size, int) else tuple(pool_size)
    stride = pool if strides is None else (strides, strides) if isinstance(strides, int) else tuple(strides)
    if len(pool) != 2 or pool != stride:
        return None
    _, h, w, _ = inputs.shape
    if padding == "same" and (h % pool[0] or w % pool[1]):
        return None  # 'same' pads here; only the unpadded case is reproduced
    if padding not in ("valid", "same") or h < pool[0] or w < pool[1]:
        return None
    return pool


def fast_max_pool_2d(x, window):
    """Max-pool NHWC ``x`` over non-overlapping ``window`` = (p, q) tiles, dropping any remainder ('valid')."""
    return _max_pool_tiles(x, tuple(window))


def _tiles(x, p, q):
    n, h, w, c = x.shape
    return x[:, : h // p * p, : w // q * q].reshape(n, h // p, p, w // q, q, c)


def _max_pool_tiles_impl(x, window):
    return _tiles(x, *window).max(axis=(2, 4))


def _max_pool_tiles_fwd(x, window):
    y = _max_pool_tiles_impl(x, window)
    return y, (x, y)


def _max_pool_tiles_bwd(window, residuals, g):
    import jax.numpy as jnp  # here, so that the framework loads only when needed

    x, y = residuals
    p, q = window
    tiles = _tiles(x, p, q)
    zero = jnp.zeros_like(g)
    taken, rows = None, []
    for a in range(p):  # window positions in row-major order; each gradient goes to the first maximum
        cols = []
        for b in range(q):
            hit = tiles[:, :, a, :, b, :] == y
            first = hit if taken is None else hit & ~taken
            taken = hit if taken is None else taken | hit
            cols.append(jnp.where(first, g, zero))
        rows.append(jnp.stack(cols, axis=3))  # (n, h/p, w/q, q, c)
    n, h, w, c = x.shape
    dx = jnp.stack(rows, axis=2).reshape(n, h // p * p, w // q * q, c)
    if dx.shape != x.shape:
        dx = jnp.pad(dx, ((0, 0), (0, h - dx.shape[1]), (0, w - dx.shape[2]), (0, 0)))
    return (dx,)


def _make_max_pool_tiles():
    import jax  # here, so that the framework loads only when needed

    fn = jax.custom_vjp(_max_pool_tiles_impl, nondiff_argnums=(1,))
    fn.defvjp(_max_pool_tiles_fwd, _max_pool_tiles_bwd)
    return fn


def _max_pool_tiles(x, window):
    global _MAX_POOL_TILES
    if _MAX_POOL_TILES is None:
        _MAX_POOL_TILES = _make_max_pool_tiles()
    return _MAX_POOL_TILES(x, window)


_MAX_POOL_TILES = None


def peak_device_memory() -> int | None:
    import jax  # here, so that the framework loads only when needed

    device = jax.devices()[0]
    if device.platform == "cpu":
        return None
    return (device.memory_stats() or {}).get("peak_bytes_in_use")


def enable_float64() -> None:
    import jax  # here, so that the framework loads only when needed

    jax.config.update("jax_enable_x64", True)


def describe() -> dict:
    import jax  # here, so that the framework loads only when needed

    info = {"framework_version": jax.__version__, "devices": [f"{d.platform}:{d.id}" for d in jax.devices()]}
    accelerators = [d.device_kind for d in jax.devices() if d.platform != "cpu"]
    return {**info, "accelerators": accelerators} if accelerators else info


# ------------------------------------------------------------------------------------------ several processes
def initialize_processes(num_processes: int, process_id: int, coordinator: str) -> None:
    """`jax.distributed.initialize` with the three values given (see `backends.initialize_processes`), CPU
    collectives through gloo (XLA's CPU client needs them to run a computation across processes).

    `keras.distribution.initialize` does the same call, but without a way to switch off JAX's cluster
    detection: under SLURM or Open MPI that detection makes each process see one GPU only (its local rank's),
    where one process per host should train on every GPU of its host. (Keras's call also agrees on a random
    seed across processes when none is set; `emotion fit` always sets one.)"""
    import jax  # here, so that the framework loads only when needed

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id, cluster_detection_method="deactivate",
                                   initialization_timeout=_timeout("EMOTION_PROCESS_TIMEOUT", 300))
    except (RuntimeError, ValueError) as e:  # a port in use, a host that never answers, JAX already running
        first = " ".join(str(e).split())[:300]
        raise BackendError(f"process {process_id} of {num_processes} could not join the others at {coordinator}: "
                           f"{first}") from None


def _timeout(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, default)))
    except ValueError:
        return default


def exchange(text: str) -> list[str]:
    """Every process's ``text``, in process order (`backends.exchange`): one allgather of a byte buffer."""
    from jax.experimental import multihost_utils  # here, so that the framework loads only when needed

    data = text.encode()[:EXCHANGE_BYTES]
    buf = np.zeros(EXCHANGE_BYTES + 4, np.uint8)
    buf[:4] = np.frombuffer(np.uint32(len(data)).tobytes(), np.uint8)
    buf[4:4 + len(data)] = np.frombuffer(data, np.uint8)
    rows = np.asarray(multihost_utils.process_allgather(buf)).reshape(-1, EXCHANGE_BYTES + 4)
    return [bytes(r[4:4 + int(np.frombuffer(r[:4].tobytes(), np.uint32)[0])]).decode(errors="replace") for r in rows]


# ------------------------------------------------------------------------------------------ data parallel
def data_parallel(devices: int | str = 1) -> int:
    """`keras.distribution.DataParallel` over the first ``devices`` devices (see `backends.data_parallel`); after
    `initialize_processes`, over the first ``devices`` devices *of each process* (so at least one per process;
    ``"all"``: as many as the process with the fewest has).

    Each batch is split along its first axis over the devices, the weights are replicated, and XLA (GSPMD)
    sums the gradients across them: the same step as on one device, up to the order of the sums. A batch
    whose size the device count does not divide (the partial last batch of an epoch or of a validation
    pass) is replicated instead of split (`_place_uneven_batches`), so every image is still used once."""
    import jax  # here, so that the framework loads only when needed
    import keras  # here, so that the framework loads only when needed

    if jax.process_count() > 1:  # every process sees every device: each works out the same mesh
        per_process = [[d for d in jax.devices() if d.process_index == p] for p in range(jax.process_count())]
        n = resolve_devices(devices, min(len(mine) for mine in per_process))
        names = [f"{d.platform}:{d.id}" for mine in per_process for d in mine[:n]]
        _place_uneven_batches()  # every process is given the whole batch (not Keras's tf.data auto-sharding)
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=names, auto_shard_dataset=False))
        return len(names)
    names = keras.distribution.list_devices()
    n = resolve_devices(devices, len(names))
    if n == 1:
        keras.distribution.set_distribution(None)
        return 1
    _place_uneven_batches()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=names[:n]))
    return n


def _place_uneven_batches() -> None:
    """Let Keras's JAX trainer take batches the data-parallel mesh does not divide, and global batches when
    several processes train (idempotent).

    One process: Keras places every batch with the layout of the epoch's first batch
    (``make_array_from_process_local_data`` with the batch axis split), which fails on a smaller last batch
    whose size is not a multiple of the device count. Such a batch is put on every device whole (replicated);
    the jitted step then computes it on each device, which costs time only on that one batch and gives the
    one-device result.

    Several processes: every process reads the same data in the same seeded order, so each holds the whole
    global batch on the host, and gives its own devices only their rows of it (`_global_batch`). (Keras's way,
    each process passing its local slice, cannot tell a slice from a whole uneven last batch by its shape.)"""
    import jax  # here, so that the framework loads only when needed
    from keras.src import tree  # here, so that the framework loads only when needed
    from keras.src.backend.jax import (
        trainer as jax_trainer,  # here, so that the framework loads only when needed
    )  # here, so that the framework loads only when needed
    from keras.src.distribution import distribution_lib  # here, so that the framework loads only when needed

    original = jax_trainer._distribute_data
    if getattr(original, "emotion_original", None) is not None:
        return

    def _distribute_data(data, layouts=None):
        dist = distribution_lib.distribution()
        if dist is not None:
            mesh, axis = dist.device_mesh.backend_mesh, dist.batch_dim_name
            n = mesh.shape[axis]
            sizes = {d.shape[0] for d in tree.flatten(data) if d is not None and getattr(d, "ndim", 0)}
            split = not any(s % n for s in sizes)
            if jax.process_count() > 1:
                return tree.map_structure(lambda d: None if d is None else _global_batch(d, mesh, axis, split), data)
            if not split:
                replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
                return tree.map_structure(lambda d: None if d is None else jax.device_put(d, replicated), data)
        return original(data, layouts)

    _distribute_data.emotion_original = original
    jax_trainer._distribute_data = _distribute_data


def _global_batch(d, mesh, axis: str, split: bool):
    """``d``, a whole batch that every process holds alike, as one array over ``mesh``: its first axis split over
    the ``axis`` devices (``split``), or whole on each device. Each process puts only its own devices' rows."""
    import jax  # here, so that the framework loads only when needed
    d = np.asarray(d)
    spec = jax.sharding.PartitionSpec(axis) if split and d.ndim else jax.sharding.PartitionSpec()
    return jax.make_array_from_callback(d.shape, jax.sharding.NamedSharding(mesh, spec), lambda index: d[index])
