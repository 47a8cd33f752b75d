"""Decoding a folder's files into one uint8 array (threads, a progress line), and `Folder`, what a decoded
folder is: images, labels, paths, digests and the files that were not valid.

    folder = decode_files(list_files(root, ["happy", "sad"]), ["happy", "sad"], 48, "grayscale")
    folder.counts()                                        # {'happy': 151, 'sad': 150}
"""
from __future__ import annotations

import hashlib
import mmap
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emotion.faces.detect import face_inputs
from emotion.images import MAX_IMAGE_MB, decode_image, load_image, read_image_file


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
