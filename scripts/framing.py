"""Where the detector's box lies on a face whose training framing is known, and what each crop framing gives a
model trained on such faces (a development aid).

FER2013/FER+ faces are 48x48 crops, each framed the way the shipped models learnt faces. Each is scaled up to
96-192 px and pasted at a random place into a 640x480 frame of blurred noise; BlazeFace then looks for it. For
the faces found, the pasted square (the face's training framing) is measured in units of the box's longer side:
its side, and how far its centre lies from the box's centre. Then the model classifies the crop that
`emotion.faces.detect.crop` cuts at each margin (and with the centre moved by the measured offset), against the
face as given.

    python scripts/framing.py ../shared/data/ferplus/val --model emotions --n 1500
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from emotion import backends


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder", help="a folder of class subfolders of face crops, e.g. ferplus/val")
    p.add_argument("--model", default="emotions")
    p.add_argument("--backend", default="tensorflow")
    p.add_argument("--n", type=int, default=1500)
    p.add_argument("--margins", default="0.05,0.1,0.15,0.2,0.25,0.3,0.35")
    p.add_argument("--shifts", default="", help="centre shifts to try besides 0 and the measured one (box sides)")
    p.add_argument("--classes", help="the model's classes to score (folders of the others are left out)")
    p.add_argument("--detector", default="blazeface", choices=("blazeface", "haar"))
    p.add_argument("--rotate", type=float, default=0.0,
                   help="turn each pasted face by a random angle within +-DEG, and try crops with the eyes levelled")
    p.add_argument("--level-beyond", default="0",
                   help="eye-line tilts (degrees) beyond which a crop is turned back to that tilt, comma-separated")
    args = p.parse_args()
    backends.select(args.backend)
    from emotion.data.folders import class_folders, list_files
    from emotion.faces.detect import crop, make_detector, to_model_input
    from emotion.metrics import score
    from emotion.modelfile import resolve_model
    from emotion.predictor import Predictor

    clf = Predictor.load(resolve_model(args.model))
    names = args.classes.split(",") if args.classes else class_folders(args.folder, clf.class_names)
    assert names == clf.class_names, (names, clf.class_names)
    files = list_files(Path(args.folder), names)
    rng = np.random.default_rng(0)
    picks = rng.choice(len(files), size=min(args.n, len(files)), replace=False)
    det = make_detector(args.detector)
    given, labels, frames, windows, boxes, rolls = [], [], [], [], [], []
    for i in picks:
        path, label = files[i]
        face = np.asarray(Image.open(path).convert("RGB"))
        side = int(rng.integers(96, 193))
        big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
        frame = cv2.GaussianBlur(rng.integers(60, 200, (480, 640, 3), dtype=np.uint8), (0, 0), 3)
        x, y = int(rng.integers(0, 640 - side)), int(rng.integers(0, 480 - side))
        frame[y:y + side, x:x + side] = big
        if args.rotate:
            turn = cv2.getRotationMatrix2D((x + side / 2, y + side / 2), float(rng.uniform(-1, 1) * args.rotate), 1)
            frame = cv2.warpAffine(frame, turn, (640, 480), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        hits = [f for f in det.detect(frame)
                if x <= f.box[0] + f.box[2] / 2 <= x + side and y <= f.box[1] + f.box[3] / 2 <= y + side]
        if not hits:
            continue
        given.append(to_model_input(face, clf.image_size, clf.color))
        labels.append(label)
        frames.append(frame)
        windows.append((x, y, side))
        boxes.append(hits[0].box)
        rolls.append(hits[0].roll)
    labels = np.array(labels)
    n = len(labels)
    print(f"{n} of {len(picks)} faces found by {args.detector} (faces of 96-192 px in 640x480 frames"
          + (f", turned by up to {args.rotate} degrees)" if args.rotate else ")"))
    b = np.array(boxes, dtype=float)
    w = np.array(windows, dtype=float)
    unit = b[:, 2:].max(axis=1)
    side = w[:, 2] / unit
    dx = (w[:, 0] + w[:, 2] / 2 - (b[:, 0] + b[:, 2] / 2)) / unit
    dy = (w[:, 1] + w[:, 2] / 2 - (b[:, 1] + b[:, 3] / 2)) / unit
    aspect = b[:, 3] / b[:, 2]
    q = lambda v: " / ".join(f"{x:.3f}" for x in np.percentile(v, [25, 50, 75]))  # noqa: E731
    print(f"the face's framing in box sides (quartiles 25/50/75): side {q(side)}; centre offset x {q(dx)}, "
          f"y {q(dy)} (+ is down); box height/width {q(aspect)}")
    match = (np.median(side) - 1) / 2
    shift = float(np.median(dy))
    roll = np.abs(np.array(rolls))
    print("the eye line's tilt from the detector's eyes, degrees: |roll| percentiles 50/90/95/99 "
          + " / ".join(f"{v:.1f}" for v in np.percentile(roll, [50, 90, 95, 99])))
    print(f"the margin that reproduces the framing: {match:.3f}; the centre moved down by {shift:.3f} box sides")

    def row(name, inputs):
        s = score(clf.probabilities(np.stack(inputs)), labels, names)
        recall = np.mean([s["per_class"][c]["recall"] for c in names if s["per_class"][c]["support"]])
        print(f"| {name} | {s['accuracy']:.4f} | {recall:.4f} |")

    print(f"\n| crop ({n} faces) | accuracy | mean recall |\n|---|---|---|")
    row("the face as given (the training framing)", given)
    shifts = sorted({0.0, round(shift, 3)} | {float(v) for v in args.shifts.split(",") if v})
    levels = [None] + ([float(v) for v in args.level_beyond.split(",")] if args.rotate else [])
    for m in sorted({float(v) for v in args.margins.split(",")} | {round(match, 3)}):
        for d in shifts:
            moved = [(bx[0], bx[1] + d * max(bx[2], bx[3]), bx[2], bx[3]) for bx in boxes]
            for level in levels:
                row(f"margin {m}, centre moved {d:+.3f}" + ("" if level is None else
                                                            f", tilts beyond {level} degrees turned back"),
                    [crop(f, bx, clf.image_size, clf.color, m,
                          roll=0.0 if level is None else r - np.clip(r, -level, level))
                     for f, bx, r in zip(frames, moved, rolls, strict=True)])


if __name__ == "__main__":
    main()
