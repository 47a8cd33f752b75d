"""The decoded-image cache: one memory-mapped ``.npy`` and a checked ``.json`` per decoded folder, keyed by the
files' paths, sizes and modification times and the decoding settings, so no epoch and no later run decodes a file
again. Entries are written under temporary names and renamed into place; a damaged entry is decoded anew.

    folder = load_folder("../shared/data/web-happy-sad", ["happy", "sad"], 48, "grayscale")
    cache_entries(cache_dir())                             # what the cache holds
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path

import numpy as np

from emotion.data.decode import Folder, decode_files
from emotion.data.folders import list_files
from emotion.faces.detect import make_detector
from emotion.images import MAX_IMAGE_MB, MB

_CACHE_VERSION = 3  # 3: photos turned upright by their EXIF Orientation
# One entry per decoded folder: emotion-<key>.npy (the images) and emotion-<key>.json (labels, paths, ..., and
# what the entry holds: shape, dtype and a blake2b checksum over the images and the rest of the record).
CACHE_FORMAT = "emotion decoded images"
_ENTRY = re.compile(r"^emotion-[0-9a-f]{20}\.(npy|json)$")
_TEMP = re.compile(r"^emotion-[0-9a-f]{20}\.(\d+)\.tmp\.(npy|json|raw)$")
_CHUNK = 4 * MB  # bytes read at a time to write or check an entry
_OLD_ENTRY = re.compile(r"^[0-9a-f]{20}\.(npy|json)$")  # version 1 (no checksum): never read, removed by clear
_OLD_TEMP = re.compile(r"^[0-9a-f]{20}\.(\d+)\.tmp\.(npy|json)$")
STALE_TEMP_SECONDS = 24 * 3600


def cache_dir(setting: str | None = None) -> Path | None:
    """The decoded-image cache folder: ``setting`` (--cache), else $EMOTION_CACHE, else $XDG_CACHE_HOME/emotion,
    else ~/.cache/emotion; None for "off"."""
    value = setting or os.environ.get("EMOTION_CACHE")
    if value == "off":
        return None
    if value:
        return Path(value).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):  # the XDG spec: a relative value is ignored
        return Path(xdg) / "emotion"
    return Path.home() / ".cache" / "emotion"


def _checksum(images: np.ndarray, record: dict) -> str:
    return _hasher(record, [np.ascontiguousarray(images).data]).hexdigest()


def _hasher(record: dict, chunks):
    """blake2b over the record (JSON) and then the image bytes, given in ``chunks``."""
    h = hashlib.blake2b(digest_size=20)
    h.update(json.dumps(record, sort_keys=True).encode())
    for chunk in chunks:
        h.update(chunk)
    return h


def _read_chunks(f, limit: int | None = None):
    """``f``'s bytes from where it stands, ``_CHUNK`` at a time (at most ``limit`` bytes)."""
    left = limit
    while left is None or left > 0:
        chunk = f.read(_CHUNK if left is None else min(_CHUNK, left))
        if not chunk:
            return
        if left is not None:
            left -= len(chunk)
        yield chunk


def _record(folder: Folder) -> dict:
    return {"labels": folder.labels.tolist(), "paths": folder.paths, "digests": folder.digests,
            "invalid": [list(x) for x in folder.invalid], "no_face": folder.no_face, "skipped": folder.skipped}


