"""Decoding and checking one image: the formats Pillow reads, EXIF orientation, size and pixel bounds. Training,
`emotion test`, `predict`, `video`, `serve` and the benchmarks all decode through here; nothing here knows about
training or models.

    pixels = decode_image("photo.jpg", color="rgb")       # (h, w, 3) uint8, upright, at most 1280 px a side
    face = load_image("face.png", 48, "grayscale")         # (48, 48, 1) uint8, as the data module stores it
"""
from __future__ import annotations

import errno
import io
import os
import re
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is invalid, never silently half-grey
# Pillow's own decompression-bomb warning is replaced by the explicit pixel check in `_open` (a warnings filter
# set per call is not thread-safe, and images are decoded in threads).
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
# A damaged EXIF block costs the photo its orientation only (`_upright`), not a line on the user's terminal.
warnings.filterwarnings("ignore", message="Corrupt EXIF data", category=UserWarning, module="PIL")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")  # what a folder search picks up
SUPPORTED_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF", "MPO")
MAX_IMAGE_MB = 50  # default size limit of one image file (--max-image-mb)
# Pixels an image may decode to (after a JPEG's reduced-scale decoding, so a 48 MP JPEG passes): Pillow keeps 4
# bytes a pixel, so this bounds one decode near 120 MB (the peak memory it was chosen by: docs/security.md).
MAX_DECODE_PIXELS = 30_000_000
MB = 1_000_000
ORIENTATION = 0x0112  # the EXIF tag



def load_image(source, image_size: int, color: str = "rgb", max_image_mb: float = MAX_IMAGE_MB) -> np.ndarray:
    """Decode one image (path or bytes) to a ``(image_size, image_size, 3 or 1)`` uint8 array.

    Any Pillow-decodable JPEG/PNG/BMP/GIF/WebP/TIFF: grayscale, palette, RGBA (composited on white),
    CMYK, 16-bit (scaled to 8-bit). GIFs give their first frame. Turned upright as its EXIF Orientation says.
    Resized with bilinear filtering (antialiased when shrinking) to a square, aspect ratio not kept, as the
    seed's `image_dataset_from_directory` did.
    A path is read with `read_image_file` (a regular file of at most ``max_image_mb``); an image of more than
    ``PIL.Image.MAX_IMAGE_PIXELS`` pixels is refused from its header, before it is decoded.
    Raises ``ValueError`` with a short reason for anything else.
    """
    img = _open(source, color, (image_size, image_size), max_image_mb)
    img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return _array(img)


def decode_image(source, color: str = "rgb", max_side: int = 1280, max_image_mb: float = MAX_IMAGE_MB) -> np.ndarray:
    """Decode one image (path or bytes) at its own aspect ratio, as (H, W, 3 or 1) uint8, its longer side
    shrunk to at most ``max_side`` (enough to find and crop faces; bounds the memory a huge photo takes).
    The same decoding rules and errors as `load_image`."""
    img = _open(source, color, (max_side, max_side), max_image_mb)
    if max(img.size) > max_side:
        scale = max_side / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.Resampling.BILINEAR)
    return _array(img)


