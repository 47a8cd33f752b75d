"""JAX: no full-memory preallocation on GPUs; deterministic GPU reductions on request."""

import os


def prepare(deterministic: bool = False) -> None:
    # JAX grabs 75% of GPU memory at start by default; allocate as needed instead.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if deterministic:
        flags = os.environ.get("XLA_FLAGS", "")
        if "--xla_gpu_deterministic_ops" not in flags:
            os.environ["XLA_FLAGS"] = (flags + " --xla_gpu_deterministic_ops=true").strip()


def configure(deterministic: bool = False) -> None:
    pass  # everything JAX needs is read from the environment at import time (prepare)


def describe() -> dict:
    import jax

    return {
        "framework_version": jax.__version__,
        "devices": [f"{d.platform}:{d.id}" for d in jax.devices()],
    }
