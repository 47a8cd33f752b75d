"""`emotion serve`: the classifier as an HTTP service on LitServe, with dynamic batching.

    POST /predict   an image, as the raw body (Content-Type image/* or application/octet-stream) or as a
                    multipart form file (field "image"; else the first file); answers the rows
                    `emotion predict --json` prints for it, without "file": one per face, or one whole-image row
    GET  /health    200 once every inference worker has loaded the model, else 503 (readiness and liveness)
    GET  /docs      OpenAPI (Swagger) page; /openapi.json the schema

How a request travels: the HTTP process (uvicorn, one per worker) checks it cheaply -- content type, size
(Content-Length first, then a bounded read), the image header (format, pixel count) -- and turns a bad one away
with a 4xx and a JSON ``{"detail": ...}`` before it reaches the model. The rest go, as bytes, to the inference
worker, where LitServe gathers up to ``--max-batch-size`` requests arriving within ``--batch-timeout`` s;
`EmotionAPI` decodes each (decode_request), finds its faces and classifies every crop of the batch in one model
call (predict; the face searches of a batch run in threads). An image that passed the header check but fails to decode (a
truncated file) is answered 400 on its own: the rest of its batch is not affected (LitServe would fail a whole
batch on an exception raised by decode_request, so decode errors travel as values instead).

SIGTERM drains: the HTTP processes stop accepting, finish the requests they hold, then the workers stop, and
the command exits 0. ``EMOTION_SERVE_BATCH_LOG=FILE`` makes each worker append a line per model call: "images crops
decode_ms detect_ms model_ms" (the batch's images and face crops; the worker's wall time decoding its requests,
finding and cropping their faces, and in the model: how tests and `emotion serve-bench` see the batches that formed
and where the worker's time goes).
"""

from __future__ import annotations

import io
import logging
import math
import multiprocessing as mp
import os
import signal
import socket
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from queue import Empty

import litserve as ls
import numpy as np
from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from litserve.loops.base import _SENTINEL_VALUE, _StopLoopError
from litserve.loops.simple_loops import BatchedLoop
from PIL import Image
from pydantic import BaseModel

from emotion.errors import EmotionError

MAX_PIXELS = 50_000_000  # an image declaring more pixels is refused (413) before it is decoded
MAX_SIDE = 1280  # decoded images are shrunk to this longer side, as `emotion predict` does
HOSTS = ("127.0.0.1", "0.0.0.0", "::")  # what LitServe 0.2.19 accepts
RUNTIMES = ("keras", "onnx")
RAW_TYPES = ("application/octet-stream",)
FORM_FIELDS = ("image", "file")
DRAIN_SECONDS = 30  # how long SIGTERM waits for in-flight requests
log = logging.getLogger("emotion.serve")


def parse_bytes(text: str) -> int:
    """'10MB', '512KB', '1GB', '123' -> bytes (1 MB = 1,000,000 bytes)."""
    import re

    m = re.fullmatch(r"([0-9]*\.?[0-9]+)(GB|MB|KB|B)?", str(text).strip().upper().replace(" ", ""))
    if not m:
        raise EmotionError(f"not a size: {text!r} (e.g. 10MB, 512KB, 1000000)")
    value = int(float(m.group(1)) * {"GB": 10**9, "MB": 10**6, "KB": 10**3, "B": 1, None: 1}[m.group(2)])
    if value < 1:
        raise EmotionError(f"size must be positive, got {text!r}")
    return value


# ------------------------------------------------------------------------------------- the HTTP process
def read_faces(request: Request) -> str | None:
    """The ``?faces=`` of a request: largest, all or none (the image is a face crop: no detection)."""
    from emotion.faces.detect import FACE_MODES

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
    from emotion.images import SUPPORTED_FORMATS

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


# ------------------------------------------------------------------------------------- the inference worker
@dataclass
class Rejected:
    """A request found bad in the worker: answered on its own, without failing its batch."""
    status: int
    detail: str