def _array(img: Image.Image) -> np.ndarray:
    arr = np.asarray(img, dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def decoded_size(img: Image.Image, draft: tuple[int, int]) -> tuple[int, int]:
    """The (width, height) an opened image (its header read, nothing decoded) will decode to: a big JPEG decodes
    at 1/2, 1/4 or 1/8 scale, no smaller than ``draft`` (Pillow's `draft`, set on ``img`` here). What
    `MAX_DECODE_PIXELS` bounds, in `decode_image`, `load_image` and the server's header check alike."""
    if img.format in ("JPEG", "MPO") and img.mode in ("RGB", "L"):
        img.draft(img.mode, draft)
    return img.size


def _open(source, color: str, draft: tuple[int, int], max_image_mb: float = MAX_IMAGE_MB) -> Image.Image:
    """Decode to a Pillow image in RGB or L; big JPEGs are decoded at a reduced DCT scale no smaller than
    ``draft``. Every failure is a ``ValueError`` with a short reason."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        data = read_image_file(source, max_image_mb)
    if not data:
        raise ValueError("empty file")
    try:
        img = Image.open(io.BytesIO(data))  # reads the header only
        fmt = img.format
        if fmt not in SUPPORTED_FORMATS:
            raise ValueError(f"unsupported image type {fmt}")
        width, height = decoded_size(img, draft)
        limit = min(Image.MAX_IMAGE_PIXELS or MAX_DECODE_PIXELS, MAX_DECODE_PIXELS)
        if width * height > limit:
            raise ValueError(f"image too large: {width}x{height} pixels (the limit is {limit})")
        img.load()
        return _to_mode(_upright(img), "L" if color == "grayscale" else "RGB")
    except ValueError as e:
        raise ValueError(_reason(e)) from None
    except Image.DecompressionBombError as e:  # Pillow's own guard, at twice the limit, in Image.open
        found = re.search(r"\((\d+) pixels\)", str(e))
        raise ValueError(f"image too large: {found.group(1) if found else 'too many'} pixels "
                         f"(the limit is {Image.MAX_IMAGE_PIXELS})") from None
    except Exception as e:  # Pillow raises many types for broken files
        raise ValueError(_reason(e)) from None


def _upright(img: Image.Image) -> Image.Image:
    """Turned as its EXIF Orientation tag says. Phones store a portrait photo sideways and tag it; every viewer
    shows it turned, and a face detector needs it upright. A damaged EXIF block is ignored."""
    try:
        if img.getexif().get(ORIENTATION, 1) in (2, 3, 4, 5, 6, 7, 8):  # else no copy of a big photo
            return ImageOps.exif_transpose(img)
    except Exception:
        pass
    return img


def _reason(e: Exception) -> str:
    text = str(e).strip()
    if "cannot identify" in text:
        return "not an image"
    return text.splitlines()[0][:80] if text else f"not a valid image ({type(e).__name__})"


def read_image_file(path, max_image_mb: float = MAX_IMAGE_MB, inside: str | Path | None = None) -> bytes:
    """The bytes of one image file, read with care: only a regular file, of at most ``max_image_mb`` MB
    (10^6 bytes). A symlink is followed only to a regular file (and with ``inside``, only to one under that
    folder); a FIFO, device, socket or folder is reported and never opened, a symlink loop is reported.
    Raises ``ValueError`` with a short reason."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ValueError("symlink loop") from None
        if os.path.islink(path):
            raise ValueError("broken symlink") from None
        raise ValueError(e.strerror or type(e).__name__) from None
    if inside is not None and not within(os.path.realpath(path), os.path.realpath(inside)):
        raise ValueError("outside the data folder (reached through a symlink)")
    if stat.S_ISDIR(st.st_mode) and os.path.islink(path):
        raise ValueError("a symlinked folder (not followed)")
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"not a regular file ({file_kind(st.st_mode)})")
    limit = int(max_image_mb * MB)
    too_big = f"file too large ({{:.1f}} MB; the limit is {max_image_mb:g} MB, --max-image-mb)"
    if st.st_size > limit:
        raise ValueError(too_big.format(st.st_size / MB))
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
                     | getattr(os, "O_BINARY", 0))
    except OSError as e:
        raise ValueError(e.strerror or type(e).__name__) from None
    try:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise ValueError("file replaced while being read")
        chunks, left = [], limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as e:
        raise ValueError(e.strerror or type(e).__name__) from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        raise ValueError(too_big.format(len(data) / MB))
    return data


def within(path: str, folder: str) -> bool:
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:  # other drive
        return False


def file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "a special file"


def _to_mode(img: Image.Image, mode: str) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img)  # 16 or 32 bits a pixel; scaled to 8 bits a band of rows at a time (bounded memory)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        out = np.empty(arr.shape, np.uint8)
        for top in range(0, arr.shape[0], 256):
            band = arr[top:top + 256].astype(np.float64)
            out[top:top + 256] = np.clip(band * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8)
        del arr
        img = Image.fromarray(out, "L")
    elif img.mode == "F":
        img = Image.fromarray(np.clip(np.asarray(img), 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return img.convert(mode)
