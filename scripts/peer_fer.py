"""The `fer` package (the peer of issue 25: Haar faces, its 7-class mini-Xception) scored as its users run it, with
the same metrics as `emotion test` (a development aid, not part of the library; `fer` is not a dependency).

Each image goes through `FER().detect_emotions`; the largest face found is scored, and where none is found its
model runs on the whole image (`face_rectangles=[(0, 0, w, h)]`, without the 10 px it adds around a found face's
box, which on a 48 px face crop would be a flat grey frame: 0.692 against 0.504 mean recall on FER+ val's seven
classes). The prediction is the top class among its seven (a class without a folder counts as wrong), or with
``--restrict`` among the folder's classes only (happy vs sad by the larger of the two scores).
``emotion.metrics.score_classes`` makes the JSON, so it reads like `emotion test --json`. `fer` 25.10.3 needs
``pkg_resources``, gone from recent setuptools: run it in a venv of its own,

    python3 -m venv runs/peer && runs/peer/bin/pip install fer==25.10.3 --no-deps
    runs/peer/bin/pip install 'setuptools<81' requests tensorflow-cpu==2.21.0 'opencv-python-headless<5' -e .
    runs/peer/bin/python scripts/peer_fer.py ../shared/data/ferplus --split val \
        --classes angry,disgust,fear,happy,neutral,sad,surprise
    runs/peer/bin/python scripts/peer_fer.py ../shared/data/web-happy-sad --restrict
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from emotion.data.folders import is_presplit, list_files, match_classes, subdirs
from emotion.errors import EmotionError
from emotion.images import decode_image
from emotion.metrics import score_classes

PEER = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]  # fer's labels, in its order


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data", help="class folders, or a train/ val/ test/ folder of them")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--classes", help="the class folders to score, comma-separated (default: every one)")
    p.add_argument("--restrict", action="store_true", help="the top class among the folder's classes only")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    try:
        from fer.fer import FER  # 25.10.3 no longer exports it from the package
    except ImportError as e:
        sys.exit(f"peer_fer: the fer package is not importable here ({e}); see this script's docstring")
    root = Path(args.data)
    base = root / args.split if is_presplit(root) else root
    folders = sorted(args.classes.split(",")) if args.classes else subdirs(base)
    try:
        names = match_classes(folders, PEER, base)  # as `emotion test` matches a folder to a model's class
    except EmotionError as e:
        sys.exit(f"peer_fer: {e}")
    detector, whole = FER(), FER(offsets=(0, 0))
    probs, labels, found, unreadable = [], [], 0, 0
    for path, label in list_files(base, folders):
        try:
            bgr = np.ascontiguousarray(decode_image(path, "rgb", max_side=2000)[..., ::-1])
        except ValueError:
            unreadable += 1
            continue
        faces = detector.detect_emotions(bgr)
        if faces:
            found += 1
            face = max(faces, key=lambda f: f["box"][2] * f["box"][3])
        else:
            face = whole.detect_emotions(bgr, face_rectangles=[(0, 0, bgr.shape[1], bgr.shape[0])])[0]
        probs.append([face["emotions"][c] for c in PEER])
        labels.append(label)
    probs = np.asarray(probs, dtype=np.float64)
    probs = probs / np.maximum(probs.sum(1, keepdims=True), 1e-12)  # fer rounds each score to 2 decimals
    result = score_classes(probs, labels, names, PEER, restrict=args.restrict)
    result.update({"model": "fer 25.10.3 (FER(), Haar)", "data": str(base), "class_names": names,
                   "restrict": args.restrict, "faces": {"found": found, "found_share": found / max(len(labels), 1)},
                   "invalid_files": unreadable})
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{base}: n {result['n']}, accuracy {result['accuracy']:.4f}, balanced {result['balanced_accuracy']:.4f}"
              f", faces found {found} ({result['faces']['found_share']:.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
