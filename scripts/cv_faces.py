"""Pooled out-of-fold scores of an `emotion cv` run on photos, split by whether a face was found (a development
aid, not part of the library): each fold's model on its own test photos, as `emotion test` frames them (largest
face, the whole photo where none is found). ``--keep`` mixes each fold's model with the model it started from
(`model.keep_init`, done after training, so one cv run of keep_init 0 gives every share). ``--min-scores`` scores
the same models at other operating points of the detector (`--min-face-score`: a face counts only from that score);
``--min-sides`` with other size floors (the smallest face kept, in pixels: `emotion.faces.detect.MIN_FACE_SIDE`).

    python scripts/cv_faces.py runs/cv-web-transfer [--keep 0,0.3,0.5,0.7,1] [--min-scores 0.3,0.5,0.7] \
        [--min-sides 0,20]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from emotion import backends


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("cv", help="an `emotion cv` output folder (cv.json, fold-<i>/)")
    p.add_argument("--keep", help="shares of the starting model's weights to mix in, e.g. 0,0.5,1 (default: none)")
    p.add_argument("--min-scores", help="detector scores a face needs, e.g. 0.3,0.5,0.7 (default: as trained)")
    p.add_argument("--min-sides", help="smallest faces kept in pixels, e.g. 0,20 (default: the detector's)")
    p.add_argument("--backend", default="tensorflow")
    args = p.parse_args()
    backends.select(args.backend)
    import numpy as np

    from emotion.config import from_dict
    from emotion.data.datamodule import EmotionDataModule
    from emotion.faces.blazeface import BlazeFaceDetector
    from emotion.faces.detect import face_inputs, make_detector
    from emotion.images import decode_image
    from emotion.metrics import score
    from emotion.modelfile import load_keras_model
    from emotion.models.surgery import mix_weights
    from emotion.predictor import Predictor

    folds = sorted(Path(args.cv).glob("fold-*"), key=lambda f: int(f.name.split("-")[1]))
    config = json.loads((folds[0] / "metrics.json").read_text())["config"]
    cfg = from_dict(config)
    keeps = [float(k) for k in args.keep.split(",")] if args.keep else [None]
    cuts = [float(t) for t in args.min_scores.split(",")] if args.min_scores else [None]
    sides = [int(s) for s in args.min_sides.split(",")] if args.min_sides else [None]
    if args.min_sides and cfg.data.detector not in (None, "blazeface"):
        raise SystemExit("--min-sides: this script sets the floor on BlazeFace only")
    detectors = {(t, s): make_detector(cfg.data.detector, t) if s is None else
                 BlazeFaceDetector(min_score=0.5 if t is None else t, min_side=s) for t in cuts for s in sides}
    rows = {(k, t, s): [] for k in keeps for t in cuts for s in sides}
    start = load_keras_model(cfg.model.init_from) if args.keep else None  # the model every fold started from
    for i, fold in enumerate(folds):
        dm = EmotionDataModule(cfg.data, seed=cfg.seed, progress=False).setup_fold(i, len(folds))
        clf = Predictor.load(str(fold / "imageclassifier.keras"), detector=cfg.data.detector)
        trained = [w.copy() for w in clf.model.get_weights()]
        images = [decode_image(path) for path in dm.test.paths]
        for (t, side), detector in detectors.items():
            inputs, found = [], []
            for image in images:
                face, x = face_inputs(image, clf.image_size, clf.color, "largest", detector, clf.margin)[0]
                inputs.append(x)
                found.append(face is not None)
            x = np.stack(inputs).astype("float32")
            for keep in keeps:
                clf.model.set_weights(trained)
                if keep is not None:
                    mix_weights(start, clf.model, keep)
                probs = clf.model.predict(x, verbose=0)
                rows[keep, t, side] += [(int(y), f, float(pr[-1]))
                                        for y, f, pr in zip(dm.test.labels, found, probs, strict=True)]
    names = clf.class_names
    print(f"{args.cv}: {len(folds)} folds, {len(next(iter(rows.values())))} photos pooled")
    print("| keep_init | min face score | min face side | faces found | balanced, faces found | balanced, no face "
          "| balanced, all |")
    print("|---|---|---|---|---|---|---|")
    for keep, t, side in rows:
        r = np.array(rows[keep, t, side])
        y, f, p_pos = r[:, 0].astype(int), r[:, 1].astype(bool), r[:, 2]
        b = [score(p_pos[m], y[m], names)["balanced_accuracy"] if m.any() else float("nan") for m in (f, ~f, f | ~f)]
        print(f"| {'as trained' if keep is None else keep} | {'default' if t is None else t} "
              f"| {'default' if side is None else side} | {f.sum()} ({f.mean():.1%}) "
              f"| {b[0]:.3f} | {b[1]:.3f} | {b[2]:.3f} |")


if __name__ == "__main__":
    main()
