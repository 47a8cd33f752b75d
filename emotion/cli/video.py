"""`emotion video`: label the faces of a video file or camera, frame by frame."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from emotion.cli.common import backend_args, check_model, limits, model_arg
from emotion.errors import EmotionError
from emotion.faces import video
from emotion.faces.detect import FACE_MODES
from emotion.files import refuse_existing, refuse_same_file
from emotion.predictor import Predictor

HELP = "label the faces of a video file or camera, frame by frame"


def add_arguments(p: argparse.ArgumentParser) -> None:
    backend_args(p)
    model_arg(p, runtime=True)
    p.add_argument("source", help="a video file, or a camera index such as 0")
    p.add_argument("--out", help="write the annotated video here (.mp4)")
    p.add_argument("--csv", help="write a row per face per frame here (frame, time, box, label, probabilities)")
    p.add_argument("--faces", choices=FACE_MODES, default=None,
                   help="all faces (default for a face model), the largest, or none (the whole frame)")
    p.add_argument("--smooth", type=float, default=0.6,
                   help="weight of a face's past in its shown probabilities, 0..0.99 (default 0.6)")
    p.add_argument("--detect-every", type=int, default=1, metavar="K",
                   help="look for faces every K-th frame and keep the boxes in between (default 1)")
    p.add_argument("--max-frames", type=int, help="stop after this many frames")
    p.add_argument("--show", action="store_true", help="a live window (where a display exists)")
    p.add_argument("--overwrite", action="store_true", help="replace existing --out/--csv files")


def check(args) -> None:
    """The source, the outputs and the settings, before any framework loads."""
    if not args.source.isdigit():
        if not Path(args.source).exists():
            raise EmotionError(f"video not found: {args.source}")
        if not Path(args.source).is_file():
            raise EmotionError(f"not a video file: {args.source}")
    for flag, target in (("--out", args.out), ("--csv", args.csv)):
        if target is None:
            continue
        if Path(target).is_dir():
            raise EmotionError(f"{flag} {target} is a folder; give a file name")
        refuse_same_file(target, [] if args.source.isdigit() else [args.source], flag)
        refuse_existing(target, args.overwrite, flag)
    if args.out and args.csv and Path(args.out).resolve() == Path(args.csv).resolve():
        raise EmotionError(f"--out and --csv are the same file: {args.out}")
    if not 0 <= args.smooth < 1:
        raise EmotionError(f"--smooth must be in [0, 1), got {args.smooth}")
    if args.detect_every < 1:
        raise EmotionError(f"--detect-every must be at least 1, got {args.detect_every}")
    if args.max_frames is not None and args.max_frames < 1:
        raise EmotionError(f"--max-frames must be at least 1, got {args.max_frames}")
    check_model(args)


def run(args) -> int:
    video.open_source(args.source).release()  # a source OpenCV cannot open fails before the model loads
    clf = Predictor.load(args.model, detector=args.detector, runtime=args.runtime, limits=limits(args),
                         min_face_score=args.min_face_score)
    faces = args.faces or ("all" if clf.face_model else "none")
    result = video.run(args.source, clf, out=args.out, csv_path=args.csv, show=args.show, faces=faces,
                       smooth=args.smooth, detect_every=args.detect_every, max_frames=args.max_frames,
                       log=lambda m: print(m, file=sys.stderr))
    print(f"{result['frames']} frames, {result['faces']} faces in {result['seconds']:.1f} s: "
          f"{result['fps']:.1f} frames/s" + written([args.out, args.csv]))
    return 0


def written(paths) -> str:
    """'; wrote A, B', of the files that exist (never of one that was not written)."""
    done = [str(p) for p in paths if p and Path(p).is_file()]
    return f"; wrote {', '.join(done)}" if done else ""
