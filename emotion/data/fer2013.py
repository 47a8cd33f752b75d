"""Import the official FER2013 Kaggle CSV (``emotion,pixels,Usage``) as image folders.

    emotion data fer2013 fer2013.csv data/fer2013 --classes happy,sad
    # data/fer2013/{train,val,test}/{happy,sad}/<usage>_<row>.png   (Training / PublicTest / PrivateTest)

Rows that cannot be read (bad label, wrong pixel count, unknown usage) are reported and skipped.
The output folder must be new or empty: nothing is overwritten.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from emotion.errors import EmotionError

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # FER2013's label order
USAGES = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}


def import_csv(csv_path: str | Path, out: str | Path, classes: list[str] | None = None) -> dict:
    """Write one 48x48 grayscale PNG per row; returns ``{"written": {split: {class: n}}, "malformed": [...]}``."""
    csv_path, out = Path(csv_path), Path(out)
    if not csv_path.is_file():
        raise EmotionError(f"CSV file not found: {csv_path}")
    unknown = sorted(set(classes or []) - set(EMOTIONS))
    if unknown:
        raise EmotionError(f"unknown FER2013 class(es) {unknown}; known: {', '.join(EMOTIONS)}")
    if out.exists() and any(out.iterdir()):
        raise EmotionError(f"output folder {out} is not empty; choose a new one")
    keep = set(classes or EMOTIONS)
    written: dict[str, dict[str, int]] = {s: {} for s in USAGES.values()}
    malformed: list[str] = []
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"emotion", "pixels", "Usage"} - set(reader.fieldnames or [])
        if missing:
            raise EmotionError(f"{csv_path} lacks column(s) {sorted(missing)}; expected emotion,pixels,Usage")
        for row_no, row in enumerate(reader, start=2):  # line 1 is the header
            try:
                label = EMOTIONS[int(row["emotion"])]
                split = USAGES[(row["Usage"] or "").strip()]
                pixels = np.array((row["pixels"] or "").split(), dtype=np.int64)
                if pixels.size != 48 * 48 or pixels.min() < 0 or pixels.max() > 255:
                    raise ValueError(f"{pixels.size} pixels, expected 2304 values in 0-255")
            except (ValueError, IndexError, KeyError, TypeError, AttributeError) as e:
                malformed.append(f"line {row_no}: {type(e).__name__}: {e}"[:120])
                continue
            if label not in keep:
                continue
            folder = out / split / label
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.reshape(48, 48).astype(np.uint8)).save(folder / f"{split}_{row_no:05d}.png")
            written[split][label] = written[split].get(label, 0) + 1
    if not any(written.values()):
        raise EmotionError(f"no usable rows in {csv_path} ({len(malformed)} malformed)")
    return {"written": written, "malformed": malformed}
