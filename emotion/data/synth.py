"""A deterministic synthetic face set, so the whole pipeline runs on a fresh machine with no data.

    emotion synth data/ --per-class 150 --seed 0     # data/happy/*.jpg, data/sad/*.jpg

Happy faces smile with relaxed brows; sad faces frown with brows raised at the inner ends. Pose (rotation,
position), scale, skin tone, background, blur, noise and JPEG quality vary per image, drawn from
``numpy.random.default_rng([seed, class, index])``: the same files on every machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from emotion.errors import EmotionError

CLASSES = ("happy", "sad")
SKIN = [(255, 224, 189), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (92, 56, 30)]


def face(label: int, rng: np.random.Generator, size: int = 128, with_box: bool = False):
    """One face image; with ``with_box``, also the face's (x, y, w, h) box in its pixels (the oval's bounds
    before rotation), for detector tests."""
    s = 4 * size  # draw large, shrink at the end (antialiasing)
    bg = tuple(int(v) for v in rng.integers(0, 256, 3))
    img = Image.new("RGB", (s, s), bg)
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 4))):  # background clutter
        x, y = rng.integers(0, s, 2)
        r = int(rng.integers(s // 16, s // 4))
        d.rectangle([x - r, y - r, x + r, y + r], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))

    layer = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    f = ImageDraw.Draw(layer)
    skin = np.array(SKIN[int(rng.integers(len(SKIN)))]) + rng.integers(-15, 16, 3)
    skin = tuple(int(v) for v in np.clip(skin, 0, 255))
    dark = tuple(int(v * 0.3) for v in skin)
    c, w, h = s / 2, s * 0.30, s * 0.38
    f.ellipse([c - w, c - h, c + w, c + h], fill=skin + (255,))
    ey, ex, er = c - h * 0.25, w * 0.42, s * 0.03
    for sx in (-1, 1):
        f.ellipse([c + sx * ex - er, ey - er, c + sx * ex + er, ey + er], fill=dark + (255,))
        # brows: sad raises the inner ends, happy keeps them about level
        tilt = (rng.uniform(0.04, 0.09) if label == 1 else rng.uniform(-0.01, 0.01)) * s
        outer, inner = (c + sx * ex * 1.6, ey - s * 0.07), (c + sx * ex * 0.35, ey - s * 0.07 - tilt)
        f.line([outer, inner], fill=dark + (255,), width=max(2, int(s * 0.015)))
    mw, mh, my = w * rng.uniform(0.45, 0.65), h * rng.uniform(0.18, 0.3), c + h * 0.45
    box = [c - mw, my - mh, c + mw, my + mh]
    lw = max(3, int(s * rng.uniform(0.015, 0.03)))
    if label == 0:
        f.arc(box, 15, 165, fill=dark + (255,), width=lw)  # smile: lower half of an ellipse
    else:
        box = [box[0], box[1] + mh, box[2], box[3] + mh]
        f.arc(box, 195, 345, fill=dark + (255,), width=lw)  # frown: upper half

    scale = rng.uniform(0.6, 1.1)
    layer = layer.rotate(rng.uniform(-25, 25), resample=Image.Resampling.BICUBIC)
    layer = layer.resize((int(s * scale), int(s * scale)), Image.Resampling.BICUBIC)
    off = [int(rng.uniform(-0.15, 0.15) * s + (s - layer.width) / 2) for _ in range(2)]
    img.paste(layer, tuple(off), layer)
    k = size / s  # oval half-sizes 0.30 s, 0.38 s around the layer's centre, scaled, then shrunk to `size`
    cx, cy = off[0] + layer.width / 2, off[1] + layer.height / 2
    box = tuple(int(round(v * k)) for v in (cx - w * scale, cy - h * scale, 2 * w * scale, 2 * h * scale))
    img = img.resize((size, size), Image.Resampling.LANCZOS)
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.2)))
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, rng.uniform(0, 12), (size, size, 3))
    image = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return (image, box) if with_box else image


def generate(out: str | Path, per_class: int = 150, seed: int = 0, size: int = 128) -> dict[str, int]:
    """Write ``out/happy/*.jpg`` and ``out/sad/*.jpg``; refuses to touch a folder that already has them."""
    out = Path(out)
    for c in CLASSES:
        if (out / c).exists() and any((out / c).iterdir()):
            raise EmotionError(f"{out / c} already holds files; choose an empty folder")
    if per_class < 1:
        raise EmotionError("--per-class must be at least 1")
    for label, c in enumerate(CLASSES):
        (out / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            rng = np.random.default_rng([seed, label, i])
            face(label, rng, size).save(out / c / f"{c}_{i:04d}.jpg", quality=int(rng.integers(70, 96)))
    return {c: per_class for c in CLASSES}
