"""A guard in front of every model load: a `.keras` file is checked as a zip, with limits, before Keras reads it.

    report = check_model_file("runs/x/imageclassifier.keras")            # raises EmotionError, one line
    report = check_model_file(path, Limits.from_mb(2048))                 # emotion ... --max-model-mb 2048

`emotion.modelfile.load_keras_model(path, limits)`, the one loading path of the package, runs this check, then
Keras's load (safe_mode on), then `check_loaded(model, report)`.

Keras checks each archive member on its own (and only past gigabytes); a hostile file can still make it spend
minutes and gigabytes: a model name megabytes long, weights that unpack to gigabytes of zeros, padding members
that all get extracted to the temp folder. Here, before Keras parses anything:
- the file is a zip whose central directory (read from its end record before `zipfile` parses it) holds at most
  MAX_MEMBERS entries; no duplicate names, no encryption, only stored or deflated members;
- only the members a `.keras` has: metadata.json, config.json, model.weights.h5, our emotion.json, and assets/
  files; anything else (padding, another weights format, odd paths) is refused;
- each member's declared size fits its own limit (assets/ files: MAX_ASSETS_BYTES together, as Keras
  extracts them all to a temp folder) and all of them together fit ``max_total_bytes``
  (``--max-model-mb``, default MAX_MODEL_MB); a big member may not unpack to more than MAX_RATIO times its stored
  size (Keras stores its members, so a ratio like that is a bomb);
- config.json (at most MAX_CONFIG_BYTES) is read with a bounded read, its nesting depth is counted before it is
  parsed, and no string in it (the model name, a layer name, ...) is longer than MAX_STRING_CHARS;
- model.weights.h5 is opened with h5py, reading its metadata only (no data): no external links, external
  storage or virtual datasets (which would read other files), no variable-length data, at most MAX_H5_OBJECTS
  objects; what its datasets declare fits ``max_total_bytes``, and the member is no bigger than that data plus
  HDF5's own bookkeeping (no padding inside the h5);
- the weights fit the config: the model is built from config.json inside a `keras.StatelessScope` that leaves
  its variables uninitialized (shapes only, no memory; safe_mode on; the compile config left out), which gives
  the bytes its variables will take. Those must fit ``max_total_bytes`` (a config asking for a 40 GB Dense layer
  is refused before Keras allocates it), and the weights may declare at most WEIGHTS_FACTOR times that (+ 1 MB;
  a compiled model's optimizer state is saved with it) - no data the model does not read.

Lying headers: every size above is the central directory's. Python's `zipfile` (which Keras uses) never returns
more than that declared size for a member and fails on the CRC when the data does not match, and the reads done
here are bounded by the limits themselves.

A config that cannot be built is refused with Keras's own error (the real load would fail the same way, but
only after allocating the layers before the failing one). Where a layer cannot be built without values (it
makes a variable from an array; none of ours does), the load goes ahead under the other limits and
`check_loaded` compares the weights with the loaded model's variables afterwards.
"""

from __future__ import annotations

import io
import json
import re
import struct
import tempfile
import zipfile
from dataclasses import dataclass, replace
from itertools import accumulate
from pathlib import Path, PurePosixPath

import numpy as np

from emotion.errors import EmotionError

MIB = 1 << 20
MAX_MODEL_MB = 512  # all members unpacked, and the bytes the weights declare (--max-model-mb raises it)
MAX_MEMBERS = 64  # a .keras has 3 or 4 (5 with assets)
MAX_CENTRAL_DIRECTORY_BYTES = 1 * MIB
MAX_CONFIG_BYTES = 4 * MIB  # config.json; a 1000-layer functional model writes ~1.5 MB, ours ~40 KB
MAX_META_BYTES = 1 * MIB  # metadata.json and emotion.json; ours are < 2 KB
MAX_ASSETS_BYTES = 16 * MIB  # all assets/ files (Keras extracts them to a temp folder); ours have none
MAX_JSON_DEPTH = 100  # ours nest 14 deep; each nested model adds ~5
MAX_STRING_CHARS = 4096  # any string or key of config.json; ours are < 50 characters
MAX_RATIO = 100  # unpacked / stored, for members past RATIO_FLOOR_BYTES (Keras stores: ratio 1)
RATIO_FLOOR_BYTES = 1 * MIB
MAX_H5_OBJECTS = 50_000  # groups, datasets and links in the weights; ~200 for our models
H5_OVERHEAD_BYTES = 256 * 1024  # h5 bookkeeping allowed beyond the data: this much ...
H5_OVERHEAD_PER_OBJECT = 4096  # ... plus this per object (Keras's files: 700-800 bytes)
WEIGHTS_FACTOR = 10  # the weights may declare at most this times the model's variables (+ 1 MiB): the
# optimizer state of a compiled model is saved with it (Adam under mixed precision: 5x in all)

