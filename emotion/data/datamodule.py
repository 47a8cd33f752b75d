"""The data module: scan a folder of class subfolders, check every file by content, split at the file level,
and serve batches through `keras.utils.PyDataset`, the same code under every backend.

    dm = EmotionDataModule(DataConfig(data="../shared/data/web-happy-sad"), seed=0)
    dm.setup()
    dm.class_names             # ['happy', 'sad']   (sorted folder names: happy=0, sad=1)
    len(dm.train), len(dm.val), len(dm.test)
    model.fit(dm.train_dataloader(), validation_data=dm.val_dataloader())

Images are decoded once (`emotion.images`), cut to faces where asked (`emotion.faces`) and kept in the decoded-image
cache (`emotion.data.cache`); the split (`emotion.data.split`) and the batches (`emotion.data.batches`) work on
those arrays. Nothing here ever deletes, moves or writes a file inside the data folder.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from emotion.config import DataConfig
from emotion.data.batches import make_batches
from emotion.data.cache import load_folder
from emotion.data.decode import Folder
from emotion.data.folders import SPLITS, class_folders, is_presplit, subdirs
from emotion.data.split import kfold_indices, split_indices
from emotion.data.votes import read_votes, soft_targets
from emotion.errors import EmotionError
from emotion.faces.detect import make_detector


class EmotionDataModule:
    """Scan, validate, split and batch one data folder: a folder of class folders (split 70/20/10 by file
    content, identical files kept together) or of ``train/ val/ test/`` (used as given). ``data.votes`` trains on
    per-face vote distributions (FER+), ``data.faces`` on face crops, ``data.mix_in`` adds another folder's
    images to the training split.

        dm = EmotionDataModule(DataConfig(data="../shared/data/ferplus", image_size=48, color="grayscale",
                                          votes="../shared/data/ferplus/votes.csv")).setup()
        dm.class_names, dm.split_sizes()     # eight emotions; {'train': 25045, 'val': 3191, 'test': 3137}
        x, y = dm.train_dataloader()[0]      # float32 pixels 0-255, (64, 8) vote distributions
    """

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
                           self.detector(), cfg.max_image_mb, self.progress)

    def detector(self):
        """The face detector ``faces: crop`` cuts with (its margin ``data.margin`` where set); None otherwise."""
        cfg = self.cfg
        if "crop" not in (cfg.faces, cfg.mix_in_faces):
            return None
        return make_detector(cfg.detector, margin=cfg.margin)

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
        missing = [c for c in self.class_names if c not in subdirs(base)]
        if missing:
            raise EmotionError(f"--mix-in folder {base} lacks class folder(s) {missing}")
        faces = cfg.mix_in_faces or cfg.faces
        extra = load_folder(base, self.class_names, cfg.image_size, cfg.color, cfg.cache, faces, "keep",
                            self.detector(), cfg.max_image_mb, self.progress)
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
                names = subdirs(self.root / s)
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
