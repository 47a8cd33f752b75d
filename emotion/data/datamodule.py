"""The data module: scan a folder of class subfolders, check every file by content, split at the file level,
and serve batches through `keras.utils.PyDataset`, the same code under every backend.

    dm = EmotionDataModule(DataConfig(data="../shared/data/web-happy-sad"), seed=0)
    dm.setup()
    dm.class_names             # ['happy', 'sad']   (sorted folder names: happy=0, sad=1)
    len(dm.train), len(dm.val), len(dm.test)
    model.fit(dm.train_dataloader(), validation_data=dm.val_dataloader())

Images are decoded with Pillow, converted to RGB (or grayscale), resized to a square once, and kept as uint8
arrays in memory and in a disk cache keyed by the files' paths, sizes and modification times, so no epoch and
no later run decodes a file again. `load_image` is the one preprocessing function: training, `emotion test`,
`emotion predict` and the benchmarks all call it, so serving cannot disagree with training. Nothing here ever
deletes, moves or writes a file inside the data folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from emotion.config import DataConfig
from emotion.errors import EmotionError

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is invalid, never silently half-grey
SUPPORTED_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF", "MPO")
SPLITS = ("train", "val", "test")
_CACHE_VERSION = 1


# ----------------------------------------------------------------------------------------------- images
def load_image(source, image_size: int, color: str = "rgb") -> np.ndarray:
    """Decode one image (path or bytes) to a ``(image_size, image_size, 3 or 1)`` uint8 array.

    Any Pillow-decodable JPEG/PNG/BMP/GIF/WebP/TIFF: grayscale, palette, RGBA (composited on white),
    CMYK, 16-bit (scaled to 8-bit). GIFs give their first frame. Resized with bilinear filtering (antialiased
    when shrinking) to a square, aspect ratio not kept, as the seed's `image_dataset_from_directory` did.
    Raises ``ValueError`` with a short reason for anything else.
    """
    img = _open(source, color, (image_size, image_size))
    img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return _array(img)


def decode_image(source, color: str = "rgb", max_side: int = 1280) -> np.ndarray:
    """Decode one image (path or bytes) at its own aspect ratio, as (H, W, 3 or 1) uint8, its longer side
    shrunk to at most ``max_side`` (enough to find and crop faces; bounds the memory a huge photo takes).
    The same decoding rules and errors as `load_image`."""
    img = _open(source, color, (max_side, max_side))
    if max(img.size) > max_side:
        scale = max_side / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.Resampling.BILINEAR)
    return _array(img)


def _array(img: Image.Image) -> np.ndarray:
    arr = np.asarray(img, dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def _open(source, color: str, draft: tuple[int, int]) -> Image.Image:
    """Decode to a Pillow image in RGB or L; big JPEGs are decoded at a reduced DCT scale no smaller than
    ``draft``."""
    data = Path(source).read_bytes() if not isinstance(source, bytes | bytearray) else bytes(source)
    if not data:
        raise ValueError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            fmt = img.format
            if fmt not in SUPPORTED_FORMATS:
                raise ValueError(f"unsupported image type {fmt}")
            if fmt in ("JPEG", "MPO") and img.mode in ("RGB", "L"):
                img.draft(img.mode, draft)
            img.load()
    except ValueError:
        raise
    except Image.DecompressionBombWarning:
        raise ValueError("image too large (decompression bomb guard)") from None
    except Exception as e:  # Pillow raises many types for broken files
        reason = "not an image" if "cannot identify" in str(e) else str(e).splitlines()[0][:80]
        raise ValueError(reason) from None
    return _to_mode(img, "L" if color == "grayscale" else "RGB")


def _to_mode(img: Image.Image, mode: str) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8), "L")
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


def _subdirs(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not _is_hidden(p.name))


def _files_under(folder: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        out += [Path(dirpath) / f for f in sorted(filenames) if not _is_hidden(f)]
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
@dataclass
class Folder:
    """The decoded, valid images of one folder of class subfolders, and the files that were not valid."""

    class_names: list[str]
    images: np.ndarray  # (N, S, S, C) uint8
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
            self.class_names, self.images[idx], self.labels[idx], paths, [self.digests[i] for i in idx],
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
    path, image_size, color, detector = args
    try:
        data = path.read_bytes()
        digest = hashlib.sha1(data).hexdigest()
        if detector is None:
            return load_image(data, image_size, color), digest, None, None
        from emotion.faces.detect import face_inputs

        (face, image), = face_inputs(decode_image(data), image_size, color, "largest", detector)
        return image, digest, None, face is not None
    except (ValueError, OSError) as e:
        return None, None, str(e), None


def decode_files(files, class_names, image_size: int, color: str, workers: int | None = None,
                 detector=None, no_face: str = "keep") -> Folder:
    """Decode ``files`` ([(path, label)]) in threads. With a face ``detector``, each image becomes a crop of
    its largest face; an image without one is kept whole (``no_face="keep"``) or left out ("skip")."""
    channels = 1 if color == "grayscale" else 3
    jobs = [(p, image_size, color, detector) for p, _ in files]
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        results = list(pool.map(_decode_one, jobs))
    whole = [str(files[i][0]) for i, r in enumerate(results) if r[3] is False]
    drop = no_face == "skip"
    ok = [i for i, r in enumerate(results) if r[0] is not None and not (drop and r[3] is False)]
    images = np.empty((len(ok), image_size, image_size, channels), np.uint8)
    for j, i in enumerate(ok):
        images[j] = results[i][0]
    return Folder(
        class_names=class_names,
        images=images,
        labels=np.array([files[i][1] for i in ok], dtype=np.int64),
        paths=[str(files[i][0]) for i in ok],
        digests=[results[i][1] for i in ok],
        invalid=[(str(files[i][0]), r[2]) for i, r in enumerate(results) if r[0] is None],
        no_face=[] if drop else whole,
        skipped=whole if drop else [],
    )


def cache_dir(setting: str | None) -> Path | None:
    if setting == "off":
        return None
    return Path(setting or os.environ.get("EMOTION_CACHE") or Path.home() / ".cache" / "emotion")


def load_folder(base: str | Path, class_names, image_size: int, color: str = "rgb", cache: str | None = None,
                faces: str = "none", no_face: str = "keep", detector: str | None = None) -> Folder:
    """Decode every file of ``base/<class>/`` once; later calls with unchanged files read the disk cache.
    ``faces="crop"``: each image is its largest face (`emotion.faces.detect`), see `decode_files`."""
    base = Path(base)
    files = list_files(base, class_names)
    if faces == "crop":
        from emotion.faces.detect import make_detector

        detector = make_detector(detector)
    else:
        detector = None
    key = hashlib.sha1(json.dumps([
        _CACHE_VERSION, image_size, color, class_names,
        [(str(p.resolve()), label, *_stat(p)) for p, label in files],
        *([detector.settings(), no_face] if detector else []),
    ]).encode()).hexdigest()[:20]
    folder = cache_dir(cache)
    if folder is not None and (folder / f"{key}.json").is_file():
        try:
            meta = json.loads((folder / f"{key}.json").read_text())
            images = np.load(folder / f"{key}.npy")
            return Folder(class_names, images, np.array(meta["labels"], dtype=np.int64), meta["paths"],
                          meta["digests"], [tuple(x) for x in meta["invalid"]], meta.get("no_face", []),
                          meta.get("skipped", []))
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache entry is rebuilt below
    result = decode_files(files, class_names, image_size, color, detector=detector, no_face=no_face)
    if folder is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f"{key}.{os.getpid()}.tmp.npy"
            np.save(tmp, result.images)
            os.replace(tmp, folder / f"{key}.npy")
            meta = {"labels": result.labels.tolist(), "paths": result.paths, "digests": result.digests,
                    "invalid": result.invalid, "no_face": result.no_face, "skipped": result.skipped}
            (folder / f"{key}.{os.getpid()}.tmp.json").write_text(json.dumps(meta))
            os.replace(folder / f"{key}.{os.getpid()}.tmp.json", folder / f"{key}.json")
        except OSError:
            pass  # a read-only cache only costs speed
    return result


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
            x = self.images[idx].astype(np.float32)
            y = self.labels[idx]
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

    def __init__(self, cfg: DataConfig, seed: int = 0):
        self.cfg, self.seed = cfg, seed
        self.root = Path(cfg.data)
        self.train = self.val = self.test = None
        self.invalid: list[tuple[str, str]] = []
        self.no_face: list[str] = []  # faces="crop": kept whole, no face found
        self.skipped: list[str] = []  # faces="crop", no_face="skip": left out, no face found

    def _load(self, base: Path) -> Folder:
        cfg = self.cfg
        return load_folder(base, self.class_names, cfg.image_size, cfg.color, cfg.cache, cfg.faces, cfg.no_face,
                           cfg.detector)

    def _keep_report(self, folder: Folder) -> None:
        self.invalid, self.no_face, self.skipped = folder.invalid, folder.no_face, folder.skipped

    def face_counts(self) -> dict | None:
        """{"mode", "cropped", "kept_whole", "skipped"} over every image used, or None without face cropping."""
        if self.cfg.faces != "crop":
            return None
        used = sum(self.split_sizes().values())
        return {"mode": "crop", "cropped": used - len(self.no_face), "kept_whole": len(self.no_face),
                "skipped": len(self.skipped), "no_face": self.cfg.no_face}

    def setup_fold(self, fold: int, folds: int) -> EmotionDataModule:
        """Cross-validation: fold ``fold`` of ``folds`` is the test split; the rest is split into train and val
        in the configured train:val proportion. A pre-split folder pools its train/ and val/ (never test/)."""
        cfg = self.cfg
        self.class_names = class_folders(self.root, cfg.classes)
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
        return self

    def setup(self) -> EmotionDataModule:
        cfg = self.cfg
        self.class_names = class_folders(self.root, cfg.classes)
        load = self._load
        if is_presplit(self.root):
            for s in SPLITS:
                names = _subdirs(self.root / s)
                missing = [c for c in self.class_names if c not in names]
                if missing:
                    raise EmotionError(f"{self.root / s} lacks class folder(s) {missing}")
            parts = {s: load(self.root / s) for s in SPLITS}
            self._keep_report(parts["train"].concat(parts["val"]).concat(parts["test"]))
        else:
            everything = load(self.root)
            self._keep_report(everything)
            self._check_classes(everything)
            idx = split_indices(everything.labels, everything.digests, cfg.split, self.seed)
            parts = {s: everything.subset(idx[s]) for s in SPLITS}
        self.train, self.val, self.test = parts["train"], parts["val"], parts["test"]
        self._check_classes(self.train)
        return self

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
        return make_batches(part.images, part.labels, self.cfg.batch_size, shuffle, self.seed, self.num_classes)

    def train_dataloader(self):
        return self.dataloader("train", shuffle=True)

    def val_dataloader(self):
        return self.dataloader("val")

    def test_dataloader(self):
        return self.dataloader("test")


# ----------------------------------------------------------------------------------------------- clean
def scan_invalid(root: str | Path, classes: list[str] | None = None) -> tuple[list[tuple[str, str]], int]:
    """(invalid files with reasons, number of valid files) over every class folder of ``root``."""
    root = Path(root)
    names = class_folders(root, classes)
    bases = [root / s for s in SPLITS] if is_presplit(root) else [root]
    invalid, valid = [], 0
    for base in bases:
        present = [c for c in names if (base / c).is_dir()]
        folder = decode_files(list_files(base, present), present, 16, "rgb")
        invalid += folder.invalid
        valid += len(folder)
    return invalid, valid


def quarantine(files: list[str], root: str | Path, dest: str | Path) -> list[tuple[str, str]]:
    """Move ``files`` (under ``root``) to ``dest``, keeping relative paths; never overwrites. Returns moves."""
    root, dest = Path(root).resolve(), Path(dest).resolve()
    if dest == root or (root in dest.parents and not any(_is_hidden(p) for p in dest.relative_to(root).parts)):
        raise EmotionError(f"quarantine folder {dest} must be outside the data folder (or a hidden folder in it)")
    moves = []
    for f in files:
        rel = Path(f).resolve().relative_to(root)
        target = dest / rel
        if target.exists():
            raise EmotionError(f"{target} already exists; nothing was overwritten (moved {len(moves)} file(s))")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(f), str(target))
        moves.append((str(f), str(target)))
    return moves
