"""A deterministic synthetic face set, so the whole pipeline runs on a fresh machine with no data.

    emotion synth data/ --per-class 150 --seed 0     # data/happy/*.jpg, data/sad/*.jpg

Happy faces smile (a mouth curved up, open with teeth in a third of them), with level or arched brows and eyes
narrowed by the raised cheeks; sad faces frown (a mouth curved down), with brows raised at the inner ends and
drooping upper lids. The expression is the signal: it is drawn large and clear, on a face that fills most of the
frame, as in an aligned face crop. What varies per image, as in a real face set, is the nuisance: pose (rotation
up to 10 degrees, position), scale, face shape, skin tone, hair, lighting (direction and strength), background
(colour, gradient and a few soft shapes), mouth width, curvature and stroke width, blur, noise and JPEG quality,
all drawn from ``numpy.random.default_rng([seed, class, index])``: the same files on every machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from emotion.errors import EmotionError

CLASSES = ("happy", "sad")
SKIN = [(255, 224, 189), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (92, 56, 30)]
HAIR = [(20, 16, 14), (60, 40, 25), (110, 75, 40), (170, 130, 70), (200, 170, 110), (120, 120, 120)]


def _rgb(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, 3))


def _background(rng: np.random.Generator, s: int) -> Image.Image:
    """A flat colour with a linear gradient and a few soft, low-contrast shapes (a room, a wall, a window)."""
    base = np.array(_rgb(rng, 20, 236), np.float32)
    other = np.clip(base + rng.normal(0, 45, 3), 0, 255)
    t = np.linspace(0, 1, s, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.clip(np.cos(angle) * t[None, :] + np.sin(angle) * t[:, None], 0, None)
    ramp = ramp / max(float(ramp.max()), 1e-6)
    arr = base + (other - base) * ramp[..., None]
    img = Image.fromarray(arr.astype(np.uint8))
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 4))):
        x, y = rng.integers(0, s, 2)
        r = int(rng.integers(s // 12, s // 4))
        colour = tuple(int(v) for v in np.clip(base + rng.normal(0, 40, 3), 0, 255))
        shape = [x - r, y - r, x + r, y + r]
        (d.ellipse if rng.random() < 0.5 else d.rectangle)(shape, fill=colour)
    return img.filter(ImageFilter.GaussianBlur(s / 64))


def _lighting(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A directional light over the whole frame, plus global brightness and contrast."""
    size = img.width
    arr = np.asarray(img, dtype=np.float32)
    t = np.linspace(-1, 1, size, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    light = 1 + rng.uniform(0, 0.3) * (np.cos(angle) * t[None, :] + np.sin(angle) * t[:, None])
    arr = arr * light[..., None] * rng.uniform(0.8, 1.15)
    arr = (arr - 128) * rng.uniform(0.8, 1.1) + 128
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def face(label: int, rng: np.random.Generator, size: int = 128, with_box: bool = False):
    """One face image; with ``with_box``, also the face's (x, y, w, h) box in its pixels (the oval's bounds
    before rotation), for detector tests."""
    s = 4 * size  # draw large, shrink at the end (antialiasing)
    img = _background(rng, s)

    layer = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    f = ImageDraw.Draw(layer)
    skin = np.array(SKIN[int(rng.integers(len(SKIN)))]) + rng.integers(-15, 16, 3)
    skin = tuple(int(v) for v in np.clip(skin, 0, 255))
    dark = tuple(int(v * 0.25) for v in skin) + (255,)
    c = s / 2
    w, h = s * 0.30 * rng.uniform(0.93, 1.07), s * 0.38 * rng.uniform(0.95, 1.05)
    if rng.random() < 0.7:  # hair: a cap over the top of the head
        hair = np.array(HAIR[int(rng.integers(len(HAIR)))]) + rng.integers(-10, 11, 3)
        hair = tuple(int(v) for v in np.clip(hair, 0, 255)) + (255,)
        f.ellipse([c - w * 1.08, c - h * 1.1, c + w * 1.08, c + h * 0.2], fill=hair)
    f.ellipse([c - w, c - h, c + w, c + h], fill=skin + (255,))

    # eyes: happy narrowed by the cheeks, sad with drooping upper lids; brows: sad raises the inner ends
    ey, ex = c - h * 0.22, w * 0.42
    er = s * rng.uniform(0.03, 0.038)
    bw = max(2, int(s * rng.uniform(0.02, 0.03)))
    for sx in (-1, 1):
        ecx = c + sx * ex
        if label == 0:
            f.ellipse([ecx - er, ey - er * 0.75, ecx + er, ey + er * 0.75], fill=dark)
            f.arc([ecx - er * 1.3, ey - er * 0.2, ecx + er * 1.3, ey + er * 1.6], 200, 340, fill=dark, width=bw // 2)
            tilt = rng.uniform(-0.015, 0.005) * s  # level, or arched up at the inner end a little
        else:
            f.ellipse([ecx - er, ey - er, ecx + er, ey + er], fill=dark)
            inner, outer = (ecx - sx * er * 1.2, ey - er * 1.1), (ecx + sx * er * 1.2, ey - er * 0.3)
            f.line([inner, outer], fill=dark, width=bw // 2)
            tilt = rng.uniform(0.06, 0.1) * s
        by = ey - s * 0.075
        outer, inner = (c + sx * ex * 1.6, by), (c + sx * ex * 0.3, by - tilt)
        f.line([outer, inner], fill=dark, width=bw)

    # mouth: the same vertical span for both classes, only its curvature differs
    mw = w * rng.uniform(0.45, 0.65)
    mh = mw * rng.uniform(0.45, 0.7)
    my = c + h * rng.uniform(0.38, 0.48)
    lw = max(3, int(s * rng.uniform(0.03, 0.045)))
    if label == 0:
        box = [c - mw, my - mh, c + mw, my + mh]
        if rng.random() < 0.35:  # open smile: a dark half-ellipse with a band of teeth
            f.chord(box, 0, 180, fill=dark)
            f.chord([c - mw * 0.8, my - mh * 0.1, c + mw * 0.8, my + mh * 0.55], 0, 180, fill=(235, 235, 225, 255))
            f.arc(box, 0, 180, fill=dark, width=lw)
        else:
            f.arc(box, 10, 170, fill=dark, width=lw)  # smile: lower half of an ellipse
    else:
        box = [c - mw, my, c + mw, my + 2 * mh]
        f.arc(box, 190, 350, fill=dark, width=lw)  # frown: upper half

    scale = rng.uniform(0.9, 1.1)
    layer = layer.rotate(rng.uniform(-10, 10), resample=Image.Resampling.BICUBIC)
    layer = layer.resize((int(s * scale), int(s * scale)), Image.Resampling.BICUBIC)
    off = [int(rng.uniform(-0.05, 0.05) * s + (s - layer.width) / 2) for _ in range(2)]
    img.paste(layer, tuple(off), layer)
    k = size / s  # oval half-sizes w, h around the layer's centre, scaled, then shrunk to `size`
    cx, cy = off[0] + layer.width / 2, off[1] + layer.height / 2
    box = tuple(int(round(v * k)) for v in (cx - w * scale, cy - h * scale, 2 * w * scale, 2 * h * scale))
    img = img.resize((size, size), Image.Resampling.LANCZOS)
    img = _lighting(img, rng)
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.0)))
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, rng.uniform(0, 8), (size, size, 3))
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
