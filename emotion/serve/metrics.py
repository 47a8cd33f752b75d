"""`GET /metrics` of `emotion serve`: Prometheus's text format (prometheus-client), gathered across the server's
processes (prometheus-client's multiprocess mode: each process adds to its own memory-mapped file under
``$PROMETHEUS_MULTIPROC_DIR``, a folder `serve()` makes and removes; a scrape merges them).

    emotion_requests_total{path, code}       HTTP requests by path and status code (401s, 408s and 503s too)
    emotion_request_seconds{path}            time from the request's arrival to its answer
    emotion_model_call_seconds               one model call (a batch: every crop of its images)
    emotion_batch_images                     images per model call
    emotion_faces_per_request                faces found (and classified) in one /predict image
    emotion_images_rejected_total{reason}    requests turned away before the model, by `requests.Refused.reason`
    emotion_model_info{model, classes, runtime, backend, version}

    m = get()                                 # None when metrics are off (--no-metrics)
    m.request("/predict", 200, 0.012)
"""

from __future__ import annotations

import os

DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
PATHS = ("/predict", "/health", "/metrics", "/", "/info", "/docs", "/openapi.json")
SECONDS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_metrics: dict[int, Metrics] = {}


def path_label(path: str) -> str:
    """A fixed set of label values: the server's routes, /static, else "other" (no label per URL)."""
    if path in PATHS:
        return path
    return "/static" if path.startswith("/static/") else "other"


class Metrics:
    """The server's metrics in one process (prometheus-client picks its multiprocess values here)."""

    def __init__(self):
        from prometheus_client import Counter, Histogram, values  # here: prometheus-client comes with the extra

        if not getattr(values.ValueClass, "_multiprocess", False):
            values.ValueClass = values.MultiProcessValue()
        self.requests = Counter("emotion_requests", "HTTP requests by path and status code", ["path", "code"],
                                registry=None)
        self.seconds = Histogram("emotion_request_seconds", "Time from a request's arrival to its answer",
                                 ["path"], buckets=SECONDS, registry=None)
        self.model = Histogram("emotion_model_call_seconds", "One model call over a batch's face crops",
                               buckets=(0.0005, 0.001, *SECONDS), registry=None)
        self.batch = Histogram("emotion_batch_images", "Images per model call",
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=None)
        self.faces = Histogram("emotion_faces_per_request", "Faces classified in one /predict image",
                               buckets=(0, 1, 2, 3, 4, 6, 8, 16, 32), registry=None)
        self.rejected = Counter("emotion_images_rejected", "Requests turned away before the model, by reason",
                                ["reason"], registry=None)
        self._children: dict = {}

    def _child(self, metric, *labels):
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def request(self, path: str, code: int, seconds: float) -> None:
        path = path_label(path)
        self._child(self.requests, path, str(code)).inc()
        self._child(self.seconds, path).observe(seconds)

    def reject(self, reason: str) -> None:
        self._child(self.rejected, reason).inc()

    def model_call(self, images: int, seconds: float) -> None:
        self.batch.observe(images)
        self.model.observe(seconds)


def get() -> Metrics | None:
    """This process's Metrics, made on first use; None when the server runs without them."""
    if not os.environ.get(DIR_ENV):
        return None
    pid = os.getpid()  # (a forked process makes its own)
    if pid not in _metrics:
        _metrics[pid] = Metrics()
    return _metrics[pid]


def exposition(info: dict[str, str]) -> bytes:
    """The text a scrape gets: every process's metrics merged, then the info metric."""
    from prometheus_client import CollectorRegistry, Info, generate_latest  # here: with the extra
    from prometheus_client.multiprocess import MultiProcessCollector  # here: with the extra

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    about = CollectorRegistry()
    Info("emotion_model", "The model served, its classes, the backend or runtime, the version",
         registry=about).info(info)
    return generate_latest(registry) + generate_latest(about)


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
