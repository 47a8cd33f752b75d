"""The HTTP side of `emotion serve`: what a request may be, checked cheaply (content type, size, the image
header) before it is queued for the model, and the shapes of the answers.

    check_header(open("photo.jpg", "rb").read())          # raises HTTPException 400/413/415 for a bad image
"""

from __future__ import annotations

import io
import re
import warnings

from fastapi import HTTPException, Request
from PIL import Image
from pydantic import BaseModel

from emotion.errors import EmotionError
from emotion.faces.detect import FACE_MODES
from emotion.images import SUPPORTED_FORMATS

MAX_PIXELS = 50_000_000  # an image declaring more pixels is refused (413) before it is decoded
MAX_SIDE = 1280  # decoded images are shrunk to this longer side, as `emotion predict` does
RAW_TYPES = ("application/octet-stream",)
FORM_FIELDS = ("image", "file")


def parse_bytes(text: str) -> int:
    """'10MB', '512KB', '1GB', '123' -> bytes (1 MB = 1,000,000 bytes)."""
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)(GB|MB|KB|B)?", str(text).strip().upper().replace(" ", ""))
    if not m:
        raise EmotionError(f"not a size: {text!r} (e.g. 10MB, 512KB, 1000000)")
    value = int(float(m.group(1)) * {"GB": 10**9, "MB": 10**6, "KB": 10**3, "B": 1, None: 1}[m.group(2)])
    if value < 1:
        raise EmotionError(f"size must be positive, got {text!r}")
    return value


def read_faces(request: Request) -> str | None:
    """The ``?faces=`` of a request: largest, all or none (the image is a face crop: no detection)."""
    faces = request.query_params.get("faces")
    if faces is not None and faces not in FACE_MODES:
        raise HTTPException(400, f"faces must be one of {', '.join(FACE_MODES)}, got {faces[:40]!r}")
    return faces


async def read_image(request: Request, max_bytes: int) -> bytes:
    """The image bytes of a POST /predict, or an HTTPException (4xx) saying what is wrong with it."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    form = ctype == "multipart/form-data"
    if not (form or ctype.startswith("image/") or ctype in RAW_TYPES):
        raise HTTPException(415, f"unsupported content type {ctype or '(none)'}: send the image as the body with "
                                 "Content-Type image/jpeg (image/*, application/octet-stream), or as a "
                                 "multipart/form-data file field 'image'")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise HTTPException(400, "bad Content-Length")
        if int(declared) > max_bytes:
            raise HTTPException(413, f"body of {int(declared)} bytes is over the limit of {max_bytes}")
    chunks, size = [], 0
    async for chunk in request.stream():  # bounded even without (or with a false) Content-Length
        size += len(chunk)
        if size > max_bytes:
            raise HTTPException(413, f"body over the limit of {max_bytes} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if form:
        request._body = body  # starlette's own cache: form() parses what was read here
        try:
            async with request.form(max_files=4, max_fields=16) as fields:
                files = [(k, v) for k, v in fields.multi_items() if hasattr(v, "read")]
                named = [v for k, v in files if k in FORM_FIELDS]
                if not files:
                    raise HTTPException(400, "the multipart form has no file: send the image as field 'image'")
                body = await (named or [files[0][1]])[0].read()
        except HTTPException:
            raise
        except Exception as e:  # malformed multipart
            raise HTTPException(400, f"bad multipart form: {str(e).splitlines()[0][:100] if str(e) else e!r}") from None
    if not body:
        raise HTTPException(400, "empty body: send an image")
    check_header(body)
    return body


def check_header(data: bytes) -> None:
    """Format and declared size from the image header alone (no decoding): not an image -> 400, a format
    `emotion` does not read -> 415, too many pixels -> 413."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                fmt, (w, h) = img.format, img.size
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise HTTPException(413, "image too large (decompression bomb guard)") from None
    except Exception:
        raise HTTPException(400, "not an image (or a damaged one)") from None
    if fmt not in SUPPORTED_FORMATS:
        raise HTTPException(415, f"unsupported image format {fmt}; send {', '.join(SUPPORTED_FORMATS)}")
    if w * h > MAX_PIXELS:
        raise HTTPException(413, f"image of {w}x{h} pixels is over the limit of {MAX_PIXELS:,}")


class Row(BaseModel):
    """One face (or the whole image) in a /predict answer: the row `emotion predict --json` prints."""
    face: int | None
    box: list[int] | None  # x, y, w, h in the image's pixels (after shrinking to 1280 px, as predict does)
    score: float | None  # the detector's confidence
    whole_image: bool
    label: str
    p: float
    probs: dict[str, float]


class Error(BaseModel):
    detail: str
