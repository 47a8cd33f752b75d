"""PyTorch: device (CUDA when Keras finds one), all cores for intra-op threads, determinism on request."""

import os


def prepare(deterministic: bool = False) -> None:
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def configure(deterministic: bool = False) -> None:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def describe() -> dict:
    import torch
    from keras.src.backend.torch.core import get_device

    devices = [str(get_device())]
    return {"framework_version": torch.__version__.split("+")[0], "devices": devices}
