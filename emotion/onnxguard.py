"""The `.onnx` twin of `emotion.guard`: an ONNX file is checked before onnxruntime reads it, by reading its
protobuf here (no `onnx` package needed: the ``.[onnx]`` venv has onnxruntime alone).

A hostile ONNX file can cost gigabytes before onnxruntime says a word (issue 29: a declared huge input, a 2 GB
initializer, a huge ``Expand``, metadata nested deep). `check_onnx_file` refuses, in one line:

- a file over the model size limit (``--max-model-mb``, 512 MB), or initializers (in the file and in external data
  files) that declare more than it in all, or data that does not fit its declared shape;
- external data outside the model's folder, missing, or shorter than it claims;
- an input with a fixed dimension that is not positive or above `MAX_DIM`, or more than `MAX_INPUT_ELEMENTS` values
  an image; more than `MAX_NODES` nodes; graphs nested deeper than `MAX_GRAPH_DEPTH`;
- an ``Expand``, ``ConstantOfShape`` or ``Tile`` whose constant shape asks for more than `MAX_TENSOR_ELEMENTS`;
- metadata over `MAX_METADATA_BYTES` in all, or an ``emotion`` entry nested deeper than `MAX_JSON_DEPTH`.

    check_onnx_file("model.onnx", Limits())          # EmotionError, or the summary {"nodes": 41, ...}
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from emotion.errors import EmotionError
from emotion.guard import MIB, Limits

MAX_DIM = 16384  # a fixed input dimension (pixels a side, channels, batch)
MAX_INPUT_ELEMENTS = 1 << 24  # values in one input image (16 M: a 2300-px RGB square); the shipped model's: 2304
MAX_TENSOR_ELEMENTS = 1 << 28  # values a constant-shaped Expand/ConstantOfShape/Tile may make (1 GiB of float32)
MAX_NODES = 100_000
MAX_GRAPH_DEPTH = 8  # subgraphs (If, Loop, Scan) inside subgraphs
MAX_METADATA_BYTES = 1 << 20
MAX_JSON_DEPTH = 100

# TensorProto.DataType -> bytes a value (strings: counted by their data)
ELEMENT_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 14: 8, 15: 16, 16: 2,
                 17: 1, 18: 1, 19: 1, 20: 1, 21: 1, 22: 1, 23: 1}


class _Bad(Exception):
    pass


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise _Bad("a truncated or malformed number")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def fields(buf: memoryview):
    """(field number, wire type, value) of one protobuf message: an int for varints and fixed numbers, a
    memoryview for length-delimited fields."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = int.from_bytes(buf[i:i + 8], "little"), i + 8
        elif wire == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise _Bad("a field longer than its message")
            value, i = buf[i:i + n], i + n
        elif wire == 5:
            value, i = int.from_bytes(buf[i:i + 4], "little"), i + 4
        else:
            raise _Bad(f"wire type {wire}")
        if i > len(buf):
            raise _Bad("a truncated field")
        yield num, wire, value


def _ints(wire, value) -> list[int]:
    """A repeated int64 field's values (packed or not), as signed numbers."""
    if wire == 0:
        raw = [value]
    else:
        raw, i = [], 0
        while i < len(value):
            v, i = _varint(value, i)
            raw.append(v)
    return [v - (1 << 64) if v >= 1 << 63 else v for v in raw]


