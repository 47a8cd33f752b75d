"""Detector recall where the faces are known to be: FER2013 test faces (48x48 grey, one face each), scaled up
to 96-192 px and pasted at random places into 640x480 frames of noise; a face counts as found when the centre
of a detected box lies inside the pasted square (a development aid).

    python scripts/detector_recall.py ../shared/data/fer2013/test --n 600
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from emotion.faces.blazeface import BlazeFaceDetector
from emotion.faces.haar import HaarDetector


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder", help="a folder of class subfolders of face crops, e.g. fer2013/test")
    p.add_argument("--n", type=int, default=600)
    args = p.parse_args()
    files = sorted(Path(args.folder).rglob("*.jpg"))
    rng = np.random.default_rng(0)
    picks = rng.choice(len(files), size=min(args.n, len(files)), replace=False)
    frames, boxes = [], []
    for i in picks:
        face = np.asarray(Image.open(files[i]).convert("RGB"))
        side = int(rng.integers(96, 193))
        face = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
        frame = rng.integers(60, 200, (480, 640, 3), dtype=np.uint8)
        frame = cv2.GaussianBlur(frame, (0, 0), 3)
        x, y = int(rng.integers(0, 640 - side)), int(rng.integers(0, 480 - side))
        frame[y:y + side, x:x + side] = face
        frames.append(frame)
        boxes.append((x, y, side, side))
    detectors = {"blazeface back 0.5": BlazeFaceDetector(), "blazeface full 0.5": BlazeFaceDetector("full"),
                 "haar": HaarDetector(), "haar minNeighbors 3": HaarDetector(min_neighbors=3)}
    print(f"{len(frames)} frames of 640x480, one known face each (FER2013 faces of 96-192 px)")
    print("| detector | faces found | false detections (boxes off the face) | ms per frame |")
    print("|---|---|---|---|")
    for name, det in detectors.items():
        det.detect(frames[0])
        found = false = 0
        t = time.perf_counter()
        results = [det.detect(f) for f in frames]
        ms = (time.perf_counter() - t) / len(frames) * 1000
        for faces, (x, y, s, _) in zip(results, boxes, strict=True):
            hits = [f for f in faces if x <= f.box[0] + f.box[2] / 2 <= x + s and y <= f.box[1] + f.box[3] / 2 <= y + s]
            found += bool(hits)
            false += len(faces) - len(hits)
        print(f"| {name} | {found} ({found / len(frames):.1%}) | {false} | {ms:.1f} |")


if __name__ == "__main__":
    main()
