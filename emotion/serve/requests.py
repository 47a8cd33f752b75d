"""The HTTP side of `emotion serve`: what a request may be, checked cheaply (content type, size, the image
header) before it is queued for the model, and the shapes of the answers.

    check_header(open("photo.jpg", "rb").read())          # raises HTTPException 400/413/415 for a bad image
"""

from __future__ import annotations

import asyncio
import io
import logging
import re

from fastapi import HTTPException, Request
from PIL import Image
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from emotion.errors import EmotionError
from emotion.faces.detect import FACE_MODES
from emotion.images import MAX_DECODE_PIXELS, SUPPORTED_FORMATS, decoded_size

MAX_SIDE = 1280  # decoded images are shrunk to this longer side, as `emotion predict` does
# an image that would decode to more pixels is refused (413) from its header, before it is decoded: the one limit
# of every command (a big JPEG decodes at a reduced scale, so a 48 MP JPEG passes; a 40 MP PNG does not)
MAX_PIXELS = MAX_DECODE_PIXELS
RAW_TYPES = ("application/octet-stream",)
FORM_FIELDS = ("image", "file")
log = logging.getLogger("emotion.serve")


class Refused(HTTPException):
    """A request turned away before the model, with a short ``reason`` for the metrics (a fixed set of words:
    content_type, length, too_large, timeout, gone, form, empty, not_image, format, pixels, query, decode)."""

    def __init__(self, status: int, reason: str, detail: str, headers: dict | None = None):
        super().__init__(status, detail, headers)
        self.reason = reason


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
        raise Refused(400, "query", f"faces must be one of {', '.join(FACE_MODES)}, got {faces[:40]!r}")
    return faces


async def read_image(request: Request, max_bytes: int, body_timeout: float | None = None) -> bytes:
    """The image bytes of a POST /predict, or a `Refused` (4xx) saying what is wrong with it: 408 when the
    body has not all come within ``body_timeout`` seconds; a client that went away is logged in one line."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    form = ctype == "multipart/form-data"
    if not (form or ctype.startswith("image/") or ctype in RAW_TYPES):
        raise Refused(415, "content_type", f"unsupported content type {ctype or '(none)'}: send the image as the "
                                           "body with Content-Type image/jpeg (image/*, application/octet-stream), "
                                           "or as a multipart/form-data file field 'image'")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Refused(400, "length", "bad Content-Length")
        if int(declared) > max_bytes:
            raise Refused(413, "too_large", f"body of {int(declared)} bytes is over the limit of {max_bytes}")
    chunks: list[bytes] = []
    try:
        async with asyncio.timeout(body_timeout):
            await _read_body(request, max_bytes, chunks)
    except TimeoutError:
        got = sum(map(len, chunks))
        raise Refused(408, "timeout", f"request body not received within {body_timeout:g} s ({got} of "
                                      f"{declared or 'an unknown number of'} bytes)",
                      {"Connection": "close"}) from None
    except ClientDisconnect:
        got = sum(map(len, chunks))
        client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
        log.warning("%s went away after %d of %s bytes of its request", client, got, declared or "?")
        raise Refused(499, "gone", "the client went away") from None
    body = b"".join(chunks)
    if form:
        request._body = body  # starlette's own cache: form() parses what was read here
        try:
            async with request.form(max_files=4, max_fields=16) as fields:
                files = [(k, v) for k, v in fields.multi_items() if hasattr(v, "read")]
                named = [v for k, v in files if k in FORM_FIELDS]
                if not files:
                    raise Refused(400, "form", "the multipart form has no file: send the image as field 'image'")
                body = await (named or [files[0][1]])[0].read()
        except HTTPException:
            raise
        except Exception as e:  # malformed multipart
            why = str(e).splitlines()[0][:100] if str(e) else repr(e)
            raise Refused(400, "form", f"bad multipart form: {why}") from None
    if not body:
        raise Refused(400, "empty", "empty body: send an image")
    check_header(body)
    return body


async def _read_body(request: Request, max_bytes: int, chunks: list[bytes]) -> None:
    size = 0
    async for chunk in request.stream():  # bounded even without (or with a false) Content-Length
        size += len(chunk)
        if size > max_bytes:
            raise Refused(413, "too_large", f"body over the limit of {max_bytes} bytes")
        chunks.append(chunk)


def check_header(data: bytes) -> None:
    """Format and declared size from the image header alone (no decoding): not an image -> 400, a format
    `emotion` does not read -> 415, too many pixels -> 413."""
    try:
        with Image.open(io.BytesIO(data)) as img:  # Pillow's own guard (DecompressionBombError) first
            fmt, (w, h) = img.format, decoded_size(img, (MAX_SIDE, MAX_SIDE))
    except Image.DecompressionBombError:
        raise Refused(413, "pixels", "image too large (decompression bomb guard)") from None
    except Exception:
        raise Refused(400, "not_image", "not an image (or a damaged one)") from None
    if fmt not in SUPPORTED_FORMATS:
        raise Refused(415, "format", f"unsupported image format {fmt}; send {', '.join(SUPPORTED_FORMATS)}")
    if w * h > MAX_PIXELS:
        raise Refused(413, "pixels", f"image of {w}x{h} pixels (as decoded) is over the limit of {MAX_PIXELS:,}")


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