class _Check:
    def __init__(self, path: Path, limits: Limits):
        self.path, self.limits = path, limits
        self.declared = 0  # bytes the initializers declare
        self.nodes = 0
        self.constants: dict[str, list[int]] = {}  # small int64 initializers: candidate shape inputs

    def tensor(self, buf: memoryview, where: str) -> None:
        dims, dtype, data, name, external, location = [], 1, 0, "", {}, 0
        for num, wire, v in fields(buf):
            if num == 1:
                dims += _ints(wire, v)
            elif num == 2 and wire == 0:
                dtype = v
            elif num in (4, 5, 6, 7, 9, 10, 11) and wire == 2:  # float/int32/string/int64/raw/double/uint64 data
                data += len(v)
            elif num == 8 and wire == 2:
                name = bytes(v).decode(errors="replace")
            elif num == 13 and wire == 2:
                entry = {k: bytes(x).decode(errors="replace") for k, x in _entry(v)}
                external.update({entry.get("key", ""): entry.get("value", "")})
            elif num == 14 and wire == 0:
                location = v
        if any(d < 0 for d in dims):
            raise EmotionError(f"ONNX model {self.path}: initializer {name!r} has a negative dimension {dims}")
        count = math.prod(dims)
        size = count * ELEMENT_BYTES.get(dtype, 1)
        self.declared += size
        if self.declared > self.limits.max_total_bytes:
            raise EmotionError(f"ONNX model {self.path}: its initializers declare more than "
                               f"{self.limits.max_total_bytes / MIB:.0f} MB ({name!r} alone {size / MIB:.0f} MB; "
                               "--max-model-mb raises the limit)")
        if location == 1 or external:
            self.external(name, external, size)
        elif dtype != 8 and data and data > size + 16 * (count + 1):  # data past what its shape holds
            raise EmotionError(f"ONNX model {self.path}: initializer {name!r} holds {data} bytes for its shape {dims}")
        if dtype == 7 and len(dims) == 1 and count <= 16 and location != 1:
            values = _int64_values(buf)
            if values is not None and name:
                self.constants[name] = values

    def external(self, name: str, entry: dict, size: int) -> None:
        where = entry.get("location", "")
        base = self.path.parent.resolve()
        target = (base / where).resolve()
        if not where or os.path.isabs(where) or not target.is_relative_to(base):
            raise EmotionError(f"ONNX model {self.path}: initializer {name!r} reads {where!r}, outside the model's "
                               "folder")
        if not target.is_file():
            raise EmotionError(f"ONNX model {self.path}: initializer {name!r} reads {where!r}, which is not a file "
                               "beside it")
        try:
            offset, length = int(entry.get("offset", 0)), int(entry.get("length", size))
        except ValueError:
            raise EmotionError(f"ONNX model {self.path}: initializer {name!r} has a malformed offset or length") \
                from None
        if offset < 0 or length < 0 or offset + length > target.stat().st_size:
            raise EmotionError(f"ONNX model {self.path}: initializer {name!r} reads past the end of {where!r}")

    def graph(self, buf: memoryview, depth: int) -> None:
        if depth > MAX_GRAPH_DEPTH:
            raise EmotionError(f"ONNX model {self.path}: graphs nested over {MAX_GRAPH_DEPTH} deep")
        nodes = []
        for num, wire, v in fields(buf):
            if wire != 2:
                continue
            if num == 5:
                self.tensor(v, "initializer")
            elif num == 15:  # sparse initializer: values (1) and indices (2) are tensors
                for n2, w2, t in fields(v):
                    if n2 in (1, 2) and w2 == 2:
                        self.tensor(t, "sparse initializer")
            elif num == 1:
                nodes.append(v)
            elif num == 11 and depth == 0:
                self.input(v)
        for node in nodes:
            self.node(node, depth)

    def node(self, buf: memoryview, depth: int) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise EmotionError(f"ONNX model {self.path}: over {MAX_NODES} nodes")
        op, inputs = "", []
        for num, wire, v in fields(buf):
            if num == 1 and wire == 2:
                inputs.append(bytes(v).decode(errors="replace"))
            elif num == 4 and wire == 2:
                op = bytes(v).decode(errors="replace")
            elif num == 5 and wire == 2:
                self.attribute(v, depth)
        shape_input = {"Expand": 1, "ConstantOfShape": 0, "Tile": 1}.get(op)
        if shape_input is not None and len(inputs) > shape_input and inputs[shape_input] in self.constants:
            shape = self.constants[inputs[shape_input]]
            if any(d < 0 for d in shape) or math.prod(shape) > MAX_TENSOR_ELEMENTS:
                raise EmotionError(f"ONNX model {self.path}: an {op} asks for shape {shape}, over "
                                   f"{MAX_TENSOR_ELEMENTS} values")

    def attribute(self, buf: memoryview, depth: int) -> None:
        for num, wire, v in fields(buf):
            if wire != 2:
                continue
            if num in (5, 12):  # t, tensors
                self.tensor(v, "constant")
            elif num in (6, 11):  # g, graphs
                self.graph(v, depth + 1)

    def input(self, buf: memoryview) -> None:
        name, dims = "", []
        for num, wire, v in fields(buf):
            if num == 1 and wire == 2:
                name = bytes(v).decode(errors="replace")
            elif num == 2 and wire == 2:
                dims = _input_dims(v)
        fixed = [d for d in dims if d is not None]
        if any(d <= 0 or d > MAX_DIM for d in fixed):
            raise EmotionError(f"ONNX model {self.path}: input {name!r} has shape {dims}: each fixed dimension must "
                               f"be 1..{MAX_DIM}")
        if math.prod(d for d in dims[1:] if d is not None) > MAX_INPUT_ELEMENTS:
            raise EmotionError(f"ONNX model {self.path}: input {name!r} asks for {dims[1:]} values an image, over "
                               f"{MAX_INPUT_ELEMENTS}")


