"""Splits at the file level, stratified by class, identical files kept in one split.

    idx = split_indices(labels, digests, (0.7, 0.2, 0.1), seed=0)     # {"train": ..., "val": ..., "test": ...}
"""
from __future__ import annotations

import math

import numpy as np

from emotion.data.folders import SPLITS
from emotion.errors import EmotionError


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
