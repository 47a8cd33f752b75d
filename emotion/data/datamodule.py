"""The data module: scan a folder of class subfolders, check every file by content, split at the file level,
and serve batches through `keras.utils.PyDataset`, the same code under every backend.

    dm = EmotionDataModule(DataConfig(data="../shared/data/web-happy-sad"), seed=0)
    dm.setup()
    dm.class_names             # ['happy', 'sad']   (sorted folder names: happy=0, sad=1)
    len(dm.train), len(dm.val), len(dm.test)
    model.fit(dm.train_dataloader(), validation_data=dm.val_dataloader())

Images are decoded with Pillow, converted to RGB (or grayscale), resized to a square once, and kept as uint8
arrays in a disk cache keyed by the files' paths, sizes and modification times, so no epoch and no later run
decodes a file again. The cache's ``.npy`` is memory-mapped: batches read their rows from it, so the process holds
a batch of pixels, not the data set (with ``--cache off`` the images stay in memory). `load_image` is the one preprocessing function: training, `emotion test`,
`emotion predict` and the benchmarks all call it, so serving cannot disagree with training. Nothing here ever
deletes, moves or writes a file inside the data folder.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import mmap
import os
import re
import shutil
import stat
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

from emotion.config import DataConfig
from emotion.data.votes import read_votes, soft_targets
from emotion.errors import EmotionError

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is invalid, never silently half-grey
# Pillow's own decompression-bomb warning is replaced by the explicit pixel check in `_open` (a warnings filter
# set per call is not thread-safe, and images are decoded in threads).
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
# A damaged EXIF block costs the photo its orientation only (`_upright`), not a line on the user's terminal.
warnings.filterwarnings("ignore", message="Corrupt EXIF data", category=UserWarning, module="PIL")
SUPPORTED_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF", "MPO")
SPLITS = ("train", "val", "test")
MAX_IMAGE_MB = 50  # default size limit of one image file (--max-image-mb)
# Pixels an image may decode to (after a JPEG's reduced-scale decoding, so a 48 MP JPEG passes): Pillow keeps 4
# bytes a pixel, so this bounds one decode near 120 MB. Measured: `emotion predict` of a 39.9 MP PNG under
# TensorFlow peaked at 1.00 GB, of a 48 MP JPEG at 0.75 GB; an 88 MP PNG (Pillow's own limit) at 1.38 GB.
MAX_DECODE_PIXELS = 30_000_000
MB = 1_000_000
ORIENTATION = 0x0112  # the EXIF tag
_CACHE_VERSION = 3  # 3: photos turned upright by their EXIF Orientation


# ----------------------------------------------------------------------------------------------- images
def load_image(source, image_size: int, color: str = "rgb", max_image_mb: float = MAX_IMAGE_MB) -> np.ndarray:
    """Decode one image (path or bytes) to a ``(image_size, image_size, 3 or 1)`` uint8 array.

    Any Pillow-decodable JPEG/PNG/BMP/GIF/WebP/TIFF: grayscale, palette, RGBA (composited on white),
    CMYK, 16-bit (scaled to 8-bit). GIFs give their first frame. Turned upright as its EXIF Orientation says.
    Resized with bilinear filtering (antialiased when shrinking) to a square, aspect ratio not kept, as the
    seed's `image_dataset_from_directory` did.
    A path is read with `read_image_file` (a regular file of at most ``max_image_mb``); an image of more than
    ``PIL.Image.MAX_IMAGE_PIXELS`` pixels is refused from its header, before it is decoded.
    Raises ``ValueError`` with a short reason for anything else.
    """
    img = _open(source, color, (image_size, image_size), max_image_mb)
    img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return _array(img)


def decode_image(source, color: str = "rgb", max_side: int = 1280, max_image_mb: float = MAX_IMAGE_MB) -> np.ndarray:
    """Decode one image (path or bytes) at its own aspect ratio, as (H, W, 3 or 1) uint8, its longer side
    shrunk to at most ``max_side`` (enough to find and crop faces; bounds the memory a huge photo takes).
    The same decoding rules and errors as `load_image`."""
    img = _open(source, color, (max_side, max_side), max_image_mb)
    if max(img.size) > max_side:
        scale = max_side / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.Resampling.BILINEAR)
    return _array(img)


def _array(img: Image.Image) -> np.ndarray:
    arr = np.asarray(img, dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def _open(source, color: str, draft: tuple[int, int], max_image_mb: float = MAX_IMAGE_MB) -> Image.Image:
    """Decode to a Pillow image in RGB or L; big JPEGs are decoded at a reduced DCT scale no smaller than
    ``draft``. Every failure is a ``ValueError`` with a short reason."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        data = read_image_file(source, max_image_mb)
    if not data:
        raise ValueError("empty file")
    try:
        img = Image.open(io.BytesIO(data))  # reads the header only
        fmt = img.format
        if fmt not in SUPPORTED_FORMATS:
            raise ValueError(f"unsupported image type {fmt}")
        if fmt in ("JPEG", "MPO") and img.mode in ("RGB", "L"):
            img.draft(img.mode, draft)  # a big JPEG decodes at 1/2, 1/4 or 1/8 scale: the size it will have
        limit = min(Image.MAX_IMAGE_PIXELS or MAX_DECODE_PIXELS, MAX_DECODE_PIXELS)
        if img.width * img.height > limit:
            raise ValueError(f"image too large: {img.width}x{img.height} pixels (the limit is {limit})")
        img.load()
        return _to_mode(_upright(img), "L" if color == "grayscale" else "RGB")
    except ValueError as e:
        raise ValueError(_reason(e)) from None
    except Image.DecompressionBombError as e:  # Pillow's own guard, at twice the limit, in Image.open
        found = re.search(r"\((\d+) pixels\)", str(e))
        raise ValueError(f"image too large: {found.group(1) if found else 'too many'} pixels "
                         f"(the limit is {Image.MAX_IMAGE_PIXELS})") from None
    except Exception as e:  # Pillow raises many types for broken files
        raise ValueError(_reason(e)) from None


