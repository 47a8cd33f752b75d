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
from emotion.faces.video import class_color, draw
from emotion.files import atomic_path, refuse_same_file
from emotion.predictor import Predictor, image_files

HELP = "find the faces in images and folders and label each one"


def add_arguments(p: argparse.ArgumentParser) -> None:
    backend_args(p)
    model_arg(p, runtime=True)
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files and folders (searched recursively)")
    p.add_argument("--faces", choices=FACE_MODES,
                   help="classify every face of each image (all), the largest only, or none (the whole image); "
                        "default: all for a model trained on faces, else none")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON list, a row per face, for machines")
    fmt.add_argument("--csv", action="store_true", help="CSV, a row per face")
    p.add_argument("--annotate", metavar="DIR",
                   help="write a copy of each image with boxes and labels into DIR, at its path under the folder "
                        "given (a/x.jpg and b/x.jpg stay apart); an existing copy is replaced only with --overwrite")
    p.add_argument("--overwrite", action="store_true", help="replace annotated copies already in --annotate DIR")
    max_image_arg(p)


def check(args) -> None:
    files = image_files(args.paths)
    if not files:
        raise EmotionError("no image files in " + ", ".join(map(text, args.paths)))
    if args.annotate:
        if Path(args.annotate).exists() and not Path(args.annotate).is_dir():
            raise EmotionError(f"--annotate needs a folder; {args.annotate} is a file")
        targets = annotated_names(args.paths, Path(args.annotate))
        for f in files:
            refuse_same_file(targets[f], [f], "--annotate")
            if targets[f].exists() and not args.overwrite:
                raise EmotionError(f"{targets[f]} exists (an annotated copy of {f}); pass --overwrite to replace "
                                   "it, or another --annotate DIR")
    check_model(args)


def run(args) -> int:
    files = image_files(args.paths)  # (checked by `check`, before the model loaded)
    clf = Predictor.load(args.model, faces=args.faces, detector=args.detector, runtime=args.runtime,
                         limits=limits(args), min_face_score=args.min_face_score)
    if args.faces is None and clf.face_model:
        clf.faces = "all"  # `predict` labels every face; the API and `serve` keep one face an image by default
    names = clf.class_names
    positive = names[-1] if len(names) == 2 else None
    writer = None
    if args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(["file", "face", "x", "y", "w", "h", "score", "whole_image", "label", "p",
                         *[f"p_{c}" for c in names], "error"])
    on_image = _annotator(annotated_names(args.paths, Path(args.annotate)), names) if args.annotate else None
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


def annotated_names(paths, folder: Path) -> dict[Path, Path]:
    """Where each image's annotated copy goes: a file given goes to ``folder/<name>``, a file found under a
    folder given to ``folder/<its path under that folder>``; PNG unless the image is a JPEG or PNG. Two images
    that would land on one name (the same name in two folders given) get ``-1``, ``-2``..."""
    out, taken = {}, set()
    for p in map(Path, paths):
        for f in image_files([p]):
            rel = f.relative_to(p) if p.is_dir() else Path(f.name)
            suffix = rel.suffix.lower() if rel.suffix.lower() in (".jpg", ".jpeg", ".png") else ".png"
            target, k = folder / rel.with_suffix(suffix), 1
            while target in taken:
                target, k = folder / rel.with_name(f"{rel.stem}-{k}{suffix}"), k + 1
            taken.add(target)
            out.setdefault(f, target)
    return out


def _annotator(targets: dict[Path, Path], class_names: list[str]):
    """on_image callback of `Predictor.predict_files`: a copy of the image with boxes and labels (each class in
    its own colour, text scaled with the image) at ``targets[path]``, written under a temporary name and renamed."""
    import cv2  # here: cv2 is optional or slow to import

    def save(path, image, rows):
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.shape[-1] == 3 else \
            cv2.cvtColor(image[..., 0], cv2.COLOR_GRAY2BGR)
        for r in rows:
            box = r["box"] or (0, 0, bgr.shape[1] - 1, bgr.shape[0] - 1)
            draw(bgr, box, f"{r['label']} {r['p']:.2f}", class_color(class_names, r["label"]))
        target = targets[Path(path)]
        with atomic_path(target) as tmp:
            ok, data = cv2.imencode(target.suffix, bgr)
            if not ok:
                raise EmotionError(f"cannot encode the annotated copy of {path}")
            tmp.write_bytes(data.tobytes())

    return save
