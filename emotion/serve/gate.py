"""The door of `emotion serve`, one ASGI middleware in front of every route: 503 once the inference worker has
died, cross-origin requests refused unless ``--cors-origin`` allows their origin, ``Authorization: Bearer KEY``
required when keys are set (except on /health, for load balancers, and the page, which asks for the key), and
every request counted in the metrics.

    LitServer(api, middlewares=[(Gate, {"keys": read_keys("keys.txt"), "cors": ("https://app.example",)})])
"""

from __future__ import annotations

import json
import time

from emotion.serve import metrics
from emotion.serve.keys import allowed
from emotion.serve.lifecycle import STATE

CORS_METHODS = b"GET, POST, OPTIONS"
CORS_HEADERS = b"Authorization, Content-Type"


def is_open(path: str) -> bool:
    """Paths that need no key: the health check and the page with its files."""
    return path in ("/health", "/") or path.startswith("/static/")


class Gate:
    def __init__(self, app, keys: tuple[bytes, ...] = (), cors: tuple[str, ...] = (), with_metrics: bool = True):
        self.app, self.keys, self.with_metrics = app, tuple(keys), with_metrics
        self.cors = {o.rstrip("/").encode() for o in cors}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        path = scope["path"]
        status = [500]
        extra: list[tuple[bytes, bytes]] = []

        async def answer(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                if extra:
                    message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            await self._route(scope, receive, answer, path, extra)
        finally:
            m = metrics.get() if self.with_metrics else None
            if m is not None:
                m.request(path, status[0], time.perf_counter() - t0)

    async def _route(self, scope, receive, send, path, extra):
        origin = auth = host = None
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value
            elif name == b"authorization":
                auth = value
            elif name == b"host":
                host = value
        if STATE.dead and path != "/metrics":
            return await refuse(send, 503, STATE.dead)
        if origin is not None and origin != f"{scope.get('scheme', 'http')}://".encode() + (host or b""):
            if origin.rstrip(b"/") not in self.cors:
                shown = origin.decode("latin-1")[:100]
                return await refuse(send, 403, f"cross-origin request from {shown} refused: start the server "
                                               f"with --cors-origin {shown} to allow it")
            extra += [(b"access-control-allow-origin", origin), (b"vary", b"Origin")]
            if scope["method"] == "OPTIONS":  # a preflight: what a page from that origin may send
                return await refuse(send, 204, None, [(b"access-control-allow-methods", CORS_METHODS),
                                                      (b"access-control-allow-headers", CORS_HEADERS),
                                                      (b"access-control-max-age", b"600")])
        if self.keys and not is_open(path) and not allowed(self.keys, auth):
            why = "a wrong API key" if auth else "no API key"
            return await refuse(send, 401, f"{why}: send the header 'Authorization: Bearer KEY'",
                                [(b"www-authenticate", b"Bearer")])
        await self.app(scope, receive, send)


async def refuse(send, status: int, detail: str | None, headers=()) -> None:
    """A JSON ``{"detail": ...}`` answer (no body for 204)."""
    body = b"" if detail is None else json.dumps({"detail": detail}).encode()
    head = [(b"content-length", str(len(body)).encode()), *headers]
    if body:
        head.append((b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})