def _upright(img: Image.Image) -> Image.Image:
    """Turned as its EXIF Orientation tag says. Phones store a portrait photo sideways and tag it; every viewer
    shows it turned, and a face detector needs it upright. A damaged EXIF block is ignored."""
    try:
        if img.getexif().get(ORIENTATION, 1) in (2, 3, 4, 5, 6, 7, 8):  # else no copy of a big photo
            return ImageOps.exif_transpose(img)
    except Exception:
        pass
    return img


def _reason(e: Exception) -> str:
    text = str(e).strip()
    if "cannot identify" in text:
        return "not an image"
    return text.splitlines()[0][:80] if text else f"not a valid image ({type(e).__name__})"


def read_image_file(path, max_image_mb: float = MAX_IMAGE_MB, inside: str | Path | None = None) -> bytes:
    """The bytes of one image file, read with care: only a regular file, of at most ``max_image_mb`` MB
    (10^6 bytes). A symlink is followed only to a regular file (and with ``inside``, only to one under that
    folder); a FIFO, device, socket or folder is reported and never opened, a symlink loop is reported.
    Raises ``ValueError`` with a short reason."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ValueError("symlink loop") from None
        if os.path.islink(path):
            raise ValueError("broken symlink") from None
        raise ValueError(e.strerror or type(e).__name__) from None
    if inside is not None and not _within(os.path.realpath(path), os.path.realpath(inside)):
        raise ValueError("outside the data folder (reached through a symlink)")
    if stat.S_ISDIR(st.st_mode) and os.path.islink(path):
        raise ValueError("a symlinked folder (not followed)")
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"not a regular file ({_kind(st.st_mode)})")
    limit = int(max_image_mb * MB)
    too_big = f"file too large ({{:.1f}} MB; the limit is {max_image_mb:g} MB, --max-image-mb)"
    if st.st_size > limit:
        raise ValueError(too_big.format(st.st_size / MB))
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
                     | getattr(os, "O_BINARY", 0))
    except OSError as e:
        raise ValueError(e.strerror or type(e).__name__) from None
    try:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise ValueError("file replaced while being read")
        chunks, left = [], limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as e:
        raise ValueError(e.strerror or type(e).__name__) from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        raise ValueError(too_big.format(len(data) / MB))
    return data


def _within(path: str, folder: str) -> bool:
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:  # other drive
        return False


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "a special file"


def _to_mode(img: Image.Image, mode: str) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img)  # 16 or 32 bits a pixel; scaled to 8 bits a band of rows at a time (bounded memory)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        out = np.empty(arr.shape, np.uint8)
        for top in range(0, arr.shape[0], 256):
            band = arr[top:top + 256].astype(np.float64)
            out[top:top + 256] = np.clip(band * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8)
        del arr
        img = Image.fromarray(out, "L")
    elif img.mode == "F":
        img = Image.fromarray(np.clip(np.asarray(img), 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return img.convert(mode)


# ----------------------------------------------------------------------------------------------- folders
def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def subdirs(path: Path) -> list[str]:
    """The sorted names of ``path``'s visible subfolders (its class folders)."""
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not _is_hidden(p.name))