class WaitingBatchedLoop(BatchedLoop):
    """LitServe's batched loop, gathering a batch differently: it waits (blocking) for a first request, then
    takes what else arrives within ``batch_timeout`` of it, up to ``max_batch_size``. LitServe's own
    (collate_requests, 0.2.19) polls its request queue every millisecond -- each poll a round trip to its
    manager process -- even when idle, which on a small CPU takes time from the requests. Nor does it send
    LitServe's per-request START message (a queue round trip each; the HTTP side only uses it to know which
    worker holds a request, for restart_workers, which `emotion serve` leaves off)."""

    def get_batch_requests(self, lit_api, request_queue, transport):
        payloads, timed_out, deadline = [], [], None
        limit = lit_api.request_timeout if lit_api.request_timeout not in (-1, False, None) else None
        while len(payloads) + len(timed_out) < lit_api.max_batch_size:
            wait = 1.0 if deadline is None else deadline - time.monotonic()
            try:
                item = request_queue.get(timeout=wait) if wait > 0 else request_queue.get_nowait()
            except Empty:
                break
            if item == _SENTINEL_VALUE:
                raise _StopLoopError()
            response_queue_id, uid, timestamp, x_enc = item
            if limit is not None and time.monotonic() - timestamp > limit:
                timed_out.append((response_queue_id, uid))
            else:
                payloads.append((response_queue_id, uid, x_enc))
            if deadline is None:
                deadline = time.monotonic() + lit_api.batch_timeout
        return payloads, timed_out


class EmotionAPI(ls.LitAPI):
    """Decode, find faces, one model call per batch (over every crop of every image in it), rows out."""

    def __init__(self, model: str | None = None, faces: str | None = None, detector: str | None = None,
                 runtime: str = "keras", max_batch_size: int = 32, batch_timeout: float = 0.005,
                 error_file: str | None = None, backend: str | None = None, min_face_score: float | None = None):
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout,
                         loop=WaitingBatchedLoop() if max_batch_size > 1 else "auto")
        self.model_name, self.faces, self.detector, self.runtime = model, faces, detector, runtime
        self.min_face_score = min_face_score
        self.backend = backend  # picked in the worker: the HTTP processes never import a framework
        self.error_file = error_file  # where setup() leaves its one-line error for the main process
        self.batch_log = os.environ.get("EMOTION_SERVE_BATCH_LOG")
        self._decode_s = 0.0  # decode_request's time since the last batch (for the batch log)

    def setup(self, device):
        try:
            from emotion.predictor import Predictor

            for sig in (signal.SIGTERM, signal.SIGINT):  # stopped by the main process (`_drain_on_sigterm`)
                signal.signal(sig, _stop_only_with(os.getppid()))
            if self.runtime == "keras":
                from emotion import backends

                backends.select(self.backend)
            Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # decode_image turns Pillow's warning past this into an error
            self.clf = Predictor.load(self.model_name, faces=self.faces, detector=self.detector, runtime=self.runtime,
                                      min_face_score=self.min_face_score)
            self.pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="faces")
            self._rows([(np.zeros((64, 64, 3), np.uint8), None)])  # the detector made
            c = 1 if self.clf.color == "grayscale" else 3
            for n in (1, 2, 4, 8, 16, 32, 64):  # the batch shapes `_probabilities` sends, traced/compiled now
                if n == 1 or n // 2 < self.max_batch_size:  # (more crops than that, from faces=all: on first use)
                    self.clf.probabilities(np.zeros((n, self.clf.image_size, self.clf.image_size, c), np.uint8))
        except Exception as e:
            if self.error_file:
                text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                with open(self.error_file, "w") as f:
                    f.write(text)
            raise

    def decode_request(self, request, **kwargs):
        from emotion.images import decode_image

        t0 = time.perf_counter()
        try:
            return decode_image(request["image"], "rgb", MAX_SIDE), request.get("faces")
        except ValueError as e:
            if "decompression bomb" in str(e):
                return Rejected(413, "image too large (decompression bomb guard)")
            return Rejected(400, f"cannot read image: {e}")
        finally:
            self._decode_s += time.perf_counter() - t0

    def batch(self, inputs):
        return list(inputs)

    def predict(self, x, **kwargs):
        return self._rows(x) if self.max_batch_size > 1 else self._rows([x])[0]

    def unbatch(self, output):
        return output

    def encode_response(self, output, **kwargs):
        return {"status": output.status, "detail": output.detail} if isinstance(output, Rejected) else output

    def _rows(self, images: list) -> list:
        """Rows (or the Rejected) for each (image, faces) item: faces of every image first, then one model
        call over all their crops."""
        def faces_of(x):
            return x if isinstance(x, Rejected) else self.clf.inputs(*x)

        # the images' face searches in threads, as `predict_files` does (the detectors keep one interpreter a thread)
        t0 = time.perf_counter()
        found = list(self.pool.map(faces_of, images)) if len(images) > 1 else [faces_of(x) for x in images]
        crops = [inp for f in found if not isinstance(f, Rejected) for _, inp in f]
        t1 = time.perf_counter()
        probs = iter(self._probabilities(np.stack(crops)) if crops else [])
        if self.batch_log:
            t2 = time.perf_counter()
            with open(self.batch_log, "a") as log_file:
                log_file.write(f"{sum(not isinstance(f, Rejected) for f in found)} {len(crops)} "
                               f"{1000 * self._decode_s:.2f} {1000 * (t1 - t0):.2f} {1000 * (t2 - t1):.2f}\n")
        self._decode_s = 0.0
        return [f if isinstance(f, Rejected) else
                [self.clf._face_row(face, i, next(probs)) for i, (face, _) in enumerate(f)] for f in found]


    def _probabilities(self, crops: np.ndarray) -> np.ndarray:
        """`Predictor.probabilities`, which pads a batch to the next power of two, over chunks that waste
        little: 31 crops go as one call (padded to 32), 17 as 16 + 1 rather than padded to 32."""
        out, start = [], 0
        while start < len(crops):
            left = len(crops) - start
            n = left if left <= 64 and 2 ** math.ceil(math.log2(left)) <= 1.25 * left else \
                min(64, 2 ** int(math.log2(left)))
            out.append(self.clf.probabilities(crops[start:start + n]))
            start += n
        return np.concatenate(out)