def _read_entry(where: Path, key: str, class_names, image_size: int, channels: int) -> Folder | None:
    """The cached folder under ``key``, its images memory-mapped, or None where there is none or it is not exactly
    what it says it is. The check reads the file once, sequentially, a chunk at a time (through the page cache,
    never all in memory); batches then read their rows from the mapping."""
    meta_path, npy_path = where / f"emotion-{key}.json", where / f"emotion-{key}.npy"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        record = {k: meta[k] for k in ("labels", "paths", "digests", "invalid", "no_face", "skipped")}
        n = len(record["labels"])
        shape = [n, image_size, image_size, channels]
        if (meta.get("format"), meta.get("version"), meta.get("key")) != (CACHE_FORMAT, _CACHE_VERSION, key) \
                or meta.get("shape") != shape or meta.get("dtype") != "uint8" \
                or not n == len(record["paths"]) == len(record["digests"]) \
                or not all(isinstance(v, int) and 0 <= v < len(class_names) for v in record["labels"]):
            return None
        size = n * image_size * image_size * channels
        with open(npy_path, "rb") as f:
            header = np.lib.format.read_array_header_1_0(f) if np.lib.format.read_magic(f) == (1, 0) else None
            if header is None or list(header[0]) != shape or header[1] or header[2] != np.dtype(np.uint8) \
                    or os.fstat(f.fileno()).st_size != f.tell() + size:
                return None
            if _hasher(record, _read_chunks(f)).hexdigest() != meta.get("checksum"):
                return None
        images = np.load(npy_path, mmap_mode="r", allow_pickle=False) if n else np.zeros(shape, np.uint8)
        return Folder(class_names, images, np.array(record["labels"], dtype=np.int64), record["paths"],
                      record["digests"], [tuple(x) for x in record["invalid"]], record["no_face"], record["skipped"])
    except Exception:  # noqa: BLE001 - 0-byte, truncated, not JSON, not .npy, ...: rebuilt by the caller
        return None


def _write_entry(where: Path, key: str, folder: Folder, raw: Path | None = None, row_shape: tuple = ()) -> Folder:
    """Write an entry under temporary names holding our pid, then rename them into place (images first: a reader
    that meets a new record with old images finds the checksum wrong and rebuilds). The images come from
    ``folder.images`` or, where ``raw`` is given, from that file of raw rows of ``row_shape`` (`decode_files`'s
    ``sink``), a chunk at a time. Returns the folder with its images memory-mapped from the entry."""
    record = _record(folder)
    shape = (len(folder.labels), *(row_shape if raw is not None else folder.images.shape[1:]))
    tmp_npy = where / f"emotion-{key}.{os.getpid()}.tmp.npy"
    tmp_json = where / f"emotion-{key}.{os.getpid()}.tmp.json"
    try:
        with open(tmp_npy, "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
                                                     "fortran_order": False, "shape": shape})
            h = _hasher(record, [])
            with open(raw if raw is not None else os.devnull, "rb") as src:
                chunks = _read_chunks(src) if raw is not None else [np.ascontiguousarray(folder.images).data]
                for chunk in chunks:
                    f.write(chunk)
                    h.update(chunk)
        meta = {"format": CACHE_FORMAT, "version": _CACHE_VERSION, "key": key, "shape": list(shape),
                "dtype": "uint8", "checksum": h.hexdigest(), **record}
        tmp_json.write_text(json.dumps(meta))
        images = np.load(tmp_npy, mmap_mode="r", allow_pickle=False) if shape[0] else np.zeros(shape, np.uint8)
        os.replace(tmp_npy, where / f"emotion-{key}.npy")  # the mapping stays valid: same file, new name
        os.replace(tmp_json, where / f"emotion-{key}.json")
        folder.images = images
        return folder
    finally:
        for t in (tmp_npy, tmp_json):
            try:
                t.unlink()
            except OSError:
                pass


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process (or we cannot tell): leave its file alone
    return True


def stale_temporaries(where: Path) -> list[Path]:
    """Temporary files of cache writers that are gone (their pid is not running) or older than a day."""
    out = []
    try:
        entries = list(os.scandir(where))
    except OSError:
        return out
    now = time.time()
    for e in entries:
        m = _TEMP.match(e.name) or _OLD_TEMP.match(e.name)
        if not m or not e.is_file(follow_symlinks=False):
            continue
        try:
            old = now - e.stat(follow_symlinks=False).st_mtime > STALE_TEMP_SECONDS
        except OSError:
            continue
        if old or not _pid_alive(int(m.group(1))):
            out.append(Path(e.path))
    return out


def remove_stale_temporaries(where: Path) -> int:
    removed = 0
    for p in stale_temporaries(where):
        try:
            p.unlink()
            removed += 1
        except OSError:
            pass
    return removed