_subdirs = subdirs


def _files_under(folder: Path) -> list[Path]:
    """Every non-hidden entry below ``folder`` but its folders. A symlinked folder is not followed (no loops, no
    reach out of the data folder): it is listed, and so reported as not a regular file."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d) and d not in links)
        out += [Path(dirpath) / f for f in sorted(filenames + links) if not _is_hidden(f)]
    return out


def is_presplit(root: Path) -> bool:
    """True where ``root`` holds ``train/``, ``val/`` and ``test/`` (used as given, not re-split)."""
    return all((root / s).is_dir() for s in SPLITS)


def class_folders(root: str | Path, classes: list[str] | None = None) -> list[str]:
    """Sorted class names under ``root`` (or ``root/train`` when pre-split), checked against ``classes``."""
    root = Path(root)
    if not root.exists():
        raise EmotionError(f"data folder not found: {root}")
    if not root.is_dir():
        raise EmotionError(f"data path is not a folder: {root}")
    base = root / "train" if is_presplit(root) else root
    present = _subdirs(base)
    if classes:
        missing = [c for c in classes if c not in present]
        if missing:
            raise EmotionError(f"class folder(s) {missing} not in {base} (it has: {', '.join(present) or 'none'})")
        names = sorted(dict.fromkeys(classes))
    else:
        names = present
    if len(names) < 2:
        found = f"found {len(names)}" + (f" ({names[0]})" if names else "")
        raise EmotionError(f"need at least two class folders in {base}, {found}")
    return names


def list_files(base: Path, class_names: list[str]) -> list[tuple[Path, int]]:
    """Every non-hidden file under each class folder, recursively, with its class index."""
    return [(p, label) for label, c in enumerate(class_names) for p in _files_under(base / c)]


# ----------------------------------------------------------------------------------------------- decoding
class Rows:
    """Rows ``index`` of a memory-mapped image array, read only when asked for: a split of a cached folder holds
    no pixels in memory. Indexing gives numpy arrays; `np.asarray` (or `astype`) reads every row."""

    def __init__(self, base, index):
        self.base, self.index = base, np.asarray(index, dtype=np.int64)

    @property
    def shape(self) -> tuple:
        return (len(self.index), *self.base.shape[1:])

    @property
    def dtype(self):
        return self.base.dtype

    ndim = property(lambda self: self.base.ndim)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key):
        return np.asarray(self.base[self.index[key]])

    def __array__(self, dtype=None, copy=None):
        rows = np.asarray(self.base[self.index])
        return rows if dtype is None else rows.astype(dtype)

    def astype(self, dtype):
        return np.asarray(self, dtype=dtype)


def release_pages(images) -> None:
    """Drop the pages read from a memory-mapped ``images`` from this process's resident set (``MADV_DONTNEED``;
    they stay in the kernel's page cache, so reading them again costs a minor fault, not a disk read). After each
    batch, resident memory holds that batch, whatever the size of the data set. In-memory arrays: nothing."""
    base = images.base if isinstance(images, Rows) else images
    mapping = getattr(base, "_mmap", None)
    if mapping is not None and hasattr(mapping, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        try:
            mapping.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):
            pass


def _rows(images, idx):
    """``images[idx]``, lazily where ``images`` is memory-mapped (or already lazy)."""
    if isinstance(images, Rows):
        return Rows(images.base, images.index[idx])
    if isinstance(images, np.memmap):
        return Rows(images, idx)
    return images[idx]


@dataclass
class Folder:
    """The decoded, valid images of one folder of class subfolders, and the files that were not valid."""

    class_names: list[str]
    images: np.ndarray  # (N, S, S, C) uint8: in memory, memory-mapped (the cache's .npy) or `Rows` of one
    labels: np.ndarray  # (N,) int
    paths: list[str]
    digests: list[str]  # sha1 of each file's bytes: identical files are kept in one split
    invalid: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    # with faces="crop": the images kept whole because no face was found in them, and those left out for it
    no_face: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def subset(self, idx) -> Folder:
        idx = np.asarray(idx, dtype=int)
        paths = [self.paths[i] for i in idx]
        whole = set(self.no_face)
        return Folder(
            self.class_names, _rows(self.images, idx), self.labels[idx], paths, [self.digests[i] for i in idx],
            no_face=[p for p in paths if p in whole],
        )

    def concat(self, other: Folder) -> Folder:
        return Folder(self.class_names, np.concatenate([self.images, other.images]),
                      np.concatenate([self.labels, other.labels]), self.paths + other.paths,
                      self.digests + other.digests, self.invalid + other.invalid,
                      self.no_face + other.no_face, self.skipped + other.skipped)

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> dict[str, int]:
        return {c: int((self.labels == i).sum()) for i, c in enumerate(self.class_names)}


def _decode_one(args):
    """(image, sha1, error, face_found) for one file; face_found is None when faces are not cropped."""
    path, image_size, color, detector, max_image_mb, inside = args
    try:
        data = read_image_file(path, max_image_mb, inside)
        digest = hashlib.sha1(data).hexdigest()
        if detector is None:
            return load_image(data, image_size, color), digest, None, None
        from emotion.faces.detect import face_inputs

        (face, image), = face_inputs(decode_image(data), image_size, color, "largest", detector)
        return image, digest, None, face is not None
    except (ValueError, OSError) as e:
        return None, None, str(e), None


class Progress:
    """``label: done/total (pct) ETA h:mm:ss`` on one stderr line, redrawn at most ten times a second, and a last
    line with the time taken. ``on=None``: only where stderr is a terminal. (Not `keras.utils.Progbar`: the data
    module works before Keras, and so a backend, is imported.)"""

    def __init__(self, total: int, label: str, on: bool | None = None, stream=None):
        self.stream = stream or sys.stderr
        if on is None:
            on = bool(getattr(self.stream, "isatty", lambda: False)())
        self.on, self.total, self.label, self.done = bool(on) and total > 0, total, label, 0
        self.t0 = self.last = time.monotonic()

    def update(self, k: int = 1) -> None:
        self.done += k
        now = time.monotonic()
        if not self.on or (now - self.last < 0.1 and self.done < self.total):
            return
        self.last = now
        rate = self.done / max(now - self.t0, 1e-9)
        eta = (self.total - self.done) / rate if self.done else 0.0
        self.stream.write(f"\r{self.label}: {self.done}/{self.total} ({self.done / self.total:.0%}) "
                          f"ETA {_hms(eta)}  ")
        self.stream.flush()

    def close(self) -> None:
        if self.on:
            self.stream.write(f"\r{self.label}: {self.done}/{self.total} in {_hms(time.monotonic() - self.t0)}"
                              + " " * 12 + "\n")
            self.stream.flush()


def _hms(seconds: float) -> str:
    s = int(seconds + 0.5)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def decode_files(files, class_names, image_size: int, color: str, workers: int | None = None,
                 detector=None, no_face: str = "keep", max_image_mb: float = MAX_IMAGE_MB,
                 inside: str | Path | None = None, progress: bool | None = False, label: str = "decoding",
                 sink=None) -> Folder:
    """Decode ``files`` ([(path, label)]) in threads. With a face ``detector``, each image becomes a crop of
    its largest face; an image without one is kept whole (``no_face="keep"``) or left out ("skip").
    Each file is read by `read_image_file` (``inside``: the folder symlinks may lead into). ``progress``: a
    progress line on stderr (None: where stderr is a terminal). ``sink``: a binary file the kept images are
    written to, in order, as raw uint8 rows, instead of being kept in memory (the Folder's ``images`` is None)."""
    channels = 1 if color == "grayscale" else 3
    drop = no_face == "skip"
    jobs = [(p, image_size, color, detector, max_image_mb, inside) for p, _ in files]
    bar = Progress(len(jobs), label, progress)
    results = []
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        for image, digest, error, face in pool.map(_decode_one, jobs):
            keep = image is not None and not (drop and face is False)
            if keep and sink is not None:
                sink.write(np.ascontiguousarray(image, dtype=np.uint8).tobytes())
                image = None  # on disk now: never the whole set in memory
            results.append((image, digest, error, face, keep))
            bar.update()
    bar.close()
    whole = [str(files[i][0]) for i, r in enumerate(results) if r[3] is False]
    ok = [i for i, r in enumerate(results) if r[4]]
    images = None
    if sink is None:
        images = np.empty((len(ok), image_size, image_size, channels), np.uint8)
        for j, i in enumerate(ok):
            images[j] = results[i][0]
    return Folder(
        class_names=class_names,
        images=images,
        labels=np.array([files[i][1] for i in ok], dtype=np.int64),
        paths=[str(files[i][0]) for i in ok],
        digests=[results[i][1] for i in ok],
        invalid=[(str(files[i][0]), r[2]) for i, r in enumerate(results) if r[2] is not None],
        no_face=[] if drop else whole,
        skipped=whole if drop else [],
    )


# ----------------------------------------------------------------------------------------------- cache
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
        from emotion.faces.detect import make_detector

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


# ----------------------------------------------------------------------------------------------- split
def split_indices(labels, digests, fractions=(0.7, 0.2, 0.1), seed: int = 0) -> dict[str, np.ndarray]:
    """Stratified file-level split: per class, a seeded permutation of the (distinct) files, cut by fractions.

    Pure numpy, so the same seed gives the same split under every backend. Files with identical bytes
    form one group and always land in the same split (web scrapes hold duplicates). Every class with at least
    three distinct files puts at least one in each split whose fraction is non-zero.
    """
    labels = np.asarray(labels)
    out = {s: [] for s in SPLITS}
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        groups: dict[str, list[int]] = {}
        for i in members:
            groups.setdefault(digests[i], []).append(int(i))
        keys = sorted(groups, key=lambda k: groups[k][0])
        n = len(keys)
        n_val, n_test = (_share(fractions[k], n) for k in (1, 2))
        n_train = n - n_val - n_test
        perm = np.random.default_rng([seed, int(c)]).permutation(n)
        for pos, g in enumerate(perm):
            split = "train" if pos < n_train else "val" if pos < n_train + n_val else "test"
            out[split] += groups[keys[g]]
    return {s: np.array(sorted(v), dtype=int) for s, v in out.items()}


def kfold_indices(labels, digests, folds: int, seed: int = 0) -> list[np.ndarray]:
    """Stratified K folds at the file level (identical files share a fold), seeded, backend-independent."""
    labels = np.asarray(labels)
    out: list[list[int]] = [[] for _ in range(folds)]
    for c in np.unique(labels):
        groups: dict[str, list[int]] = {}
        for i in np.flatnonzero(labels == c):
            groups.setdefault(digests[i], []).append(int(i))
        keys = sorted(groups, key=lambda k: groups[k][0])
        if len(keys) < folds:
            raise EmotionError(f"class {int(c)} has {len(keys)} distinct files, fewer than {folds} folds")
        perm = np.random.default_rng([seed, int(c), folds]).permutation(len(keys))
        for pos, g in enumerate(perm):
            out[pos % folds] += groups[keys[g]]
    return [np.array(sorted(f), dtype=int) for f in out]


def _share(fraction: float, n: int) -> int:
    k = int(math.floor(fraction * n + 0.5))
    return max(k, 1) if fraction > 0 and n >= 3 else min(k, max(n - 1, 0))


# ----------------------------------------------------------------------------------------------- batches
def make_batches(images, labels, batch_size: int, shuffle: bool = False, seed: int = 0, num_classes: int = 2):
    """A `keras.utils.PyDataset` over uint8 arrays. Keras is imported here, not at module import, so the
    data module (scan, split, clean) works before a backend is chosen."""
    import keras

    class _Batches(keras.utils.PyDataset):
        """Batches of float32 pixels (0-255; the model rescales) and labels ((n, 1) 0/1 for two classes,
        one-hot (n, k) for more), in a seeded order per epoch.

        The order after the ``k``-th `on_epoch_end` call is ``default_rng([seed, k]).permutation(n)``: the same
        batches in the same order under every backend. (Keras's `fit` peeks at a batch and calls
        `on_epoch_end` once before the first epoch on every backend, so training starts at ``k = 1``.)
        """

        def __init__(self):
            super().__init__(workers=1, use_multiprocessing=False)
            self.images, self.labels = images, labels
            self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
            self.epoch = 0
            self.order = self._order()

        def _order(self):
            n = len(self.labels)
            return np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)

        def __len__(self):
            return math.ceil(len(self.labels) / self.batch_size)

        def __getitem__(self, i):
            idx = self.order[i * self.batch_size:(i + 1) * self.batch_size]
            x = np.asarray(self.images[idx], dtype=np.float32)  # reads just these rows of a memory-mapped cache
            release_pages(self.images)
            y = self.labels[idx]
            if y.ndim == 2:  # soft targets (data.votes): a distribution a row
                y = y[:, 1:2].astype(np.float32) if num_classes == 2 else y.astype(np.float32)
            else:
                y = y.astype(np.float32)[:, None] if num_classes == 2 else np.eye(num_classes, dtype=np.float32)[y]
            return x, y

        def on_epoch_end(self):
            if self.shuffle:
                self.set_epoch(self.epoch + 1)

        def set_epoch(self, k: int) -> None:
            """Use the ``k``-th order. `emotion.training.trainer.Trainer` sets ``k = epoch + 1`` at the start of each
            epoch, so the order depends on the epoch alone, however many peeks, phases or resumes came before."""
            if self.shuffle and k != self.epoch:
                self.epoch = k
                self.order = self._order()

    return _Batches()


