"""Detector x margin table for a face model on a folder of class subfolders (a development aid, not part of
the library): for each setting, the share of images with a face found, accuracy and balanced accuracy on
those, and overall with the whole image scored where no face is found.

    python scripts/face_eval.py ../shared/data/web-happy-sad [--model M] [--backend tensorflow]
"""

from __future__ import annotations

import argparse
import json
import time

from emotion import backends


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data")
    p.add_argument("--model")
    p.add_argument("--backend", default="tensorflow")
    p.add_argument("--margins", default="0.1,0.15,0.25")
    args = p.parse_args()
    backends.select(args.backend)
    import numpy as np

    from emotion.data.folders import class_folders, list_files
    from emotion.faces.blazeface import BlazeFaceDetector
    from emotion.faces.detect import crop, to_model_input
    from emotion.faces.haar import HaarDetector
    from emotion.images import decode_image
    from emotion.metrics import score
    from emotion.modelfile import resolve_model
    from emotion.predictor import Predictor

    clf = Predictor.load(resolve_model(args.model))
    names = class_folders(args.data, clf.class_names)
    images, labels = [], []
    for path, label in list_files(__import__("pathlib").Path(args.data), names):
        try:
            images.append(decode_image(path))
            labels.append(label)
        except (ValueError, OSError):
            pass
    labels = np.array(labels)
    whole = clf.probabilities(np.stack([to_model_input(im, clf.image_size, clf.color) for im in images]))[:, 1]
    rows = [{"setting": "whole image", "found": 0, **{k: score(whole, labels, names)[k]
                                                     for k in ("accuracy", "balanced_accuracy")}}]
    detectors = {"blazeface 0.5": BlazeFaceDetector(min_score=0.5),
                 "blazeface 0.5, faces of any size": BlazeFaceDetector(min_score=0.5, min_side=0),
                 "blazeface 0.6": BlazeFaceDetector(min_score=0.6),
                 "blazeface 0.75": BlazeFaceDetector(min_score=0.75), "haar": HaarDetector(),
                 "haar minNeighbors 3": HaarDetector(min_neighbors=3)}
    for name, det in detectors.items():
        t = time.perf_counter()
        boxes = [(det.detect(im)[:1] or [None])[0] for im in images]
        ms = (time.perf_counter() - t) / len(images) * 1000
        found = np.array([b is not None for b in boxes])
        aligns = (False, True) if any(b is not None and b.eyes for b in boxes) else (False,)
        for margin, align in [(float(m), a) for m in args.margins.split(",") for a in aligns]:
            crops = [crop(im, b.box, clf.image_size, clf.color, margin, b.roll if align else 0.0) if b else
                     to_model_input(im, clf.image_size, clf.color) for im, b in zip(images, boxes, strict=True)]
            p_sad = clf.probabilities(np.stack(crops))[:, 1]
            on = score(p_sad[found], labels[found], names)
            overall = score(p_sad, labels, names)
            label = f"{name}, margin {margin}" + (", eyes levelled" if align else "")
            rows.append({"setting": label, "found": int(found.sum()), "ms": round(ms, 1),
                         "faces_accuracy": on["accuracy"], "faces_balanced": on["balanced_accuracy"],
                         "accuracy": overall["accuracy"], "balanced_accuracy": overall["balanced_accuracy"]})
    print(f"{len(images)} images, model {args.model or 'happy-sad (shipped)'}")
    print("| setting | faces found | ms/photo | accuracy on faces | balanced on faces | accuracy, all "
          "| balanced, all |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['setting']} | {r['found']} ({r['found'] / len(images):.1%}) | {r.get('ms', '')} | "
              f"{r.get('faces_accuracy', float('nan')):.3f} | {r.get('faces_balanced', float('nan')):.3f} | "
              f"{r['accuracy']:.3f} | {r['balanced_accuracy']:.3f} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