def _entry(buf: memoryview):
    """StringStringEntryProto: (``key``, bytes) and (``value``, bytes)."""
    for num, wire, v in fields(buf):
        if wire == 2 and num in (1, 2):
            yield ("key" if num == 1 else "value"), v


def _int64_values(buf: memoryview) -> list[int] | None:
    for num, wire, v in fields(buf):
        if num == 7:
            return _ints(wire, v)
        if num == 9 and wire == 2 and len(v) % 8 == 0:
            return [int.from_bytes(v[i:i + 8], "little", signed=True) for i in range(0, len(v), 8)]
    return None


def _input_dims(type_buf: memoryview) -> list[int | None]:
    """TypeProto.tensor_type.shape's dimensions: a number, or None for a named or unknown one."""
    dims: list[int | None] = []
    for num, wire, tensor in fields(type_buf):
        if num != 1 or wire != 2:
            continue
        for n2, w2, shape in fields(tensor):
            if n2 != 2 or w2 != 2:
                continue
            for n3, w3, dim in fields(shape):
                if n3 != 1 or w3 != 2:
                    continue
                value = None
                for n4, w4, v in fields(dim):
                    if n4 == 1 and w4 == 0:
                        value = v - (1 << 64) if v >= 1 << 63 else v
                dims.append(value)
    return dims


def json_depth(text: str) -> int:
    """How deep ``[`` and ``{`` nest in a JSON text, counted without parsing it (strings skipped)."""
    depth = deepest = 0
    in_string = escaped = False
    for c in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (c == "\\", c != '"')
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


def check_onnx_file(path: str | Path, limits: Limits | None = None) -> dict:
    """Refuse, in one line, an `.onnx` that would cost more than ``limits`` (or the constants above) to load or
    run; else a summary: ``{"bytes", "declared_bytes", "nodes"}``."""
    path, limits = Path(path), limits or Limits()
    size = path.stat().st_size
    if size > limits.max_total_bytes:
        raise EmotionError(f"{path} is {size / MIB:.0f} MB, over the limit of {limits.max_total_bytes / MIB:.0f} MB "
                           "(--max-model-mb)")
    check = _Check(path, limits)
    try:
        with open(path, "rb") as f:
            buf = memoryview(f.read())
        meta_bytes = 0
        graphs = []
        for num, wire, v in fields(buf):
            if num == 7 and wire == 2:
                graphs.append(v)
            elif num == 14 and wire == 2:
                entry = dict(_entry(v))
                meta_bytes += len(v)
                if meta_bytes > MAX_METADATA_BYTES:
                    raise EmotionError(f"ONNX model {path}: metadata over {MAX_METADATA_BYTES // 1024} KB")
                if bytes(entry.get("key", b"")) == b"emotion" and \
                        json_depth(bytes(entry.get("value", b"")).decode(errors="replace")) > MAX_JSON_DEPTH:
                    raise EmotionError(f"ONNX model {path}: its emotion metadata nests over {MAX_JSON_DEPTH} deep")
        if len(graphs) != 1:
            raise _Bad(f"{len(graphs)} graphs")
        check.graph(graphs[0], 0)
    except _Bad as e:
        raise EmotionError(f"not an ONNX model (a protobuf ModelProto) or a damaged one: {path} ({e})") from None
    return {"bytes": size, "declared_bytes": check.declared, "nodes": check.nodes}