CONFIG, WEIGHTS, METADATA, META = "config.json", "model.weights.h5", "metadata.json", "emotion.json"
KNOWN = (METADATA, CONFIG, WEIGHTS, META)
ASSETS = "assets/"
FLAG = "--max-model-mb"


@dataclass(frozen=True)
class Limits:
    """What `check_model_file` allows. Only ``max_total_bytes`` has a flag (``--max-model-mb``); the others are
    far beyond any real model and are raised, if ever, here."""

    max_total_bytes: int = MAX_MODEL_MB * MIB
    max_members: int = MAX_MEMBERS
    max_config_bytes: int = MAX_CONFIG_BYTES
    max_meta_bytes: int = MAX_META_BYTES
    max_assets_bytes: int = MAX_ASSETS_BYTES
    max_json_depth: int = MAX_JSON_DEPTH
    max_string_chars: int = MAX_STRING_CHARS
    max_ratio: float = MAX_RATIO
    max_h5_objects: int = MAX_H5_OBJECTS

    @classmethod
    def from_mb(cls, max_model_mb: float | None = None) -> Limits:
        """Defaults, with ``max_total_bytes`` from a ``--max-model-mb`` value (None: the default)."""
        if max_model_mb is None:
            return cls()
        if not (isinstance(max_model_mb, int | float) and 0 < max_model_mb < 1 << 30):
            raise EmotionError(f"{FLAG} must be a positive number of megabytes, got {max_model_mb}")
        return cls(max_total_bytes=int(max_model_mb * MIB))

    def at_least(self, nbytes: int) -> Limits:
        """These limits, with the total raised to ``nbytes`` where it is lower (for a file we just wrote)."""
        return replace(self, max_total_bytes=max(self.max_total_bytes, int(nbytes)))


@dataclass(frozen=True)
class Report:
    """What the check found: members (name -> unpacked bytes), and the weights' declared data."""

    members: dict
    total_bytes: int
    weights_bytes: int  # what the h5's datasets declare (shape x item size, summed)
    datasets: int
    variable_bytes: int | None = None  # what the model built from config.json holds (None: not built)


def _mb(n: int) -> str:
    return f"{n / MIB:.1f} MB" if n < 1 << 40 else f"{n / (1 << 40):.1f} TiB"


def _total_hint(limits: Limits) -> str:
    return f"limit {limits.max_total_bytes / MIB:g} MB; {FLAG} raises it"


def _refuse(path, what: str) -> EmotionError:
    return EmotionError(f"refusing model file {path}: {what}")


# ----------------------------------------------------------------------------------------------- the zip
def _end_record(f, size: int) -> tuple[int, int]:
    """(entries, central directory bytes) from the zip's end record, read without parsing the directory."""
    tail_len = min(size, 22 + 65535)
    f.seek(size - tail_len)
    tail = f.read(tail_len)
    i = tail.rfind(b"PK\x05\x06")
    if i < 0 or len(tail) - i < 22:
        raise ValueError("no zip end record")
    entries, cd_bytes = struct.unpack("<H", tail[i + 10:i + 12])[0], struct.unpack("<I", tail[i + 12:i + 16])[0]
    return entries, cd_bytes


def _member_name_ok(name: str) -> bool:
    if name in KNOWN:
        return True
    if not name.startswith(ASSETS) or "\\" in name or "\x00" in name:
        return False
    parts = PurePosixPath(name).parts
    return len(name) <= 1024 and not any(p in ("..", ".", "") for p in parts[1:]) and parts[0] == "assets"