# ----------------------------------------------------------------------------------------------- module
class EmotionDataModule:
    """Scan, validate, split and batch one data folder (see module docstring)."""

    def __init__(self, cfg: DataConfig, seed: int = 0, progress: bool | None = None):
        self.cfg, self.seed, self.progress = cfg, seed, progress
        self.root = Path(cfg.data)
        self.train = self.val = self.test = None
        self.invalid: list[tuple[str, str]] = []
        self.no_face: list[str] = []  # faces="crop": kept whole, no face found
        self.skipped: list[str] = []  # faces="crop", no_face="skip": left out, no face found
        self.mixed_in = 0  # data.mix_in: images of that folder in the training split
        self.train_targets: np.ndarray | None = None  # data.votes: soft targets of the training images

    def _load(self, base: Path) -> Folder:
        cfg = self.cfg
        return load_folder(base, self.class_names, cfg.image_size, cfg.color, cfg.cache, cfg.faces, cfg.no_face,
                           cfg.detector, cfg.max_image_mb, self.progress)

    def _mix_in(self) -> None:
        """``data.mix_in``: add that folder's images (its train/ where pre-split) to the training split. Files
        that are also in val or test (by content) are left out; ``mix_in_max`` draws a fixed share per class."""
        cfg = self.cfg
        self.mixed_in = 0
        if not cfg.mix_in:
            return
        root = Path(cfg.mix_in)
        if not root.is_dir():
            raise EmotionError(f"--mix-in folder {root} does not exist or is not a folder")
        base = root / "train" if is_presplit(root) else root
        missing = [c for c in self.class_names if c not in _subdirs(base)]
        if missing:
            raise EmotionError(f"--mix-in folder {base} lacks class folder(s) {missing}")
        faces = cfg.mix_in_faces or cfg.faces
        extra = load_folder(base, self.class_names, cfg.image_size, cfg.color, cfg.cache, faces, "keep",
                            cfg.detector, cfg.max_image_mb, self.progress)
        held_out = set(self.val.digests) | set(self.test.digests)
        keep = np.array([i for i, d in enumerate(extra.digests) if d not in held_out], dtype=int)
        if cfg.mix_in_max and len(keep) > cfg.mix_in_max:
            rng = np.random.default_rng(self.seed)
            share = cfg.mix_in_max / len(keep)
            keep = np.sort(np.concatenate([
                rng.choice(keep[extra.labels[keep] == c], int(round(share * (extra.labels[keep] == c).sum())),
                           replace=False) for c in range(len(self.class_names))]))
        extra = extra.subset(keep)
        extra.no_face = []  # a mix-in image kept whole is reported by its own count, not as a training photo's
        self.train = self.train.concat(extra)
        self.mixed_in = len(extra)

    def _keep_report(self, folder: Folder) -> None:
        self.invalid, self.no_face, self.skipped = folder.invalid, folder.no_face, folder.skipped

    def face_counts(self) -> dict | None:
        """{"mode", "cropped", "kept_whole", "skipped"} over every image used, or None without face cropping."""
        if self.cfg.faces != "crop":
            return None
        used = sum(self.split_sizes().values()) - self.mixed_in
        return {"mode": "crop", "cropped": used - len(self.no_face), "kept_whole": len(self.no_face),
                "skipped": len(self.skipped), "no_face": self.cfg.no_face}

    def setup_fold(self, fold: int, folds: int) -> EmotionDataModule:
        """Cross-validation: fold ``fold`` of ``folds`` is the test split; the rest is split into train and val
        in the configured train:val proportion. A pre-split folder pools its train/ and val/ (never test/)."""
        cfg = self.cfg
        self.class_names = class_folders(self.root, cfg.classes)
        votes = self._read_votes()
        if is_presplit(self.root):
            pool = self._load(self.root / "train").concat(self._load(self.root / "val"))
        else:
            pool = self._load(self.root)
        self._keep_report(pool)
        self._check_classes(pool)
        test = kfold_indices(pool.labels, pool.digests, folds, self.seed)[fold]
        rest = np.setdiff1d(np.arange(len(pool)), test)
        train_frac, val_frac = cfg.split[0], cfg.split[1]
        inner = split_indices(pool.labels[rest], [pool.digests[i] for i in rest],
                              (train_frac, val_frac / (train_frac + val_frac) if val_frac else 0.0, 0.0), self.seed)
        self.train = pool.subset(rest[inner["train"]])
        self.val, self.test = pool.subset(rest[inner["val"]]), pool.subset(test)
        self._check_classes(self.train)
        self._votes(votes, is_presplit(self.root))
        self._mix_in()
        return self

    def setup(self) -> EmotionDataModule:
        cfg = self.cfg
        self.class_names = class_folders(self.root, cfg.classes)
        votes = self._read_votes()
        load = self._load
        if is_presplit(self.root):
            for s in SPLITS:
                names = _subdirs(self.root / s)
                missing = [c for c in self.class_names if c not in names]
                if missing:
                    raise EmotionError(f"{self.root / s} lacks class folder(s) {missing}")
            parts = {s: load(self.root / s) for s in SPLITS}
            self.invalid, self.no_face, self.skipped = (  # the reports alone: the images stay where they are
                [x for s in SPLITS for x in getattr(parts[s], k)] for k in ("invalid", "no_face", "skipped"))
        else:
            everything = load(self.root)
            self._keep_report(everything)
            self._check_classes(everything)
            idx = split_indices(everything.labels, everything.digests, cfg.split, self.seed)
            parts = {s: everything.subset(idx[s]) for s in SPLITS}
        self.train, self.val, self.test = parts["train"], parts["val"], parts["test"]
        self._check_classes(self.train)
        self._votes(votes, is_presplit(self.root))
        self._mix_in()
        return self

    def _votes(self, table: dict | None, presplit: bool) -> None:
        """``data.votes``: the training images' targets from the votes table (`emotion.data.votes`)."""
        self.train_targets = None
        if table is not None:
            self.train_targets = soft_targets(table, self.train.paths, self.train.labels, self.num_classes,
                                              presplit)

    def _read_votes(self) -> dict | None:
        """The votes file read and checked before any image is decoded (its errors come first)."""
        return read_votes(self.cfg.votes, self.class_names) if self.cfg.votes else None

    def _check_classes(self, folder: Folder) -> None:
        empty = [c for c, n in folder.counts().items() if n == 0]
        if empty:
            raise EmotionError(f"no valid images for class(es) {empty} in {self.root}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.cfg.image_size, self.cfg.image_size, 1 if self.cfg.color == "grayscale" else 3)

    def split_sizes(self) -> dict[str, int]:
        return {s: len(getattr(self, s)) for s in SPLITS}

    def dataloader(self, split: str, shuffle: bool = False):
        part = getattr(self, split)
        labels = part.labels
        if split == "train" and self.train_targets is not None:  # mixed-in images keep their folders' labels
            extra = np.eye(self.num_classes, dtype=np.float32)[part.labels[len(self.train_targets):]]
            labels = np.concatenate([self.train_targets, extra])
        return make_batches(part.images, labels, self.cfg.batch_size, shuffle, self.seed, self.num_classes)

    def train_dataloader(self):
        return self.dataloader("train", shuffle=True)

    def val_dataloader(self):
        return self.dataloader("val")

    def test_dataloader(self):
        return self.dataloader("test")


# ----------------------------------------------------------------------------------------------- clean
def scan_invalid(root: str | Path, classes: list[str] | None = None, max_image_mb: float = MAX_IMAGE_MB,
                 progress: bool | None = None) -> tuple[list[tuple[str, str]], int]:
    """(invalid files with reasons, number of valid files) over every class folder of ``root``."""
    root = Path(root)
    names = class_folders(root, classes)
    bases = [root / s for s in SPLITS] if is_presplit(root) else [root]
    invalid, valid = [], 0
    for base in bases:
        present = [c for c in names if (base / c).is_dir()]
        folder = decode_files(list_files(base, present), present, 16, "rgb", max_image_mb=max_image_mb,
                              inside=base, progress=progress, label=f"checking {base}")
        invalid += folder.invalid
        valid += len(folder)
    return invalid, valid


def quarantine(files: list[str], root: str | Path, dest: str | Path) -> list[tuple[str, str]]:
    """Move ``files`` (under ``root``) to ``dest``, keeping relative paths. Returns the moves.

    Plans first, then moves: every source (there, inside the data folder, not reached through a symlinked
    folder that leads out of it) and every destination (free, its folders creatable, not overwriting anything,
    not inside the data folder unless in a hidden folder) is checked before the first move. A symlink is moved
    as the link, never the file it points to. Should a move still fail, the ones before it are put back."""
    root_real = os.path.realpath(root)
    dest_abs = os.path.abspath(os.path.expanduser(str(dest)))
    if os.path.lexists(dest_abs) and not os.path.isdir(dest_abs):
        raise EmotionError(f"quarantine folder {dest} exists and is not a folder; nothing was moved")
    dest_real = Path(os.path.realpath(dest_abs))
    if _within(str(dest_real), root_real) and not any(
            _is_hidden(p) for p in dest_real.relative_to(root_real).parts):
        raise EmotionError(f"quarantine folder {dest_real} must be outside the data folder (or a hidden folder in "
                           "it); nothing was moved")
    plan, sources, targets = [], set(), set()
    for f in files:
        src = Path(os.path.realpath(Path(f).parent)) / Path(f).name  # the entry itself: a link stays a link
        if not _within(str(src.parent), root_real):
            raise EmotionError(f"{f} lies outside the data folder {root} (through a symlinked folder), and is never "
                               "moved; nothing was moved")
        if src in sources:
            continue  # the same file reached twice (two class folders linking to one)
        try:
            src_stat = os.lstat(src)
        except OSError:
            raise EmotionError(f"{f} is no longer there; nothing was moved") from None
        target = dest_real / src.relative_to(root_real)
        if os.path.lexists(target) or target in targets:
            raise EmotionError(f"{target} already exists; nothing was moved (nothing is ever overwritten)")
        for parent in target.parents:
            if parent == dest_real.parent:
                break
            if os.path.lexists(parent) and not os.path.isdir(parent):
                raise EmotionError(f"cannot make folder {parent}: a file is in the way; nothing was moved")
        special = not (stat.S_ISREG(src_stat.st_mode) or stat.S_ISLNK(src_stat.st_mode))
        if special and _device_of(dest_real) != src_stat.st_dev:
            raise EmotionError(f"cannot move {f} ({_kind(src_stat.st_mode)}) to another file system; "
                               "nothing was moved")
        sources.add(src)
        targets.add(target)
        plan.append((f, src, target))
    done = []
    for f, src, target in plan:
        try:
            if os.path.lexists(target):
                raise FileExistsError(f"{target} appeared meanwhile")
            target.parent.mkdir(parents=True, exist_ok=True)
            _move(src, target)
        except OSError as e:
            back = [t for _, s, t in reversed(done) if not _put_back(t, s)]
            left = f"; {len(back)} could not be put back: {', '.join(map(str, back))}" if back else ""
            raise EmotionError(f"moving {f} failed ({e.strerror or e}); the {len(done) - len(back)} file(s) moved "
                               f"before it were put back{left}") from None
        done.append((f, src, target))
    return [(str(f), str(target)) for f, _, target in done]


def _device_of(path: Path) -> int:
    """st_dev of ``path`` or of its nearest existing folder."""
    for p in (path, *path.parents):
        try:
            return os.stat(p).st_dev
        except OSError:
            continue
    return -1


def _move(src: Path, target: Path) -> None:
    """Rename ``src`` to ``target`` (which is free); across file systems a regular file is copied and removed,
    a symlink re-created."""
    try:
        os.rename(src, target)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        if os.path.islink(src):
            os.symlink(os.readlink(src), target)
        else:
            shutil.copy2(src, target, follow_symlinks=False)
        os.unlink(src)


def _put_back(target: Path, src: Path) -> bool:
    try:
        if os.path.lexists(src):
            return False
        _move(target, src)
        return True
    except OSError:
        return False
