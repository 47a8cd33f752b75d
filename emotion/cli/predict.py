"""`emotion predict`: find the faces in images and folders and label each one."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

from emotion.cli.common import backend_args, check_model, limits, max_image_arg, model_arg, text
from emotion.errors import EmotionError
from emotion.faces.detect import FACE_MODES
from emotion.faces.video import COLORS, draw
from emotion.predictor import Predictor, image_files

HELP = "find the faces in images and folders and label each one"


def add_arguments(p: argparse.ArgumentParser) -> None:
    backend_args(p)
    model_arg(p, runtime=True)
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files and folders (searched recursively)")
    p.add_argument("--faces", choices=FACE_MODES,
                   help="classify the largest face of each image, all faces, or none (the whole image); "
                        "default: largest for a model trained on faces, else none")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON list, a row per face, for machines")
    fmt.add_argument("--csv", action="store_true", help="CSV, a row per face")
    p.add_argument("--annotate", metavar="DIR", help="write a copy of each image with boxes and labels into DIR")
    max_image_arg(p)


def check(args) -> None:
    image_files(args.paths)
    check_model(args)


def run(args) -> int:
    files = image_files(args.paths)  # every path checked before the model loads
    if not files:
        raise EmotionError("no image files in " + ", ".join(args.paths))
    if args.annotate:
        if Path(args.annotate).exists() and not Path(args.annotate).is_dir():
            raise EmotionError(f"--annotate needs a folder; {args.annotate} is a file")
        Path(args.annotate).mkdir(parents=True, exist_ok=True)
    clf = Predictor.load(args.model, faces=args.faces, detector=args.detector, runtime=args.runtime,
                         limits=limits(args), min_face_score=args.min_face_score)
    names = clf.class_names
    positive = names[-1] if len(names) == 2 else None
    writer = None
    if args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(["file", "face", "x", "y", "w", "h", "score", "whole_image", "label", "p",
                         *[f"p_{c}" for c in names], "error"])
    on_image = _annotator(Path(args.annotate)) if args.annotate else None
    counts = {"images": 0, "faces": 0, "whole": 0, "errors": 0}
    t0 = time.perf_counter()
    first = True
    if args.json:
        print("[", end="")
    for row in clf.predict_files(files, on_image=on_image, max_image_mb=args.max_image_mb):
        if "error" in row:
            counts["errors"] += 1
            print(f"emotion: error: cannot read image {text(row['file'])}: {row['error']}", file=sys.stderr)
        else:
            counts["faces" if not row["whole_image"] else "whole"] += 1
            counts["images"] += row["face"] in (0, None)
        if args.json:
            print(("" if first else ",") + "\n  " + json.dumps(row), end="")
        elif writer:
            box = row.get("box") or [""] * 4
            probs = row.get("probs") or {}
            writer.writerow([row["file"], "" if row.get("face") is None else row["face"], *box,
                             "" if row.get("score") is None else row["score"], row.get("whole_image", ""),
                             row.get("label", ""), row.get("p", ""), *[probs.get(c, "") for c in names],
                             row.get("error", "")])
        elif "error" not in row:
            where = "whole image" if row["whole_image"] else f"face {row['face']} {row['box']}"
            extra = f"P({positive})={row['probs'][positive]:.4f}" if positive else f"P={row['p']:.4f}"
            print(f"{text(row['file'])}\t{where}\t{row['label']}\t{extra}")
        first = False
        sys.stdout.flush()
    if args.json:
        print("\n]")
    seconds = time.perf_counter() - t0
    if counts["images"]:  # (an unreadable file alone gets its one error line, nothing more)
        print(f"{counts['images']} image(s): {counts['faces']} face(s), {counts['whole']} scored whole (no face "
              f"found or --faces none), {counts['errors']} unreadable; {counts['images'] / max(seconds, 1e-9):.1f} "
              f"images/s", file=sys.stderr)
    return 2 if counts["errors"] else 0  # bad input, though every readable image got its rows


def _annotator(folder: Path):
    """on_image callback of `Predictor.predict_files`: a copy of the image with boxes and labels, in ``folder``,
    under the image's name (a free name is picked rather than overwrite a file)."""
    import cv2  # here: cv2 is optional or slow to import

    def save(path, image, rows):
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.shape[-1] == 3 else \
            cv2.cvtColor(image[..., 0], cv2.COLOR_GRAY2BGR)
        for i, r in enumerate(rows):
            box = r["box"] or (0, 0, bgr.shape[1] - 1, bgr.shape[0] - 1)
            draw(bgr, box, f"{r['label']} {r['p']:.2f}", COLORS[i % len(COLORS)])
        suffix = Path(path).suffix.lower() if Path(path).suffix.lower() in (".jpg", ".jpeg", ".png") else ".png"
        target = folder / f"{Path(path).stem}{suffix}"
        k = 1
        while target.exists():
            target = folder / f"{Path(path).stem}-{k}{suffix}"
            k += 1
        cv2.imwrite(str(target), bgr)

    return save
