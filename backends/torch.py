"""PyTorch: device (CUDA when Keras finds one), all cores for intra-op threads, determinism on request."""

import functools
import os

import numpy as np
from emotion.backends import fast_kernels, keep_freed_memory, leave_tensorflow_unimported

# `model.export` formats this backend writes (emotion.tools.export), each with the modules it needs; the others
# with the reason they cannot.
EXPORT_FORMATS = {"onnx": ("onnx", "onnxscript"), "openvino": ("openvino",), "torch": ("torch",)}
EXPORT_UNSUPPORTED = {
    "tf_saved_model": "Keras's SavedModel export under PyTorch needs torch-xla (and fails with a dynamic batch)",
    "litert": "Keras writes LiteRT under PyTorch only through litert-torch, which emotion[export] leaves out "
              "(it pins typing-extensions 4.12 and pulls in transformers)",
}


def prepare(deterministic: bool = False) -> None:
    if fast_kernels():
        # OpenMP threads that wait by sleeping, not spinning: on a busy 2-core machine a spinning thread burns
        # the core its partner needs (torch step 1.02 -> 0.66 CPU-s, batch-1 predict 160 -> 7 ms here). Read
        # once, when torch loads its OpenMP runtime, so it must be set before `import torch`.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        keep_freed_memory()
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def configure(deterministic: bool = False) -> None:
    import torch  # here, so that the framework loads only when needed

    torch.set_num_threads(os.cpu_count() or 1)
    if fast_kernels():
        leave_tensorflow_unimported()
        install_fast_ops()
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


# ------------------------------------------------------------------------------------- fast max-pool, conv
def install_fast_ops() -> None:
    """Route Keras's torch ``max_pool`` and ``conv`` through `fast_max_pool_2d` / `fast_conv_2d` for 2D
    channels_last input, Keras's 2D convolution layers through `fused_conv_call`, and ``affine_transform``
    (the affine augmentation layers) through `fast_affine_transform` (idempotent; other cases fall back to
    Keras's own functions).

    Keras permutes NHWC to NCHW and makes it contiguous (a full copy of the activation) before
    ``max_pool2d`` and before ``conv2d``, where it then copies it again to channels_last. The same torch
    ops on the permuted view (NCHW indexing, channels_last memory) run PyTorch's channels_last kernels: no
    copies, outputs stay NHWC-contiguous, and values and gradients are the same ops'.
    """
    from keras.src.backend.torch import (
        image as torch_image,  # here, so that the framework loads only when needed
    )  # here, so that the framework loads only when needed
    from keras.src.backend.torch import nn as torch_nn  # here, so that the framework loads only when needed
    from keras.src.layers.convolutional.base_conv import (
        BaseConv,  # here, so that the framework loads only when needed
    )  # here, so that the framework loads only when needed

    for name, fast in (("max_pool", fast_max_pool_2d), ("conv", fast_conv_2d)):
        original = getattr(torch_nn, name)
        if getattr(original, "emotion_original", None) is not None:
            continue
        setattr(torch_nn, name, _with_fallback(fast, original))
    if getattr(BaseConv.call, "emotion_original", None) is None:
        BaseConv.call = _with_fallback(fused_conv_call, BaseConv.call)
    if getattr(torch_image.affine_transform, "emotion_original", None) is None:
        torch_image.affine_transform = _with_fallback(fast_affine_transform, torch_image.affine_transform)


def _with_fallback(fast, original):
    @functools.wraps(original)  # the signature too: Keras inspects a layer's ``call`` arguments
    def op(*args, **kwargs):
        out = fast(*args, **kwargs)
        return original(*args, **kwargs) if out is None else out

    op.emotion_original = original
    return op


def uninstall_fast_ops() -> None:
    """Put Keras's own torch ``max_pool``, ``conv``, ``affine_transform`` and convolution layer ``call`` back."""
    from keras.src.backend.torch import (
        image as torch_image,  # here, so that the framework loads only when needed
    )  # here, so that the framework loads only when needed
    from keras.src.backend.torch import nn as torch_nn  # here, so that the framework loads only when needed
    from keras.src.layers.convolutional.base_conv import (
        BaseConv,  # here, so that the framework loads only when needed
    )  # here, so that the framework loads only when needed

    for owner, name in ((torch_nn, "max_pool"), (torch_nn, "conv"), (BaseConv, "call"),
                        (torch_image, "affine_transform")):
        op = getattr(owner, name)
        setattr(owner, name, getattr(op, "emotion_original", op))


