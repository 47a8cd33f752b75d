"""The `emotion serve` process: checks before anything loads, the LitServer with its image route, the page,
/metrics and the gate (keys, CORS), and the signals (SIGTERM drains the requests in flight, then stops the
workers); a process of the server that dies stops it with a one-line reason and an exit code (`lifecycle`).

    serve("happy-sad", host="127.0.0.1", port=8000)        # runs until SIGTERM or Ctrl+C
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing as mp
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from dataclasses import dataclass
from multiprocessing.process import BaseProcess

import litserve as ls
from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse, Response
from litserve.loops.base import _SENTINEL_VALUE

from emotion import __version__, backends
from emotion.errors import EmotionError
from emotion.modelfile import RUNTIMES, resolve_model, runtime_for
from emotion.serve import metrics
from emotion.serve.api import EmotionAPI, stop_only_with
from emotion.serve.deadlines import header_deadline_protocol
from emotion.serve.gate import Gate
from emotion.serve.lifecycle import STATE, Watch, die_with_parent, watch_workers
from emotion.serve.page import add_page
from emotion.serve.requests import MAX_PIXELS, Error, Refused, Row, read_faces, read_image

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


class LitServer(ls.LitServer):
    """LitServe's server, with its queue manager process dying with the main process too (the workers and HTTP
    processes see to it themselves: `lifecycle.die_with_parent`)."""

    def _init_manager(self, num_api_servers: int):
        from multiprocessing.managers import SyncManager

        main_pid, original = os.getpid(), mp.Manager

        def manager():
            m = SyncManager(ctx=mp.get_context())
            m.start(initializer=die_with_parent, initargs=(main_pid,))
            self.manager_process = m._process  # watched by `lifecycle.Watch`
            return m

        mp.Manager = manager  # what LitServe's _init_manager calls (0.2.19), for the length of this call
        try:
            return super()._init_manager(num_api_servers)
        finally:
            mp.Manager = original

    def _start_server(self, *args, **kwargs):
        """LitServe's, keeping the HTTP processes it starts for `lifecycle.Watch` (LitServe keeps them local)."""
        started = super()._start_server(*args, **kwargs)
        self.http_processes = [w for w in started.values() if isinstance(w, BaseProcess)]
        return started


@dataclass
class Door:
    """Who may come in and how long they may take: API keys, allowed cross-origin pages, metrics on or off,
    and the read deadlines (seconds)."""
    keys: tuple[bytes, ...] = ()
    cors: tuple[str, ...] = ()
    metrics: bool = True
    timeout_keep_alive: float = 5
    header_timeout: float = 10
    body_timeout: float = 30


def build_server(api: EmotionAPI, workers: int = 1, max_bytes: int = 10_000_000, timeout: float = 30,
                 door: Door | None = None):
    """The LitServer, with LitServe's POST /predict route replaced by one that reads images (LitServe's own
    reads JSON or forms only) and answers bad ones with a 4xx before they are queued; the page at /, /metrics,
    and the gate in front of them all."""
    from litserve.server import RegularRequestHandler  # here: litserve is optional or slow to import

    door = door or Door()
    model = api.model_name or "happy-sad (shipped)"
    server = LitServer(api, accelerator="cpu", workers_per_device=workers, timeout=timeout,
                          model_metadata={"model": model, "runtime": api.runtime},
                          middlewares=[(Gate, {"keys": door.keys, "cors": door.cors, "with_metrics": door.metrics})])
    server._monitor_workers = False  # `lifecycle.Watch` watches them (LitServe's own monitor hangs on a death)
    server.app.router.routes = [r for r in server.app.router.routes if getattr(r, "path", None) != api.api_path]
    handler = RegularRequestHandler(api, server)
    add_page(server.app)
    _watch_in_http_process(server, os.getpid())

    async def predict(request: Request):
        m = metrics.get() if door.metrics else None
        try:
            faces = read_faces(request)
            image = await read_image(request, max_bytes, door.body_timeout)
        except Refused as e:
            if m is not None:
                m.reject(e.reason)
            raise
        if STATE.dead:  # the worker died while the body was read: nothing would answer it (no await from here
            raise HTTPException(503, STATE.dead)  # to its place in the response buffer, which the death empties)
        out = await handler.handle_request({"image": image, "faces": faces}, dict)
        if isinstance(out, dict):
            if m is not None:
                m.reject("decode")
            return JSONResponse({"detail": out["detail"]}, status_code=out["status"])
        if m is not None:
            m.faces.observe(sum(row["face"] is not None for row in out))
        return JSONResponse(out)

    about = {"model": model, "runtime": api.runtime, "version": __version__}

    async def scrape():
        if not door.metrics:
            return JSONResponse({"detail": "metrics are off (emotion serve --no-metrics)"}, status_code=404)
        if "classes" not in about and api.info_file:
            with contextlib.suppress(OSError, ValueError):
                with open(api.info_file) as f:
                    about.update(json.load(f))
        return Response(metrics.exposition(about), media_type=metrics.CONTENT_TYPE)

    server.app.add_api_route("/metrics", scrape, methods=["GET"], include_in_schema=False)

    body = {"schema": {"type": "string", "format": "binary"}}
    server.app.add_api_route(
        api.api_path, predict, methods=["POST"], response_model=list[Row],
        summary="Label the faces in an image",
        description="The image as the raw body (Content-Type image/jpeg, image/png, ... or "
                    "application/octet-stream) or as a multipart form file field 'image'. One row per face "
                    "(every face, for a face model, unless the server runs with --faces largest or the request asks "
                    "?faces=largest), or one "
                    "whole-image row where no face is found or the model is not a face model.",
        responses={400: {"model": Error, "description": "empty, not an image, truncated or damaged"},
                   413: {"model": Error, "description": f"body over --max-bytes, or over {MAX_PIXELS:,} pixels"},
                   415: {"model": Error, "description": "content type or image format not accepted"}},
        openapi_extra={"requestBody": {"required": True, "content": {
            "image/*": body, "application/octet-stream": body,
            "multipart/form-data": {"schema": {"type": "object", "required": ["image"],
                                               "properties": {"image": {"type": "string", "format": "binary"}}}}}}})
    return server