def check_model_file(path: str | Path, limits: Limits | None = None, build: bool = True) -> Report:
    """Check ``path`` as a `.keras` zip before Keras reads it (see the module's docstring); EmotionError if not.
    ``build=False``: the file checks only, without Keras (no shape-only build of the config)."""
    limits = limits or Limits()
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise EmotionError(f"cannot read model file {path}: {e.strerror or e}") from None
    if size > limits.max_total_bytes:
        raise _refuse(path, f"the file is {_mb(size)} ({_total_hint(limits)})")
    try:
        with open(path, "rb") as f:
            entries, cd_bytes = _end_record(f, size)
            if entries > limits.max_members:
                raise _refuse(path, f"{entries} archive members, a .keras has 3-5 (limit emotion.guard.MAX_MEMBERS"
                                    f" = {limits.max_members})")
            if cd_bytes > MAX_CENTRAL_DIRECTORY_BYTES:
                raise _refuse(path, f"its zip directory is {_mb(cd_bytes)} (limit emotion.guard."
                                    f"MAX_CENTRAL_DIRECTORY_BYTES = {MAX_CENTRAL_DIRECTORY_BYTES})")
            with zipfile.ZipFile(f) as z:
                report, config = _check_archive(path, z, f, limits)
    except EmotionError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError,
            RuntimeError, struct.error, KeyError, IndexError, OverflowError, MemoryError, RecursionError) as e:
        text = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise EmotionError(f"not a readable Keras model file (.keras zip): {path}: {text}") from None
    if not build:
        return report
    try:
        held = config_variable_bytes(config)
    except Exception as e:  # Keras cannot build this config: the real load would fail the same way, after
        text = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__  # allocating
        raise EmotionError(f"cannot load model {path}: {text}") from None
    if held is None:
        return report
    if held > limits.max_total_bytes:
        raise _refuse(path, f"its config builds variables of {_mb(held)} ({_total_hint(limits)})")
    if report.weights_bytes > WEIGHTS_FACTOR * held + MIB:
        raise _refuse(path, f"its weights declare {_mb(report.weights_bytes)} but the model's variables hold "
                            f"{_mb(held)} (limit: emotion.guard.WEIGHTS_FACTOR = {WEIGHTS_FACTOR} times, + 1 MB)")
    return replace(report, variable_bytes=held)


def _check_archive(path: Path, z: zipfile.ZipFile, raw, limits: Limits) -> tuple[Report, dict]:
    infos = z.infolist()
    if len(infos) > limits.max_members:
        raise _refuse(path, f"{len(infos)} archive members (limit emotion.guard.MAX_MEMBERS = {limits.max_members})")
    names = [i.filename for i in infos]
    seen = set()
    for name in names:
        if name in seen:
            raise _refuse(path, f"the member {name[:80]!r} appears twice")
        seen.add(name)
        if not _member_name_ok(name):
            raise _refuse(path, f"unexpected member {name[:80]!r} (a .keras holds only {', '.join(KNOWN)} "
                                "and assets/)")
    for need in (CONFIG, WEIGHTS):
        if need not in seen:
            raise _refuse(path, f"no {need} in the archive")
    total = 0
    for info in infos:
        if info.flag_bits & 0x1:
            raise _refuse(path, f"the member {info.filename!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _refuse(path, f"the member {info.filename!r} uses compression method {info.compress_type} "
                                "(a .keras is stored or deflated)")
        own = {CONFIG: ("emotion.guard.MAX_CONFIG_BYTES", limits.max_config_bytes),
               METADATA: ("emotion.guard.MAX_META_BYTES", limits.max_meta_bytes),
               META: ("emotion.guard.MAX_META_BYTES", limits.max_meta_bytes)}.get(info.filename)
        if own and info.file_size > own[1]:
            raise _refuse(path, f"{info.filename} unpacks to {_mb(info.file_size)} (limit {own[0]} = {own[1]})")
        if info.file_size > limits.max_total_bytes:
            raise _refuse(path, f"{info.filename[:80]} unpacks to {_mb(info.file_size)} ({_total_hint(limits)})")
        if info.file_size > RATIO_FLOOR_BYTES and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise _refuse(path, f"{info.filename[:80]} unpacks to {_mb(info.file_size)} from "
                                f"{_mb(info.compress_size)} stored, more than {limits.max_ratio:g} times: a "
                                f"decompression bomb (limit emotion.guard.MAX_RATIO)")
        total += info.file_size
    assets = sum(i.file_size for i in infos if i.filename.startswith(ASSETS))
    if assets > limits.max_assets_bytes:
        raise _refuse(path, f"its assets/ files unpack to {_mb(assets)} (limit emotion.guard.MAX_ASSETS_BYTES = "
                            f"{limits.max_assets_bytes}; an image model has none)")
    if total > limits.max_total_bytes:
        raise _refuse(path, f"its members unpack to {_mb(total)} in all ({_total_hint(limits)})")
    config = check_config(_bounded_read(z, CONFIG, limits.max_config_bytes), limits, path)
    for small in (METADATA, META):
        if small in seen:
            _bounded_read(z, small, limits.max_meta_bytes)  # size and CRC; read_meta parses emotion.json
    weights_bytes, datasets = _check_weights(path, z, raw, limits)
    return Report({i.filename: i.file_size for i in infos}, total, weights_bytes, datasets), config


