"""Hostile `.onnx` files (issue 29.7) are refused in one line by `emotion.onnxguard` before onnxruntime reads them,
and an onnxruntime failure while running is one line too. The files are written here with a tiny protobuf encoder
(the `onnx` package is not needed, as the guard does not need it)."""

import struct

import numpy as np
import pytest

from emotion.errors import EmotionError
from emotion.modelfile import SHIPPED, resolve_model
from emotion.onnxguard import check_onnx_file

pytestmark = pytest.mark.once  # touches no Keras backend


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def f(num: int, value) -> bytes:
    """One field: an int as a varint, bytes/str/a message as length-delimited."""
    if isinstance(value, int):
        return varint(num << 3) + varint(value)
    data = value.encode() if isinstance(value, str) else value
    return varint(num << 3 | 2) + varint(len(data)) + data


def value_info(name: str, dims) -> bytes:
    shape = b"".join(f(1, f(1, d) if isinstance(d, int) else f(2, d)) for d in dims)
    return f(1, name) + f(2, f(1, f(1, 1) + f(2, shape)))


def tensor(name: str, dims, dtype=1, raw: bytes | None = None, external: dict | None = None) -> bytes:
    out = b"".join(f(1, d) for d in dims) + f(2, dtype) + f(8, name)
    if raw is not None:
        out += f(9, raw)
    if external is not None:
        out += b"".join(f(13, f(1, k) + f(2, str(v))) for k, v in external.items()) + f(14, 1)
    return out


def model(nodes=(), initializers=(), inputs=(("x", ["N", 4]),), outputs=(("y", ["N", 4]),), meta=None) -> bytes:
    graph = b"".join(f(1, n) for n in nodes) + f(2, "g") + b"".join(f(5, t) for t in initializers)
    graph += b"".join(f(11, value_info(n, d)) for n, d in inputs)
    graph += b"".join(f(12, value_info(n, d)) for n, d in outputs)
    out = f(1, 8) + f(8, f(1, "") + f(2, 13)) + f(7, graph)
    return out + b"".join(f(14, f(1, k) + f(2, v)) for k, v in (meta or {}).items())


def node(op: str, inputs, outputs) -> bytes:
    return b"".join(f(1, i) for i in inputs) + b"".join(f(2, o) for o in outputs) + f(4, op)


IDENTITY = [node("Identity", ["x"], ["y"])]


def refused(tmp_path, data: bytes, words: str, name="m.onnx"):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(EmotionError) as e:
        resolve_model(path)
    assert words in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_the_shipped_onnx_models_pass():
    for name in SHIPPED:
        path = SHIPPED[name].with_suffix(".onnx")
        if path.is_file():
            assert check_onnx_file(path)["nodes"] > 10


def test_a_plain_model_passes_and_runs(tmp_path):
    path = tmp_path / "ok.onnx"
    path.write_bytes(model(IDENTITY))
    assert check_onnx_file(path)["nodes"] == 1
    pytest.importorskip("onnxruntime")
    from emotion.modelfile import OnnxModel

    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    assert np.array_equal(OnnxModel(path).predict_on_batch(x), x)


def test_a_huge_declared_input_is_refused(tmp_path):
    refused(tmp_path, model(IDENTITY, inputs=[("x", ["N", 100000, 100000, 3])]), "fixed dimension must be")
    refused(tmp_path, model(IDENTITY, inputs=[("x", ["N", 10000, 10000, 3])]), "values an image")


def test_a_2gb_initializer_in_external_data_is_refused(tmp_path):
    (tmp_path / "w.bin").write_bytes(b"\0" * 64)
    big = tensor("w", [1 << 29], external={"location": "w.bin", "offset": 0, "length": 1 << 31})
    refused(tmp_path, model(IDENTITY, [big]), "initializers declare more than")


def test_external_data_outside_the_folder_or_past_its_end_is_refused(tmp_path):
    (tmp_path / "w.bin").write_bytes(b"\0" * 64)
    outside = tensor("w", [4], external={"location": "../../etc/passwd"})
    refused(tmp_path, model(IDENTITY, [outside]), "outside the model's folder")
    short = tensor("w", [1024], external={"location": "w.bin", "offset": 0, "length": 4096})
    refused(tmp_path, model(IDENTITY, [short]), "past the end")


def test_an_initializer_holding_more_than_its_shape_is_refused(tmp_path):
    refused(tmp_path, model(IDENTITY, [tensor("w", [2], raw=b"\0" * 4096)]), "bytes for its shape")


def test_a_huge_expand_is_refused(tmp_path):
    shape = tensor("s", [3], dtype=7, raw=struct.pack("<3q", 100000, 100000, 100))
    refused(tmp_path, model([node("Expand", ["x", "s"], ["y"])], [shape]), "Expand asks for shape")


def test_metadata_nested_deep_or_huge_is_refused(tmp_path):
    refused(tmp_path, model(IDENTITY, meta={"emotion": "[" * 5000 + "]" * 5000}), "nests over")
    refused(tmp_path, model(IDENTITY, meta={"a": "x" * (2 << 20)}), "metadata over")


def test_garbage_is_refused_in_one_line(tmp_path):
    refused(tmp_path, b"\xff" * 100, "not an ONNX model")
    refused(tmp_path, b"", "not an ONNX model")


def test_an_onnxruntime_failure_while_running_is_one_line(tmp_path):
    pytest.importorskip("onnxruntime")
    from emotion.modelfile import OnnxModel

    shape = tensor("s", [3], dtype=7, raw=struct.pack("<3q", 7, 7, 7))
    path = tmp_path / "reshape.onnx"
    path.write_bytes(model([node("Reshape", ["x", "s"], ["y"])], [shape], outputs=[("y", [7, 7, 7])]))
    with pytest.raises(EmotionError) as e:
        OnnxModel(path).predict_on_batch(np.zeros((1, 4), np.float32))
    assert "\n" not in str(e.value) and ("ONNX" in str(e.value)), str(e.value)
