"""`emotion test`: score a saved model on a data folder."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from emotion.cli.common import (
    CACHE_HELP,
    backend_args,
    check_model,
    data_args,
    limits,
    model_arg,
    text,
    warn_chance,
    warn_undefined,
)
from emotion.data.cache import load_folder
from emotion.data.folders import class_folders, is_presplit, match_classes, subdirs
from emotion.errors import EmotionError
from emotion.metrics import figure, score_classes
from emotion.predictor import Predictor

HELP = "score a saved model on a data folder"


def add_arguments(p: argparse.ArgumentParser) -> None:
    backend_args(p)
    model_arg(p)
    data_args(p, required=True)
    p.add_argument("--faces", choices=["crop", "none"],
                   help="crop each image to its largest face (whole image where none is found) or not; "
                        "default: crop for a model trained on faces")
    p.add_argument("--cache", help=CACHE_HELP)
    p.add_argument("--split", choices=("train", "val", "test"),
                   help="which split of a train/ val/ test/ folder (default: test)")
    p.add_argument("--tta-flip", action="store_true",
                   help="score the mean of the model on each image and its mirror")
    p.add_argument("--restrict", action="store_true",
                   help="predict the top class among the folder's classes only (an eight-emotion model answers "
                        "happy vs sad on a happy/sad folder); default: among all the model's classes, so a face "
                        "predicted as a class with no folder counts as wrong")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")


def check(args) -> None:
    class_folders(Path(args.data), args.classes)
    check_model(args)


def run(args) -> int:
    root = Path(args.data)
    class_folders(root, args.classes)  # data errors before the model loads
    if is_presplit(root):
        base = root / (args.split or "test")
    elif args.split:
        raise EmotionError(f"--split needs a folder with train/ val/ test/ in it; {root} has class folders")
    else:
        base = root
    names = sorted(dict.fromkeys(args.classes)) if args.classes else subdirs(base)
    clf = Predictor.load(args.model, detector=args.detector, limits=limits(args), min_face_score=args.min_face_score)
    known = clf.class_names
    if any(c.startswith("class_") for c in known):  # a model without class names: the folders in order
        if len(names) != len(known):
            raise EmotionError(f"the model knows {len(known)} classes {known}, the data has {len(names)}: {names}")
        known = names
    folders, names = names, match_classes(names, known, base)
    if args.restrict and len(names) < 2:
        raise EmotionError(f"--restrict needs at least two class folders in {base}, found {names}")
    if args.tta_flip and not any(layer.name == "flip_tta" for layer in clf.model.layers):
        from emotion.models.surgery import with_flip_tta  # here, so that the framework loads only when needed

        clf.model = with_flip_tta(clf.model)
    faces = args.faces or ("crop" if clf.face_model else "none")
    folder = load_folder(base, folders, clf.image_size, clf.color, args.cache, faces=faces,
                         detector=clf.detector if faces == "crop" else None, max_image_mb=args.max_image_mb,
                         progress=False if args.quiet else None)
    for path, reason in folder.invalid:
        print(f"emotion: skipped invalid file: {text(path)}: {reason}", file=sys.stderr)
    if not len(folder):
        raise EmotionError(f"no valid images in {base}")
    probs = clf.probabilities(folder.images)

    def score(p, labels):
        return score_classes(p, labels, names, known, restrict=args.restrict)

    result = score(probs, folder.labels)
    result.update({"model": str(args.model or "happy-sad (shipped)"), "data": str(base), "class_names": names,
                   "model_classes": list(known), "restrict": bool(args.restrict),
                   "invalid_files": len(folder.invalid)})
    fmt = figure
    if faces == "crop":
        whole = set(folder.no_face)
        on_faces = np.array([p not in whole for p in folder.paths])
        result["faces"] = {"mode": "crop", "found": int(on_faces.sum()), "kept_whole": len(whole),
                           "found_share": float(on_faces.mean())}
        if on_faces.any():
            result["on_faces"] = score(probs[on_faces], folder.labels[on_faces])
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{base}: {result['n']} images ({len(folder.invalid)} invalid skipped)")
        print(f"accuracy {result['accuracy']:.4f}  balanced accuracy {result['balanced_accuracy']:.4f}  "
              f"precision {fmt(result['precision'])}  recall {fmt(result['recall'])}  f1 {fmt(result['f1'])}  "
              f"macro f1 {fmt(result['f1_macro'])}  loss {result['loss']:.4f}")
        print(f"confusion matrix (rows true {names}, columns predicted {result['predicted_classes']}): "
              f"{result['confusion_matrix']}")
        if "faces" in result:
            f = result["faces"]
            line = (f"faces found in {f['found']} of {result['n']} images ({f['found_share']:.1%}); "
                    "the rest scored whole")
            if "on_faces" in result:
                o = result["on_faces"]
                line += f"; on those {f['found']}: accuracy {o['accuracy']:.4f}, balanced {o['balanced_accuracy']:.4f}"
            print(line)
    warn_undefined(result)
    warn_chance(result)
    return 0
