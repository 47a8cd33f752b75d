"""The `emotion serve` process: checks before anything loads, the LitServer with its image route, and the
signals (SIGTERM drains the requests in flight, then stops the workers).

    serve("happy-sad", host="127.0.0.1", port=8000)        # runs until SIGTERM or Ctrl+C
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import socket
import tempfile
import threading

import litserve as ls
from fastapi import Request
from fastapi.responses import JSONResponse
from litserve.loops.base import _SENTINEL_VALUE

from emotion import backends
from emotion.errors import EmotionError
from emotion.modelfile import RUNTIMES, resolve_model, runtime_for
from emotion.serve.api import EmotionAPI, stop_only_with
from emotion.serve.requests import MAX_PIXELS, Error, Row, read_faces, read_image

HOSTS = ("127.0.0.1", "0.0.0.0", "::")  # what LitServe 0.2.19 accepts
DRAIN_SECONDS = 30  # how long SIGTERM waits for in-flight requests
log = logging.getLogger("emotion.serve")


def check_port(host: str, port: int) -> None:
    """A one-line error now, before any model loads, if ``host:port`` cannot be listened on."""
    if not 1024 <= port <= 65535:
        raise EmotionError(f"--port must be in 1024..65535, got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            s.bind((host, port))
        except OSError as e:
            raise EmotionError(f"cannot listen on {host} port {port}: {e.strerror or e}") from None


def build_server(api: EmotionAPI, workers: int = 1, max_bytes: int = 10_000_000, timeout: float = 30):
    """The LitServer, with LitServe's POST /predict route replaced by one that reads images (LitServe's own
    reads JSON or forms only) and answers bad ones with a 4xx before they are queued."""
    from litserve.server import RegularRequestHandler  # here: litserve is optional or slow to import

    server = ls.LitServer(api, accelerator="cpu", workers_per_device=workers, timeout=timeout,
                          model_metadata={"model": api.model_name or "happy-sad (shipped)", "runtime": api.runtime})
    server.app.router.routes = [r for r in server.app.router.routes if getattr(r, "path", None) != api.api_path]
    handler = RegularRequestHandler(api, server)

    async def predict(request: Request):
        faces = read_faces(request)
        image = await read_image(request, max_bytes)
        out = await handler.handle_request({"image": image, "faces": faces}, dict)
        if isinstance(out, dict):
            return JSONResponse({"detail": out["detail"]}, status_code=out["status"])
        return JSONResponse(out)

    body = {"schema": {"type": "string", "format": "binary"}}
    server.app.add_api_route(
        api.api_path, predict, methods=["POST"], response_model=list[Row],
        summary="Label the faces in an image",
        description="The image as the raw body (Content-Type image/jpeg, image/png, ... or "
                    "application/octet-stream) or as a multipart form file field 'image'. One row per face "
                    "(the largest only, for a face model, unless the server runs with --faces all), or one "
                    "whole-image row where no face is found or the model is not a face model.",
        responses={400: {"model": Error, "description": "empty, not an image, truncated or damaged"},
                   413: {"model": Error, "description": f"body over --max-bytes, or over {MAX_PIXELS:,} pixels"},
                   415: {"model": Error, "description": "content type or image format not accepted"}},
        openapi_extra={"requestBody": {"required": True, "content": {
            "image/*": body, "application/octet-stream": body,
            "multipart/form-data": {"schema": {"type": "object", "required": ["image"],
                                               "properties": {"image": {"type": "string", "format": "binary"}}}}}}})
    return server


def serve(model: str | None = None, host: str = "127.0.0.1", port: int = 8000, max_batch_size: int = 32,
          batch_timeout: float = 0.005, workers: int = 1, runtime: str | None = None, max_bytes: int = 10_000_000,
          faces: str | None = None, detector: str | None = None, log_level: str = "info",
          backend: str | None = None, min_face_score: float | None = None) -> int:
    """Run until SIGTERM or Ctrl+C; 0 after a clean stop. Usage errors (a port in use, a missing model) are
    EmotionErrors raised before anything loads."""
    if host not in HOSTS:
        raise EmotionError(f"--host must be one of {', '.join(HOSTS)}, got {host}")
    if runtime is not None and runtime not in RUNTIMES:
        raise EmotionError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {runtime}")
    if max_batch_size < 1 or workers < 1 or batch_timeout < 0:
        raise EmotionError("--max-batch-size and --workers must be at least 1, --batch-timeout at least 0")
    resolve_model(model, runtime)  # the model file, checked before anything loads
    runtime = runtime_for(model, runtime)
    if runtime == "keras":
        if backend and backend not in backends.installed():
            raise EmotionError(f"backend {backend!r} is not installed here: pip install -e '.[{backend}]'")
    else:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise EmotionError("--runtime onnx needs onnxruntime: pip install -e '.[serve]'") from None
    check_port(host, port)

    fd, error_file = tempfile.mkstemp(prefix="emotion-serve-", suffix=".err")
    os.close(fd)
    api = EmotionAPI(model, faces, detector, runtime, max_batch_size, batch_timeout, error_file, backend,
                     min_face_score)
    server = build_server(api, workers, max_bytes)
    _drain_on_sigterm(server)
    try:
        server.run(host=host, port=port, log_level=log_level, generate_client_file=False, access_log=False)
    except RuntimeError as e:
        if "failed to start" not in str(e):
            raise
        with open(error_file) as f:
            reason = f.read().strip()
        raise EmotionError(f"the model did not load: {reason or e}") from None
    finally:
        os.unlink(error_file)
    return 0


def _drain_on_sigterm(server) -> None:
    """SIGTERM or Ctrl+C: stop the HTTP processes first (uvicorn stops accepting and finishes the requests it
    holds, for up to DRAIN_SECONDS), then the inference workers (a stop message on their queue, after the
    requests before it), then LitServe's own shutdown; `server.run` then returns. A second Ctrl+C is
    LitServe's KeyboardInterrupt."""
    main_pid = os.getpid()
    child_handler = stop_only_with(main_pid)
    started = []

    def drain():
        http = [p for p in mp.active_children() if p.name.startswith("LitServer-")]
        for p in http:
            os.kill(p.pid, signal.SIGTERM)
        for p in http:
            p.join(DRAIN_SECONDS + 5)
        workers = list(getattr(server, "inference_workers", []))
        server.inference_workers = []  # LitServe's monitor must not take their exit for a crash (and shut down)
        for queue in server.litapi_request_queues.values():
            for _ in workers:
                queue.put(_SENTINEL_VALUE)
        for w in workers:
            w.join(10)
            if w.is_alive():
                w.kill()
                w.join(5)
        if server._shutdown_event is not None:
            server._shutdown_event.set()

    def on_stop(signum, frame):
        if os.getpid() != main_pid:  # a forked child (uvicorn's process, LitServe's manager) kept this handler
            return child_handler(signum, frame)
        if started:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        started.append(signum)
        log.warning("%s: finishing the requests in flight, then stopping", signal.Signals(signum).name)
        threading.Thread(target=drain, name="emotion-drain", daemon=True).start()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
