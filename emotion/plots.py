"""Figures of a run: training curves, a grid of labelled samples, a confusion matrix (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def history(hist: dict, path: str | Path) -> None:
    """Loss and accuracy per epoch, train vs val (the seed's two figures, side by side)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        epochs = np.arange(1, len(hist.get(metric, [])) + 1)
        ax.plot(epochs, hist.get(metric, []), color="teal", label=metric)
        if f"val_{metric}" in hist:
            ax.plot(epochs, hist[f"val_{metric}"], color="orange", label=f"val_{metric}")
        ax.set_title(metric.capitalize())
        ax.set_xlabel("epoch")
        ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def samples(images, labels, class_names, path: str | Path, probs=None, n: int = 4) -> None:
    """``n`` images with their labels (and predictions when given), as the seed's sample grid."""
    n = min(n, len(images))
    fig, axes = plt.subplots(1, max(n, 1), figsize=(3 * max(n, 1), 3.3), squeeze=False)
    for i, ax in enumerate(axes[0]):
        ax.axis("off")
        if i >= n:
            continue
        img = images[i]
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
        title = class_names[int(labels[i])]
        if probs is not None:
            p = np.asarray(probs[i]).reshape(-1)
            pred = int(p[0] > 0.5) if p.size == 1 else int(p.argmax())
            title += f" (pred {class_names[pred]})"
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def confusion(cm, class_names, path: str | Path) -> None:
    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(1.2 * len(class_names) + 2, 1.2 * len(class_names) + 1.5))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