def fused_conv_call(layer, inputs):
    """Keras's ``BaseConv.call`` for a biased 2D channels_last convolution (`fast_conv_2d`'s cases), with the bias added
    inside the convolution (``F.conv2d(x, w, bias)``), the way TensorFlow's grappler fuses it.

    Keras convolves, then adds the bias as a separate op: one more pass over the output forward, and a
    reduction over the output gradient backward. oneDNN adds the bias in the convolution kernel and computes
    its gradient in the convolution's backward pass. Same weights, same arithmetic (conv, then + bias),
    round-off at the 1e-7 level. None (Keras's own call) for anything else: other ranks, no bias, LoRA,
    a subclass with its own ``convolution_op``.
    """
    from keras.src.backend.torch.core import (
        convert_to_tensor,  # here, so that the framework loads only when needed
    )  # here, so that the framework loads only when needed
    from keras.src.layers.convolutional.base_conv import (
        BaseConv,  # here, so that the framework loads only when needed
    )  # here, so that the framework loads only when needed

    if (layer.rank != 2 or not layer.use_bias or layer.lora_enabled
            or type(layer).convolution_op is not BaseConv.convolution_op):
        return None
    outputs = fast_conv_2d(inputs, layer.kernel, list(layer.strides), layer.padding, layer.data_format,
                           layer.dilation_rate, bias=convert_to_tensor(layer.bias))
    if outputs is None:
        return None
    return layer.activation(outputs) if layer.activation is not None else outputs


def _pair(value):
    return (value,) * 2 if isinstance(value, int) else tuple(value)


