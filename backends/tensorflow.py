"""TensorFlow: GPU memory growth (as the seed did), op determinism on request."""

import os


def prepare(deterministic: bool = False) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _quiet_import()


def _quiet_import() -> None:
    """Import TensorFlow with file descriptor 2 closed: its C++ start-up lines ("oneDNN custom operations are
    on", absl's "before InitializeLog") ignore TF_CPP_MIN_LOG_LEVEL and would precede every message of ours."""
    import sys

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
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised: the setting cannot change any more
            pass
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def describe() -> dict:
    import tensorflow as tf

    devices = tf.config.list_logical_devices()
    return {
        "framework_version": tf.__version__,
        "devices": [d.name.replace("/device:", "").lower() for d in devices],
    }
