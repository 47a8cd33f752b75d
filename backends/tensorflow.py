"""TensorFlow: GPU memory growth (as the seed did), op determinism on request, and `fit` without a ~35 s stall
at the start of each epoch (tf.data autotuning, see `py_datasets_without_autotune`)."""

import logging
import os
import sys

from emotion.backends import fast_kernels, keep_freed_memory

# `model.export` formats this backend writes (emotion.tools.export), each with the modules it needs; the others
# with the reason they cannot.
EXPORT_FORMATS = {"tf_saved_model": ("tensorflow",), "onnx": ("tf2onnx", "onnx"), "litert": ("tensorflow",),
                  "openvino": ("openvino",)}
EXPORT_UNSUPPORTED = {"torch": "a torch ExportedProgram needs the PyTorch backend"}


def prepare(deterministic: bool = False) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _quiet_import()
    if os.environ["TF_CPP_MIN_LOG_LEVEL"] != "0":
        # TensorFlow's Python logger warns "N out of the last N calls ... triggered tf.function retracing" when one
        # model predicts on a few differently shaped inputs (a run's val, test, samples and reload check): expected
        # here, and noise in a user's terminal. Errors still show; TF_CPP_MIN_LOG_LEVEL=0 shows everything.

        logging.getLogger("tensorflow").setLevel(logging.ERROR)


def _quiet_import() -> None:
    """Import TensorFlow with file descriptor 2 closed: its C++ start-up lines ("oneDNN custom operations are
    on", absl's "before InitializeLog") ignore TF_CPP_MIN_LOG_LEVEL and would precede every message of ours."""
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        return
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            try:
                import tensorflow  # noqa: F401
            except Exception:
                pass  # re-raised with its message below, where stderr is back
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    import tensorflow  # noqa: F401,F811


def configure(deterministic: bool = False) -> None:
    import tensorflow as tf  # here, so that the framework loads only when needed

    if fast_kernels():
        py_datasets_without_autotune()
        keep_freed_memory()

    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised: the setting cannot change any more
            pass
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def py_datasets_without_autotune() -> None:
    """Turn tf.data autotuning off for the datasets Keras makes from a `keras.utils.PyDataset`.

    Keras feeds a PyDataset to TensorFlow as `from_generator(...).prefetch(AUTOTUNE)` and makes a new iterator
    every epoch (and for every validation pass). Autotuning starts a model thread per iterator whose optimisation
    sleeps grow to tens of seconds; destroying the iterator waits for that sleep to end. On the FER2013 recipe
    (`vgg-bn`, 189 steps + validation per epoch) the first step of most epochs waited 35 s with the CPU idle:
    81 s epochs instead of 47 s (gdb: `~RootDataset::Iterator` waiting on the autotune thread). Keras itself turns
    autotuning off when a PyDataset has workers (its enqueuer); this does the same for the in-thread case. The
    generator makes a batch in ~2 ms against a ~230 ms step, and epochs measured 44-46 s without autotuning."""
    # here, so that the framework loads only when needed
    from keras.src.trainers.data_adapters import py_dataset_adapter

    adapter = py_dataset_adapter.PyDatasetAdapter
    if getattr(adapter.get_tf_dataset, "_emotion_no_autotune", False):
        return
    original = adapter.get_tf_dataset

    def get_tf_dataset(self):
        import tensorflow as tf  # here, so that the framework loads only when needed

        options = tf.data.Options()
        options.autotune.enabled = False
        return original(self).with_options(options)

    get_tf_dataset._emotion_no_autotune = True
    adapter.get_tf_dataset = get_tf_dataset


def peak_device_memory() -> int | None:
    import tensorflow as tf  # here, so that the framework loads only when needed

    if not tf.config.list_logical_devices("GPU"):
        return None
    return tf.config.experimental.get_memory_info("GPU:0")["peak"]


def litert_quantization(mode: str, calibration) -> dict:
    """`model.export(format="litert")` options for post-training quantization (TFLite converter settings).

    "dynamic": int8 weights, float activations. "int8": int8 weights and activations, ranges calibrated on
    ``calibration`` (uint8 images), every op int8; input and output stay float32."""
    import tensorflow as tf  # here, so that the framework loads only when needed

    options = {"optimizations": [tf.lite.Optimize.DEFAULT]}
    if mode == "int8":
        def representative():
            for image in calibration:
                yield [image[None].astype("float32")]

        options["representative_dataset"] = representative
        options["target_spec"] = {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]}
    return options


def describe() -> dict:
    import tensorflow as tf  # here, so that the framework loads only when needed

    devices = tf.config.list_logical_devices()
    info = {"framework_version": tf.__version__, "devices": [d.name.replace("/device:", "").lower() for d in devices]}
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        info["accelerators"] = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
    return info