def _same_padding(spatial, kernel, strides, dilation):
    """Keras's 'same' padding per spatial dimension (extra pixel at the end) as F.conv2d's symmetric
    ``padding``; None where some dimension pads unevenly (Keras then pads the tensor itself)."""
    pads = []
    for size, k, s, d in zip(spatial, kernel, strides, dilation, strict=True):
        span = (k - 1) * d + 1
        total = span - 1 if s == 1 else max(0, ((size + s - 1) // s - 1) * s + span - size)
        if total % 2:
            return None
        pads.append(total // 2)
    return tuple(pads)


def fast_conv_2d(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1, bias=None):
    """Keras's conv for 4D channels_last 'valid' (or evenly padded 'same') input without its two input copies
    (NHWC -> contiguous NCHW -> channels_last NCHW): the NCHW view of NHWC memory already is channels_last. Same
    F.conv2d call, same memory formats, same result (``bias``: added inside the convolution); None where it does
    not apply."""
    import torch  # here, so that the framework loads only when needed
    from keras.src import backend  # here, so that the framework loads only when needed
    from keras.src.backend.torch.core import (
        convert_to_tensor,  # here, so that the framework loads only when needed
    )  # here, so that the framework loads only when needed

    if padding not in ("valid", "same") or backend.standardize_data_format(data_format) != "channels_last":
        return None
    inputs, kernel = convert_to_tensor(inputs), convert_to_tensor(kernel)
    if inputs.ndim != 4 or kernel.ndim != 4 or inputs.shape[-1] % kernel.shape[-2]:
        return None
    pads = (0, 0) if padding == "valid" else _same_padding(inputs.shape[1:3], kernel.shape[:2], _pair(strides),
                                                          _pair(dilation_rate))
    if pads is None:
        return None
    nchw = inputs.permute(0, 3, 1, 2)
    if not nchw.is_contiguous(memory_format=torch.channels_last):
        nchw = nchw.contiguous(memory_format=torch.channels_last)
    oihw = kernel.permute(3, 2, 0, 1).contiguous(memory_format=torch.channels_last)
    out = torch.nn.functional.conv2d(nchw, oihw, bias, stride=_pair(strides), padding=pads,
                                     dilation=_pair(dilation_rate), groups=inputs.shape[-1] // kernel.shape[-2])
    return out.permute(0, 2, 3, 1)


def fast_max_pool_2d(inputs, pool_size, strides=None, padding="valid", data_format=None):
    """Keras's max_pool for 4D channels_last 'valid' input without layout copies; None where it does not apply."""
    import torch  # here, so that the framework loads only when needed
    from keras.src import backend  # here, so that the framework loads only when needed

    # here, so that the framework loads only when needed
    from keras.src.backend.torch.core import convert_to_tensor, get_device

    if padding != "valid" or backend.standardize_data_format(data_format) != "channels_last":
        return None
    inputs = convert_to_tensor(inputs)
    if inputs.ndim != 4 or get_device() == "meta":
        return None
    pool = _pair(pool_size)
    stride = pool if strides is None else _pair(strides)
    nchw = inputs.permute(0, 3, 1, 2)  # a view: channels_last memory when ``inputs`` is NHWC-contiguous
    out = torch.nn.functional.max_pool2d(nchw, kernel_size=pool, stride=stride, padding=0)
    return out.permute(0, 2, 3, 1)


def fast_affine_transform(images, transform, interpolation="bilinear", fill_mode="constant", fill_value=0,
                          data_format=None):
    """Keras's torch ``affine_transform`` (RandomRotation, RandomZoom, RandomTranslation) as one
    ``F.grid_sample`` call for the whole batch; None (Keras's own) where it does not apply.

    Keras's version loops over the batch in Python and gathers 8 corners per image through
    ``map_coordinates``: ~33 ms per layer for 64 faces of 48x48 here, against ~5 ms for TensorFlow's kernel.
    ``grid_sample`` with ``align_corners=True`` samples the same points (output pixel (y, x) reads input
    (b0 x + b1 y + b2, a0 x + a1 y + a2)) with the same bilinear weights; its 'border' padding is Keras's
    'nearest' fill (both clamp to the edge pixel) and its 'zeros' padding is 'constant' fill with 0.
    The coordinates are rescaled to [-1, 1] and back, so values differ by round-off: up to ~2e-3 on the
    0-255 pixel scale. Handled: 4D float images, bilinear,
    fill 'nearest' or 'constant' with 0, affine transforms (c0 = c1 = 0), images of at least 2x2.
    """
    import torch  # here, so that the framework loads only when needed
    from keras.src import backend  # here, so that the framework loads only when needed
    from keras.src.backend.torch.core import (
        convert_to_tensor,  # here, so that the framework loads only when needed
    )  # here, so that the framework loads only when needed

    padding_mode = {"nearest": "border", "constant": "zeros"}.get(fill_mode)
    if interpolation != "bilinear" or padding_mode is None or (fill_mode == "constant" and fill_value != 0):
        return None
    images, transform = convert_to_tensor(images), convert_to_tensor(transform)
    if images.ndim != 4 or not torch.is_floating_point(images) or transform.ndim not in (1, 2):
        return None
    channels_last = backend.standardize_data_format(data_format) == "channels_last"
    nchw = images.permute(0, 3, 1, 2) if channels_last else images
    h, w = nchw.shape[2], nchw.shape[3]
    t = transform.reshape(-1, 8).to(nchw.dtype)
    if h < 2 or w < 2 or t.shape[0] not in (1, nchw.shape[0]) or bool(t[:, 6:].abs().max() > 0):
        return None
    t = t.expand(nchw.shape[0], 8)
    ys = torch.arange(h, dtype=t.dtype, device=t.device).view(1, h, 1)
    xs = torch.arange(w, dtype=t.dtype, device=t.device).view(1, 1, w)
    a0, a1, a2, b0, b1, b2 = (t[:, i].view(-1, 1, 1) for i in range(6))
    x_in = a0 * xs + a1 * ys + a2  # input column of each output pixel
    y_in = b0 * xs + b1 * ys + b2  # input row
    grid = torch.stack((x_in * (2 / (w - 1)) - 1, y_in * (2 / (h - 1)) - 1), dim=-1)
    out = torch.nn.functional.grid_sample(nchw, grid, mode="bilinear", padding_mode=padding_mode,
                                          align_corners=True)
    return out.permute(0, 2, 3, 1) if channels_last else out


def rng_state():
    """torch's global CPU generator (and the current CUDA device's, where there is one), as one uint8 array."""
    import torch  # here, so that the framework loads only when needed

    parts = [torch.get_rng_state().numpy()]
    if torch.cuda.is_available():
        parts.append(torch.cuda.get_rng_state().numpy())
    return np.concatenate([np.array([len(parts[0])], dtype=np.int64).view(np.uint8), *parts])


def set_rng_state(state) -> None:
    import torch  # here, so that the framework loads only when needed

    state = np.asarray(state, dtype=np.uint8)
    n = int(state[:8].view(np.int64)[0])
    torch.set_rng_state(torch.from_numpy(state[8:8 + n].copy()))
    if torch.cuda.is_available() and len(state) > 8 + n:
        torch.cuda.set_rng_state(torch.from_numpy(state[8 + n:].copy()))


def peak_device_memory() -> int | None:
    import torch  # here, so that the framework loads only when needed

    return torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None


def describe() -> dict:
    import torch  # here, so that the framework loads only when needed
    from keras.src.backend.torch.core import get_device  # here, so that the framework loads only when needed

    devices = [str(get_device())]
    info = {"framework_version": torch.__version__.split("+")[0], "devices": devices}
    if devices[0].startswith("cuda"):
        info["accelerators"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info

