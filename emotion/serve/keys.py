"""API keys of `emotion serve`: read once at start (``--api-key-file FILE``, one key a line, or
``EMOTION_API_KEYS``, separated by commas or white space), checked in constant time. Keys are never logged and
never reach the metrics: only how many were read is said.

    keys = read_keys("keys.txt")                           # ('k3y-0ne...', ...)
    allowed(keys, b"Bearer k3y-0ne...")                    # True
"""

from __future__ import annotations

import hmac
import os
import re
from pathlib import Path

from emotion.errors import EmotionError

ENV = "EMOTION_API_KEYS"
MIN_LENGTH = 8
KEY = re.compile(r"[\x21-\x7e]+")  # printable ASCII without spaces: what fits in an Authorization header


def read_keys(path: str | None = None, environ=os.environ) -> tuple[bytes, ...]:
    """The keys of ``path`` (one a line; blank lines and ``#`` comments skipped) and of $EMOTION_API_KEYS; an
    EmotionError for a file that cannot be read or a key that cannot be meant (too short, not printable ASCII:
    the message names the line, never the key)."""
    found: list[tuple[str, str]] = []
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise EmotionError(f"cannot read --api-key-file {path}: {getattr(e, 'strerror', None) or e}") from None
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if line and not line.startswith("#"):
                found.append((f"{path} line {n}", line))
        if not found:
            raise EmotionError(f"--api-key-file {path} holds no key (one key a line)")
    for n, key in enumerate(re.split(r"[\s,]+", environ.get(ENV, "").strip()), 1):
        if key:
            found.append((f"${ENV} key {n}", key))
    for where, key in found:
        if len(key) < MIN_LENGTH or not KEY.fullmatch(key):
            raise EmotionError(f"the API key at {where} is not usable: at least {MIN_LENGTH} printable ASCII "
                               "characters, no spaces")
    return tuple(dict.fromkeys(k.encode("ascii") for _, k in found))


def allowed(keys: tuple[bytes, ...], authorization: bytes | None) -> bool:
    """Whether an ``Authorization`` header value is ``Bearer KEY`` for one of ``keys``: every key compared, each
    in constant time (hmac.compare_digest), so the time taken says nothing of how much of a key was right."""
    if not authorization or authorization[:7].lower() != b"bearer ":
        return False
    given = authorization[7:].strip()
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(given, key)
    return ok