def _bounded_read(z: zipfile.ZipFile, name: str, limit: int) -> bytes:
    with z.open(name) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise EmotionError(f"{name} holds more than {limit} bytes")
    return data


# ----------------------------------------------------------------------------------------------- config.json
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def json_depth(text: str) -> int:
    """How deep ``text``'s arrays and objects nest, counted without parsing it (strings are skipped)."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(_STEP[c] for c in brackets), default=0)


def check_config(data: bytes, limits: Limits | None = None, path: str | Path = "config.json"):
    """config.json's bytes: UTF-8 JSON, an object, nested at most ``max_json_depth`` deep (counted before it is
    parsed), no string or key longer than ``max_string_chars``. Returns the parsed object."""
    limits = limits or Limits()
    if len(data) > limits.max_config_bytes:
        raise _refuse(path, f"config.json is {_mb(len(data))} (limit emotion.guard.MAX_CONFIG_BYTES = "
                            f"{limits.max_config_bytes})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _refuse(path, "config.json is not UTF-8 text") from None
    depth = json_depth(text)
    if depth > limits.max_json_depth:
        raise _refuse(path, f"config.json nests {depth} deep (limit emotion.guard.MAX_JSON_DEPTH = "
                            f"{limits.max_json_depth})")
    try:
        config = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise _refuse(path, f"config.json is not valid JSON ({str(e).splitlines()[0][:80]})") from None
    if not isinstance(config, dict):
        raise _refuse(path, "config.json does not hold an object")
    stack = [config]
    while stack:
        x = stack.pop()
        items = list(x.items()) if isinstance(x, dict) else enumerate(x) if isinstance(x, list) else ()
        for k, v in items:
            for s in (k, v):
                if isinstance(s, str) and len(s) > limits.max_string_chars:
                    raise _refuse(path, f"config.json holds a string of {len(s)} characters ({s[:30]!r}...; limit "
                                        f"emotion.guard.MAX_STRING_CHARS = {limits.max_string_chars})")
            if isinstance(v, dict | list):
                stack.append(v)
    return config


# ----------------------------------------------------------------------------------------------- model.weights.h5
class _Window(io.RawIOBase):
    """A read-only file over ``size`` bytes of ``raw`` from ``start`` (a stored zip member, read in place)."""

    def __init__(self, raw, start: int, size: int):
        super().__init__()
        self.raw, self.start, self.size, self.pos = raw, start, size, 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self.pos

    def seek(self, offset, whence=io.SEEK_SET):
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer):
        n = max(0, min(len(buffer), self.size - self.pos))
        if not n:
            return 0
        self.raw.seek(self.start + self.pos)
        data = self.raw.read(n)
        buffer[:len(data)] = data
        self.pos += len(data)
        return len(data)


def _weights_file(z: zipfile.ZipFile, raw, info: zipfile.ZipInfo):
    """A seekable file over the weights member: the stored bytes in place, else a bounded copy (the member's
    declared size was checked against the limits before this)."""
    if info.compress_type == zipfile.ZIP_STORED:
        raw.seek(info.header_offset)
        local = raw.read(30)
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            raise EmotionError(f"{WEIGHTS} has a damaged local header")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        return _Window(raw, info.header_offset + 30 + name_len + extra_len, info.compress_size)

    copy = tempfile.TemporaryFile()
    left = info.file_size
    with z.open(info) as src:
        while left > 0:
            chunk = src.read(min(left, MIB))
            if not chunk:
                break
            copy.write(chunk)
            left -= len(chunk)
    copy.seek(0)
    return copy


def _check_weights(path: Path, z: zipfile.ZipFile, raw, limits: Limits) -> tuple[int, int]:
    import h5py  # here: h5py is optional or slow to import
    info = z.getinfo(WEIGHTS)
    problems: list[str] = []
    counts = {"objects": 0, "datasets": 0, "bytes": 0}

    def on_link(name, link):
        counts["objects"] += 1
        if isinstance(link, h5py.ExternalLink):
            problems.append(f"an external link {name[:60]!r} (it would read another file)")
        elif counts["objects"] > limits.max_h5_objects:
            problems.append(f"more than {limits.max_h5_objects} objects (limit emotion.guard.MAX_H5_OBJECTS)")
        return True if problems else None

    def on_object(name, obj):
        if isinstance(obj, h5py.Dataset):
            counts["datasets"] += 1
            if obj.external:
                problems.append(f"the dataset {name[:60]!r} keeps its data in another file")
            elif obj.is_virtual:
                problems.append(f"the dataset {name[:60]!r} is virtual (it maps other files)")
            elif obj.dtype.kind not in "biufc" or h5py.check_vlen_dtype(obj.dtype) is not None:
                problems.append(f"the dataset {name[:60]!r} holds {obj.dtype} data, not numbers")
            else:
                counts["bytes"] += int(np.prod(obj.shape or (), dtype=object)) * obj.dtype.itemsize
                if counts["bytes"] > limits.max_total_bytes:
                    problems.append(f"datasets declaring more than {_mb(limits.max_total_bytes)} of data "
                                    f"({_total_hint(limits)})")
        return True if problems else None

    with _weights_file(z, raw, info) as f:
        try:
            with h5py.File(f, "r") as h5:
                h5.visititems_links(on_link)
                if not problems:
                    h5.visititems(on_object)
        except EmotionError:
            raise
        except Exception as e:  # h5py raises OSError, KeyError, ValueError, TypeError on damaged files
            if problems:
                raise _refuse(path, f"{WEIGHTS} holds {problems[0]}") from None
            text = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
            raise _refuse(path, f"{WEIGHTS} is not a readable HDF5 file ({text})") from None
    if problems:
        raise _refuse(path, f"{WEIGHTS} holds {problems[0]}")
    allowed = counts["bytes"] + H5_OVERHEAD_BYTES + H5_OVERHEAD_PER_OBJECT * counts["objects"]
    if info.file_size > allowed:
        raise _refuse(path, f"{WEIGHTS} is {_mb(info.file_size)} but its datasets declare "
                            f"{_mb(counts['bytes'])}: padding (allowed: the data plus emotion.guard."
                            f"H5_OVERHEAD_BYTES and H5_OVERHEAD_PER_OBJECT per object)")
    return counts["bytes"], counts["datasets"]


# ----------------------------------------------------------------------------------------------- the model
def config_variable_bytes(config: dict) -> int | None:
    """Bytes of the variables the model of ``config`` (config.json, parsed) creates, found by building it in a
    `keras.StatelessScope` that leaves them uninitialized: shapes, no memory. None where a layer cannot be built
    so (it makes a variable from values); Keras's own error where the config cannot be built at all."""
    import keras  # here, so that the framework loads only when needed

    try:
        from keras.src.backend.common import (
            global_state,  # here, so that the framework loads only when needed
        )  # here, so that the framework loads only when needed
    except ImportError:  # a Keras without it: no shape-only build
        return None
    pending = list(global_state.get_global_attribute("uninitialized_variables", [], set_to_default=True))
    try:
        with keras.StatelessScope(initialize_variables=False):
            model = keras.saving.deserialize_keras_object(
                {k: v for k, v in config.items() if k != "compile_config"}, safe_mode=True)
            return variable_bytes(model) if isinstance(model, keras.Model) else None
    except ValueError as e:
        if "stateless scope" in str(e):  # a variable made from values: not countable this way
            return None
        raise
    finally:  # ours stay uninitialized for good: a later scope must not allocate them
        global_state.set_global_attribute("uninitialized_variables", pending)


def variable_bytes(model) -> int:
    """Bytes of the model's variables, and its optimizer's where it has one."""
    variables = list(model.weights)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        variables += list(getattr(optimizer, "variables", []) or [])
    return sum(int(np.prod(v.shape, dtype=object)) * np.dtype(getattr(v.dtype, "name", v.dtype)).itemsize
               for v in variables)


def check_loaded(model, report: Report, path: str | Path = "model") -> None:
    """The weights file must not declare much more data than the loaded model's variables hold (checked before
    the load already, where the config could be built without values)."""
    used = variable_bytes(model)
    if report.weights_bytes > WEIGHTS_FACTOR * used + MIB:
        raise _refuse(path, f"its weights declare {_mb(report.weights_bytes)} but the model's variables hold "
                            f"{_mb(used)} (limit: emotion.guard.WEIGHTS_FACTOR = {WEIGHTS_FACTOR} times, + 1 MB)")
