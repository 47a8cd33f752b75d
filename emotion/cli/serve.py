"""`emotion serve`: serve the model over HTTP (POST /predict an image; LitServe, dynamic batching), with a page
at /, Prometheus metrics at /metrics, API keys and CORS (docs/serving.md)."""

from __future__ import annotations

import argparse

from emotion.cli.common import BACKENDS, model_arg
from emotion.errors import EmotionError
from emotion.faces.detect import FACE_MODES

HELP = "serve the model over HTTP (POST /predict an image; LitServe, dynamic batching; a page at /)"
EPILOG = ("exit codes: 0 stopped by SIGTERM or Ctrl+C; 2 bad usage, told in one line; 3 an internal error; "
          "4 an inference worker died; 5 the HTTP process or LitServe's queue manager died (a supervisor restarts it)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    # (not `backend`: main() would pick it, importing the framework, in this process; the workers pick it)
    p.add_argument("--backend", dest="serve_backend", choices=BACKENDS,
                   help="Keras backend of the inference workers (default: $KERAS_BACKEND, else Keras's default)")
    model_arg(p, runtime=True)
    p.add_argument("--faces", choices=FACE_MODES,
                   help="the largest face, all faces, or none (the whole image); default: largest for a face model")
    p.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1", "0.0.0.0", "::"],
                   help="interface to listen on (default 127.0.0.1; 0.0.0.0 for every one)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch-size", type=int, default=32,
                   help="requests gathered into one model call (1: no batching; default 32)")
    p.add_argument("--batch-timeout", type=float, default=0.005,
                   help="seconds a batch waits to fill (default 0.005)")
    p.add_argument("--workers", type=int, default=1, help="inference processes, each with the model (default 1)")
    p.add_argument("--max-bytes", default="10MB", help="largest request body accepted (default 10MB)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--api-key-file", metavar="FILE",
                   help="API keys, one a line: requests then need 'Authorization: Bearer KEY' (/health and the page "
                        "need none); also $EMOTION_API_KEYS (comma-separated)")
    p.add_argument("--cors-origin", metavar="ORIGIN", action="append", default=[],
                   help="a page origin allowed to call the server from a browser (e.g. https://app.example; "
                        "repeatable); other cross-origin requests are refused (403)")
    p.add_argument("--no-metrics", action="store_true", help="no GET /metrics (Prometheus), nothing counted")
    p.add_argument("--timeout-keep-alive", type=float, default=5,
                   help="seconds an idle keep-alive connection is kept (default 5)")
    p.add_argument("--header-timeout", type=float, default=10,
                   help="seconds a client has to send a request's headers, else 408 (default 10)")
    p.add_argument("--body-timeout", type=float, default=30,
                   help="seconds a client has to send a request's body, else 408 (default 30)")
    if p.epilog is None:
        p.epilog = EPILOG


def check(args) -> None:
    """The keys and origins, read before anything loads (the keys are never printed)."""
    try:
        from emotion.serve.keys import read_keys  # here: emotion.serve imports LitServe
    except ImportError as e:
        raise EmotionError(f"emotion serve needs {e.name}: pip install -e '.[serve]'") from None
    args.api_keys = read_keys(args.api_key_file)
    for origin in args.cors_origin:
        if origin != "null" and not (origin.startswith(("http://", "https://")) and origin.count("/") == 2):
            raise EmotionError(f"--cors-origin takes an origin such as https://app.example:8443 (scheme, host, "
                               f"port; no path), got {origin!r}")


def run(args) -> int:
    try:
        from emotion.serve import parse_bytes, serve  # here, so that the framework loads only when needed
        from emotion.serve.server import Door  # here, with it
    except ImportError as e:
        raise EmotionError(f"emotion serve needs {e.name}: pip install -e '.[serve]'") from None
    if not hasattr(args, "api_keys"):
        check(args)
    door = Door(keys=args.api_keys, cors=tuple(args.cors_origin), metrics=not args.no_metrics,
                timeout_keep_alive=args.timeout_keep_alive, header_timeout=args.header_timeout,
                body_timeout=args.body_timeout)
    return serve(args.model, host=args.host, port=args.port, max_batch_size=args.max_batch_size,
                 batch_timeout=args.batch_timeout, workers=args.workers, runtime=args.runtime,
                 max_bytes=parse_bytes(args.max_bytes), faces=args.faces, detector=args.detector,
                 min_face_score=args.min_face_score, log_level=args.log_level, backend=args.serve_backend,
                 door=door)