def _watch_in_http_process(server, main_pid: int) -> None:
    """Each HTTP process (forked by LitServe), as it starts: dies with the main process, and watches the
    inference workers (`lifecycle.watch_workers`)."""
    original = server.app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if os.getpid() != main_pid:
            die_with_parent(main_pid)
            watch_workers([p.pid for p in getattr(server, "inference_workers", [])], server)
        async with original(app) as state:
            yield state

    server.app.router.lifespan_context = lifespan


def serve(model: str | None = None, host: str = "127.0.0.1", port: int = 8000, max_batch_size: int = 32,
          batch_timeout: float = 0.005, workers: int = 1, runtime: str | None = None, max_bytes: int = 10_000_000,
          faces: str | None = None, detector: str | None = None, log_level: str = "info",
          backend: str | None = None, min_face_score: float | None = None, door: Door | None = None) -> int:
    """Run until SIGTERM or Ctrl+C; 0 after a clean stop; `lifecycle.WORKER_DIED` or `PROCESS_DIED` when one of
    its processes died. Usage errors (a port in use, a missing model) are EmotionErrors raised before anything
    loads."""
    door = door or Door()
    if host not in HOSTS:
        raise EmotionError(f"--host must be one of {', '.join(HOSTS)}, got {host}")
    if runtime is not None and runtime not in RUNTIMES:
        raise EmotionError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {runtime}")
    if max_batch_size < 1 or workers < 1 or batch_timeout < 0:
        raise EmotionError("--max-batch-size and --workers must be at least 1, --batch-timeout at least 0")
    if min(door.timeout_keep_alive, door.header_timeout, door.body_timeout) <= 0:
        raise EmotionError("--timeout-keep-alive, --header-timeout and --body-timeout must be positive")
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

    tell_who_may_come_in(host, port, door)

    scratch = tempfile.mkdtemp(prefix="emotion-serve-")
    error_file, info_file = os.path.join(scratch, "error"), os.path.join(scratch, "info.json")
    open(error_file, "w").close()
    if door.metrics:  # before any process starts: each finds the folder in its environment
        os.makedirs(os.path.join(scratch, "metrics"))
        os.environ[metrics.DIR_ENV] = os.path.join(scratch, "metrics")
    else:
        os.environ.pop(metrics.DIR_ENV, None)
    api = EmotionAPI(model, faces, detector, runtime, max_batch_size, batch_timeout, error_file, backend,
                     min_face_score, info_file)
    server = build_server(api, workers, max_bytes, door=door)
    watch = Watch(server)
    _drain_on_sigterm(server, watch)
    watch.start()
    try:
        server.run(host=host, port=port, log_level=log_level, generate_client_file=False, access_log=False,
                   timeout_keep_alive=door.timeout_keep_alive, http=header_deadline_protocol(door.header_timeout))
    except RuntimeError as e:
        if watch.reason:
            return _after_death(watch)
        if "failed to start" not in str(e):
            raise
        with open(error_file) as f:
            reason = f.read().strip()
        raise EmotionError(f"the model did not load: {reason or e}") from None
    except Exception:
        if watch.done.wait(3) or watch.reason:  # a process died under LitServe (its queue manager, say)
            return _after_death(watch)
        raise
    finally:
        os.environ.pop(metrics.DIR_ENV, None)
        shutil.rmtree(scratch, ignore_errors=True)
    if watch.reason:
        return _after_death(watch)
    return 0


def _after_death(watch: Watch) -> int:
    watch.done.wait(15)
    watch.kill_children()
    return watch.code


def tell_who_may_come_in(host: str, port: int, door: Door) -> None:
    """One line at start: who can reach the server, and whether it asks for a key."""
    where = "this machine only" if host == "127.0.0.1" else "every host that can reach this one"
    if door.keys:
        text = f"listening on {host}:{port} ({where}); {len(door.keys)} API key(s): requests need " \
               "'Authorization: Bearer KEY' (/health and the page need none)"
    elif host == "127.0.0.1":
        text = f"listening on {host}:{port} ({where}) without API keys (--api-key-file or $EMOTION_API_KEYS " \
               "to require one; --host 0.0.0.0 to listen on every interface)"
    else:
        text = f"listening on {host}:{port} ({where}) WITHOUT API keys: anyone who reaches it may use it " \
               "(--api-key-file or $EMOTION_API_KEYS)"
    cors = f"; cross-origin pages allowed: {', '.join(door.cors)}" if door.cors else \
        "; cross-origin requests refused (--cors-origin ORIGIN)"
    print(f"emotion serve: {text}{cors}", file=sys.stderr, flush=True)


def _drain_on_sigterm(server, watch: Watch | None = None) -> None:
    """SIGTERM or Ctrl+C: stop the HTTP processes first (uvicorn stops accepting and finishes the requests it
    holds, for up to DRAIN_SECONDS), then the inference workers (a stop message on their queue, after the
    requests before it), then LitServe's own shutdown; `server.run` then returns. A second Ctrl+C is
    LitServe's KeyboardInterrupt."""
    main_pid = os.getpid()
    child_handler = stop_only_with(main_pid)
    started = []

    def drain():
        if watch is not None:
            watch.stopping = True  # what stops from here on is stopped on purpose
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