# ------------------------------------------------------------------------------------- the server
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
    from litserve.server import RegularRequestHandler

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
    import tempfile

    if host not in HOSTS:
        raise EmotionError(f"--host must be one of {', '.join(HOSTS)}, got {host}")
    if runtime is not None and runtime not in RUNTIMES:
        raise EmotionError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {runtime}")
    if max_batch_size < 1 or workers < 1 or batch_timeout < 0:
        raise EmotionError("--max-batch-size and --workers must be at least 1, --batch-timeout at least 0")
    from emotion.modelfile import resolve_model, runtime_for

    resolve_model(model, runtime)  # the model file, checked before anything loads
    runtime = runtime_for(model, runtime)
    if runtime == "keras":
        from emotion import backends

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


def _stop_only_with(parent: int):
    """A SIGTERM/SIGINT handler for the server's other processes: ignored while ``parent`` (the main process,
    which stops them in order) lives -- a signal sent to the whole process group (systemd, `timeout`, Ctrl+C)
    must not kill the workers or LitServe's queue manager under requests still in flight -- and exit once it
    is gone."""
    def handler(signum, frame):
        if os.getppid() != parent:
            os._exit(128 + signum)

    return handler


def _drain_on_sigterm(server) -> None:
    """SIGTERM or Ctrl+C: stop the HTTP processes first (uvicorn stops accepting and finishes the requests it
    holds, for up to DRAIN_SECONDS), then the inference workers (a stop message on their queue, after the
    requests before it), then LitServe's own shutdown; `server.run` then returns. A second Ctrl+C is
    LitServe's KeyboardInterrupt."""
    main_pid = os.getpid()
    child_handler = _stop_only_with(main_pid)
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
