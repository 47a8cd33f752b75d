"""Soft targets from per-face votes (FER+'s ``votes.csv``): train on how people voted, not only on the majority.

FER+ (Barsoum et al., ICMI 2016) had each FER2013 face tagged by 10 people. Its paper trains best in the
"cross-entropy" mode: the target of a face is the distribution of its votes over the emotions. ``votes.csv``
has one row a face: ``split, file, neutral, happiness, surprise, sadness, anger, disgust, fear, contempt,
unknown, NF``. A column matches a class folder by name or by FER+'s own word for it (``happiness`` is
``happy``, ``anger`` is ``angry``, ``sadness`` is ``sad``); ``unknown`` and ``NF`` (not a face) match no class.

The folders decide which faces train (FER+'s majority protocol already left out the faces it drops); the votes
give each of them its target: single votes dropped as outliers (the paper's protocol), the rest normalised over
the classes. A face whose votes then name none of the classes keeps its folder's label. ::

    table = read_votes("../shared/data/ferplus/votes.csv", ["angry", "happy", "sad"])
    targets = soft_targets(table, ["../shared/data/ferplus/train/happy/fer0000007.png"], [1], 3)
    targets.shape   # (1, 3), each row sums to 1
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from emotion.errors import EmotionError

# FER+'s column names for the class folders' names
ALIASES = {"happiness": "happy", "anger": "angry", "sadness": "sad", "surprised": "surprise"}
MAX_VOTES_MB = 200


def column_classes(header: list[str], class_names: list[str]) -> dict[int, int]:
    """``{column index: class index}`` for the vote columns that name one of ``class_names``."""
    out = {}
    for i, name in enumerate(header):
        cls = ALIASES.get(name.strip().lower(), name.strip().lower())
        if cls in class_names:
            out[i] = class_names.index(cls)
    missing = sorted(set(class_names) - {class_names[c] for c in out.values()})
    if missing:
        raise EmotionError(f"votes file has no column for class(es) {missing}; its columns: {', '.join(header)}")
    return out


def read_votes(path: str | Path, class_names: list[str]) -> dict[tuple[str, str], np.ndarray]:
    """``{(split, file name): votes per class}`` (float32, one entry a class) from a votes CSV whose first two
    columns are ``split`` and ``file``."""
    path = Path(path)
    if not path.is_file():
        raise EmotionError(f"votes file not found: {path}")
    if path.stat().st_size > MAX_VOTES_MB * 1_000_000:
        raise EmotionError(f"votes file {path} is over {MAX_VOTES_MB} MB; a votes table is a few MB")
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise EmotionError(f"votes file {path} is not a readable CSV: {e}") from None
    if not rows or [c.strip().lower() for c in rows[0][:2]] != ["split", "file"]:
        raise EmotionError(f"votes file {path} must start with a header 'split,file,<class>,...'")
    header = rows[0]
    columns = column_classes(header, class_names)
    table = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise EmotionError(f"votes file {path}, line {line}: {len(row)} fields, the header has {len(header)}")
        votes = np.zeros(len(class_names), np.float32)
        try:
            for col, cls in columns.items():
                votes[cls] += float(row[col])
        except ValueError:
            raise EmotionError(f"votes file {path}, line {line}: a vote count is not a number") from None
        if not np.all(np.isfinite(votes)) or (votes < 0).any():
            raise EmotionError(f"votes file {path}, line {line}: vote counts must be non-negative numbers")
        table[(row[0].strip(), row[1].strip())] = votes
    return table


def key_of(path: str | Path, presplit: bool) -> tuple[str, str]:
    """A face's row: its split (the folder above its class folder, in a pre-split data folder) and file name."""
    p = Path(path)
    return (p.parent.parent.name if presplit else "", p.name)


def soft_targets(table: dict, paths, labels, num_classes: int, presplit: bool = True,
                 outlier_votes: float = 1.0) -> np.ndarray:
    """One target row per face (``(n, num_classes)`` float32, each summing to 1): its votes with counts of at
    most ``outlier_votes`` dropped, normalised; a face left with no votes for these classes keeps its label.
    A face with no row is an error naming it. In a folder that is not pre-split, rows are matched by file name."""
    if not presplit:  # one row per file name, whatever its split
        by_name: dict[str, np.ndarray] = {}
        for (_, name), votes in table.items():
            by_name.setdefault(name, votes)
        table = {("", name): votes for name, votes in by_name.items()}
    out = np.zeros((len(paths), num_classes), np.float32)
    for i, (path, label) in enumerate(zip(paths, labels, strict=True)):
        key = key_of(path, presplit)
        if key not in table:
            where = f"split {key[0]!r}, " if presplit else ""
            raise EmotionError(f"votes file has no row for {path} ({where}file {key[1]!r})")
        votes = np.where(table[key] > outlier_votes, table[key], 0.0)
        if votes.sum() > 0:
            out[i] = votes / votes.sum()
        else:
            out[i, int(label)] = 1.0
    return out