def cache_entries(where: Path) -> dict:
    """What of ``where`` is ours: {"entries": [paths], "old": [paths of version-1 entries], "stale": [temporary
    files of dead writers], "bytes": their total size}. Nothing else in the folder is ever listed."""
    out = {"entries": [], "old": [], "stale": stale_temporaries(where), "bytes": 0}
    try:
        entries = sorted(os.scandir(where), key=lambda e: e.name)
    except OSError:
        return out
    names = {e.name for e in entries}
    for e in entries:
        if not e.is_file(follow_symlinks=False):
            continue
        if _ENTRY.match(e.name):
            out["entries"].append(Path(e.path))
        elif _OLD_ENTRY.match(e.name) and _old_entry_of_ours(where, e.name[:20], names):
            out["old"].append(Path(e.path))
    for p in out["entries"] + out["old"] + out["stale"]:
        try:
            out["bytes"] += p.lstat().st_size
        except OSError:
            pass
    return out


def clear_cache(where: Path) -> tuple[int, int]:
    """Delete our entries (current and old format) and the temporary files of dead writers from ``where``; nothing
    else, not the folder. Returns (files removed, bytes freed)."""
    found = cache_entries(where)
    return remove_files(found["entries"] + found["old"] + found["stale"])


def remove_files(paths) -> tuple[int, int]:
    """Unlink each path (one that cannot be removed is passed over). Returns (files removed, bytes freed)."""
    files = size = 0
    for p in paths:
        try:
            n = p.lstat().st_size
            p.unlink()
            files, size = files + 1, size + n
        except OSError:
            pass
    return files, size


def _old_entry_of_ours(where: Path, key: str, names: set) -> bool:
    """A version-1 entry: ``<key>.json`` holding labels, paths and digests (and its ``<key>.npy``)."""
    if f"{key}.json" not in names:
        return False
    try:
        meta = json.loads((where / f"{key}.json").read_text())
        return isinstance(meta, dict) and {"labels", "paths", "digests"} <= set(meta)
    except Exception:  # noqa: BLE001
        return False


def load_folder(base: str | Path, class_names, image_size: int, color: str = "rgb", cache: str | None = None,
                faces: str = "none", no_face: str = "keep", detector: str | None = None,
                max_image_mb: float = MAX_IMAGE_MB, progress: bool | None = None) -> Folder:
    """Decode every file of ``base/<class>/`` once; later calls with unchanged files read the disk cache.
    ``faces="crop"``: each image is its largest face (`emotion.faces.detect`), see `decode_files`; ``detector``:
    a detector's name (None: the default) or a detector (`Predictor.detector`, with its minimum face score).
    A cache entry is used only when it checks out (shape, dtype, labels, checksum); otherwise it is rebuilt.
    ``progress``: a progress line on stderr while decoding (None: where stderr is a terminal)."""
    base = Path(base)
    files = list_files(base, class_names)
    if faces == "crop":
        if not hasattr(detector, "detect"):  # a name (None: the default), or a detector made by the caller
            detector = make_detector(detector)
    else:
        detector = None
    channels = 1 if color == "grayscale" else 3
    key = hashlib.sha1(json.dumps([
        _CACHE_VERSION, image_size, color, class_names, max_image_mb, os.path.realpath(base),
        [(os.path.realpath(p), label, *_stat(p)) for p, label in files],
        *([detector.settings(), no_face] if detector else []),
    ]).encode()).hexdigest()[:20]
    folder = cache_dir(cache)
    if folder is not None:
        remove_stale_temporaries(folder)
        cached = _read_entry(folder, key, class_names, image_size, channels)
        if cached is not None:
            return cached
    decode = dict(detector=detector, no_face=no_face, max_image_mb=max_image_mb, inside=base, progress=progress,
                  label=f"decoding {base}")
    if folder is not None:  # decoded straight to disk, a row at a time, then memory-mapped
        raw = folder / f"emotion-{key}.{os.getpid()}.tmp.raw"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with open(raw, "wb") as sink:
                result = decode_files(files, class_names, image_size, color, sink=sink, **decode)
            return _write_entry(folder, key, result, raw, (image_size, image_size, channels))
        except OSError:
            pass  # a read-only (or full) cache only costs speed: decoded again, in memory
        finally:
            try:
                raw.unlink()
            except OSError:
                pass
    return decode_files(files, class_names, image_size, color, **decode)


def _stat(p: Path):
    try:
        s = p.stat()
        return s.st_size, s.st_mtime_ns
    except OSError:
        return -1, -1
