"""`emotion serve`: the classifier as an HTTP service on LitServe, with dynamic batching.

    POST /predict   an image, as the raw body (Content-Type image/* or application/octet-stream) or as a
                    multipart form file (field "image"; else the first file); answers the rows
                    `emotion predict --json` prints for it, without "file": one per face, or one whole-image row
    GET  /health    200 once every inference worker has loaded the model, else 503 (readiness and liveness;
                    503 at once when a worker dies)
    GET  /          the page (`page`): a photo or the live camera, boxes and labels drawn, a table of faces
    GET  /metrics   Prometheus's text format (`metrics`), over every process of the server
    GET  /docs      OpenAPI (Swagger) page; /openapi.json the schema

The rooms: `requests` (what a request may be), `api` (the worker), `server` (the process and its routes),
`gate` (keys, CORS, counting: one ASGI middleware), `keys`, `metrics`, `page` (and static/), `deadlines` (header
and body read deadlines), `lifecycle` (processes watching one another; the exit codes).

How a request travels: the HTTP process (uvicorn, one per worker) checks it cheaply -- content type, size
(Content-Length first, then a bounded read), the image header (format, pixel count) -- and turns a bad one away
with a 4xx and a JSON ``{"detail": ...}`` before it reaches the model. The rest go, as bytes, to the inference
worker, where LitServe gathers up to ``--max-batch-size`` requests arriving within ``--batch-timeout`` s;
`EmotionAPI` decodes each (decode_request), finds its faces and classifies every crop of the batch in one model
call (predict; the face searches of a batch run in threads). An image that passed the header check but fails to
decode (a truncated file) is answered 400 on its own: the rest of its batch is not affected (LitServe would fail a whole
batch on an exception raised by decode_request, so decode errors travel as values instead).

SIGTERM drains: the HTTP processes stop accepting, finish the requests they hold, then the workers stop, and
the command exits 0. ``EMOTION_SERVE_BATCH_LOG=FILE`` makes each worker append a line per model call: "images crops
decode_ms detect_ms model_ms" (the batch's images and face crops; the worker's wall time decoding its requests,
finding and cropping their faces, and in the model: how tests and `emotion serve-bench` see the batches that formed
and where the worker's time goes).
"""

from emotion.serve.requests import parse_bytes
from emotion.serve.server import build_server, serve

__all__ = ["build_server", "parse_bytes", "serve"]
