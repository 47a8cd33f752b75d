"""The inference worker of `emotion serve`: LitServe's `LitAPI` around a `Predictor`, with dynamic batching
(one model call over every face crop of every request of a batch).

    api = EmotionAPI("happy-sad", max_batch_size=32)       # LitServe calls setup, decode_request, predict, ...
"""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from queue import Empty

import litserve as ls
import numpy as np
from litserve.loops.base import _SENTINEL_VALUE, _StopLoopError
from litserve.loops.simple_loops import BatchedLoop

from emotion import __version__, backends
from emotion.images import decode_image
from emotion.predictor import Predictor
from emotion.serve import metrics
from emotion.serve.lifecycle import die_with_parent
from emotion.serve.requests import MAX_SIDE


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
                 error_file: str | None = None, backend: str | None = None, min_face_score: float | None = None,
                 info_file: str | None = None):
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout,
                         loop=WaitingBatchedLoop() if max_batch_size > 1 else "auto")
        self.model_name, self.faces, self.detector, self.runtime = model, faces, detector, runtime
        self.min_face_score = min_face_score
        self.backend = backend  # picked in the worker: the HTTP processes never import a framework
        self.error_file = error_file  # where setup() leaves its one-line error for the main process
        self.info_file = info_file  # where setup() says what it serves (classes, backend), for /metrics
        self.batch_log = os.environ.get("EMOTION_SERVE_BATCH_LOG")
        self._decode_s = 0.0  # decode_request's time since the last batch (for the batch log)

    def setup(self, device):
        try:
            die_with_parent(os.getppid())  # SIGKILL'd if the main process is (no orphan holding the model)
            for sig in (signal.SIGTERM, signal.SIGINT):  # stopped by the main process (`_drain_on_sigterm`)
                signal.signal(sig, stop_only_with(os.getppid()))
            if self.runtime == "keras":
                backends.select(self.backend)
            self.clf = Predictor.load(self.model_name, faces=self.faces, detector=self.detector, runtime=self.runtime,
                                      min_face_score=self.min_face_score)
            self.pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="faces")
            self._rows([(np.zeros((64, 64, 3), np.uint8), None)])  # the detector made
            c = 1 if self.clf.color == "grayscale" else 3
            for n in (1, 2, 4, 8, 16, 32, 64):  # the batch shapes `probabilities` sends, traced/compiled now
                if n == 1 or n // 2 < self.max_batch_size:  # (more crops than that, from faces=all: on first use)
                    self.clf.probabilities(np.zeros((n, self.clf.image_size, self.clf.image_size, c), np.uint8))
            self.metrics = metrics.get()
            if self.info_file:
                about = {"classes": ",".join(map(str, self.clf.class_names)), "version": __version__,
                         "runtime": self.runtime,
                         "backend": backends.current() if self.runtime == "keras" else "onnxruntime"}
                with open(self.info_file, "w") as f:
                    json.dump(about, f)
        except Exception as e:
            if self.error_file:
                text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                with open(self.error_file, "w") as f:
                    f.write(text)
            raise

    def decode_request(self, request, **kwargs):
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
        """Rows (or the Rejected) for each (image, faces) item: the Predictor's one batching path (faces of every
        image in threads, then one model call over all their crops), timed for the batch log."""
        good = [x for x in images if not isinstance(x, Rejected)]
        t0 = time.perf_counter()
        found = self.clf.find_faces([im for im, _ in good], [faces for _, faces in good], self.pool)
        t1 = time.perf_counter()
        rows = iter(self.clf.face_rows(found))
        t2 = time.perf_counter()
        if getattr(self, "metrics", None) is not None and good:
            self.metrics.model_call(len(good), t2 - t1)
        if self.batch_log:
            with open(self.batch_log, "a") as log_file:
                log_file.write(f"{len(good)} {sum(len(f) for f in found)} {1000 * self._decode_s:.2f} "
                               f"{1000 * (t1 - t0):.2f} {1000 * (t2 - t1):.2f}\n")
        self._decode_s = 0.0
        return [x if isinstance(x, Rejected) else next(rows) for x in images]


def stop_only_with(parent: int):
    """A SIGTERM/SIGINT handler for the server's other processes: ignored while ``parent`` (the main process,
    which stops them in order) lives -- a signal sent to the whole process group (systemd, `timeout`, Ctrl+C)
    must not kill the workers or LitServe's queue manager under requests still in flight -- and exit once it
    is gone."""
    def handler(signum, frame):
        if os.getppid() != parent:
            os._exit(128 + signum)

    return handler
