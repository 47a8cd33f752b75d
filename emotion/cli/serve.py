"""`emotion serve`: serve the model over HTTP (POST /predict an image; LitServe, dynamic batching)."""

from __future__ import annotations

import argparse

from emotion.cli.common import BACKENDS, model_arg
from emotion.errors import EmotionError
from emotion.faces.detect import FACE_MODES

HELP = "serve the model over HTTP (POST /predict an image; LitServe, dynamic batching)"


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


def run(args) -> int:
    try:
        from emotion.serve import parse_bytes, serve  # here, so that the framework loads only when needed
    except ImportError as e:
        raise EmotionError(f"emotion serve needs {e.name}: pip install -e '.[serve]'") from None
    return serve(args.model, host=args.host, port=args.port, max_batch_size=args.max_batch_size,
                 batch_timeout=args.batch_timeout, workers=args.workers, runtime=args.runtime,
                 max_bytes=parse_bytes(args.max_bytes), faces=args.faces, detector=args.detector,
                 min_face_score=args.min_face_score, log_level=args.log_level, backend=args.serve_backend)
