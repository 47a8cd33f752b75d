"""Pooled out-of-fold scores of an `emotion cv` run on photos, split by whether a face was found (a development
aid, not part of the library): each fold's model on its own test photos, as `emotion test` frames them (largest
face, the whole photo where none is found). ``--keep`` mixes each fold's model with the model it started from
(`model.keep_init`, done after training, so one cv run of keep_init 0 gives every share).

    python scripts/cv_faces.py runs/cv-web-transfer [--keep 0,0.3,0.5,0.7,1] [--backend tensorflow]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import backends


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("cv", help="an `emotion cv` output folder (cv.json, fold-<i>/)")
    p.add_argument("--keep", help="shares of the starting model's weights to mix in, e.g. 0,0.5,1 (default: none)")
    p.add_argument("--backend", default="tensorflow")
    args = p.parse_args()
    backends.select(args.backend)
    import numpy as np

    from emotion.config import from_dict
    from emotion.data.datamodule import EmotionDataModule, decode_image
    from emotion.faces.detect import face_inputs, make_detector
    from emotion.infer import Predictor, load_keras_model
    from emotion.metrics import score
    from emotion.models.presets import mix_weights

    folds = sorted(Path(args.cv).glob("fold-*"), key=lambda f: int(f.name.split("-")[1]))
    config = json.loads((folds[0] / "metrics.json").read_text())["config"]
    cfg = from_dict(config)
    detector = make_detector(cfg.data.detector)
    keeps = [float(k) for k in args.keep.split(",")] if args.keep else [None]
    rows = {k: [] for k in keeps}
    start = load_keras_model(cfg.model.init_from) if args.keep else None  # the model every fold started from
    for i, fold in enumerate(folds):
        dm = EmotionDataModule(cfg.data, seed=cfg.seed, progress=False).setup_fold(i, len(folds))
        clf = Predictor.load(str(fold / "imageclassifier.keras"), detector=cfg.data.detector)
        trained = [w.copy() for w in clf.model.get_weights()]
        inputs, found = [], []
        for path in dm.test.paths:
            face, x = face_inputs(decode_image(path), clf.image_size, clf.color, "largest", detector, clf.margin)[0]
            inputs.append(x)
            found.append(face is not None)
        x = np.stack(inputs).astype("float32")
        for keep in keeps:
            clf.model.set_weights(trained)
            if keep is not None:
                mix_weights(start, clf.model, keep)
            probs = clf.model.predict(x, verbose=0)
            rows[keep] += [(int(y), f, float(pr[-1])) for y, f, pr in zip(dm.test.labels, found, probs, strict=True)]
    names = clf.class_names
    print(f"{args.cv}: {len(folds)} folds, {len(rows[keeps[0]])} photos pooled")
    print("| keep_init | faces found | balanced, faces found | balanced, no face | balanced, all |")
    print("|---|---|---|---|---|")
    for keep in keeps:
        r = np.array(rows[keep])
        y, f, p_pos = r[:, 0].astype(int), r[:, 1].astype(bool), r[:, 2]
        b = [score(p_pos[m], y[m], names)["balanced_accuracy"] if m.any() else float("nan") for m in (f, ~f, f | ~f)]
        print(f"| {'as trained' if keep is None else keep} | {f.sum()} ({f.mean():.1%}) | {b[0]:.3f} | {b[1]:.3f} | {b[2]:.3f} |")


if __name__ == "__main__":
    main()
