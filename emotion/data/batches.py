"""Batches for Keras: a seeded `keras.utils.PyDataset` over uint8 arrays, the same under every backend.

    batches = make_batches(images, labels, batch_size=32, shuffle=True, seed=0, num_classes=2)
    x, y = batches[0]                                      # float32 0-255 pixels, (32, 1) labels
"""
from __future__ import annotations

import math

import numpy as np

from emotion.data.decode import release_pages


def make_batches(images, labels, batch_size: int, shuffle: bool = False, seed: int = 0, num_classes: int = 2):
    """A `keras.utils.PyDataset` over uint8 arrays. Keras is imported here, not at module import, so the
    data module (scan, split, clean) works before a backend is chosen."""
    import keras  # here, so that the framework loads only when needed

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
