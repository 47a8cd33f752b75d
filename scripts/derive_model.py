"""A run folder whose model is another's with no retraining: answering among some of its classes
(`--classes`, `emotion.models.surgery.restrict_classes`: the eight-emotion model's happy vs sad), and/or with its
head's prior moved (`--logit-adjust TAU --prior DIR`, `emotion.models.surgery.adjust_logits`, what `fit
--logit-adjust` does at the end of training; the prior is the number of images in each class folder of DIR, the
training split), averaged with other models of the same classes (`--average`, `emotion.models.surgery.ensemble`:
two seeds of one recipe, say), or one member of such an ensemble (`--member K`). The new
run folder (imageclassifier.keras with its emotion.json, metrics.json) is what
`scripts/ship_model.py` ships.

    python scripts/derive_model.py runs/emotions --logit-adjust 0.5 --prior ../shared/data/ferplus/train \
        --out runs/emotions-balanced

    python scripts/derive_model.py runs/emotions --average runs/emotions-seed1 --out runs/emotions-ensemble

    python scripts/derive_model.py emotions --member 0 --classes happy,sad --out runs/happy-sad-from-emotions
    emotion test --model runs/happy-sad-from-emotions/imageclassifier.keras --data ../shared/data/fer2013 \
        --classes happy,sad --json > runs/happy-sad-from-emotions/test.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

from emotion import backends  # noqa: E402
from emotion.data.folders import list_files  # noqa: E402
from emotion.images import IMAGE_SUFFIXES  # noqa: E402
from emotion.modelfile import find_model, load_keras_model, read_meta, write_meta  # noqa: E402
from emotion.models.surgery import adjust_logits, ensemble, members, restrict_classes  # noqa: E402
from emotion.training.runfolder import MODEL_FILE, reference_inputs  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", help="the source: a run folder (imageclassifier.keras, metrics.json), a shipped model's "
                               "name (emotions) or a .keras file")
    p.add_argument("--classes", help="comma-separated class names to keep, in the new order (default: all)")
    p.add_argument("--logit-adjust", type=float, default=0.0, metavar="TAU",
                   help="move the head's logits by -TAU x log(class prior) first (0: off)")
    p.add_argument("--prior", help="with --logit-adjust: a folder of class subfolders (the training split) whose "
                                   "image counts are the class prior")
    p.add_argument("--member", type=int, metavar="K", help="the source is an ensemble: take its member K alone")
    p.add_argument("--average", nargs="+", default=[], metavar="MODEL",
                   help="run folders, shipped names or .keras files of the same classes: the new model is the mean "
                        "of the source's probabilities and theirs (an ensemble)")
    p.add_argument("--out", required=True, help="the new run folder (must not exist)")
    args = p.parse_args()
    out = Path(args.out)
    if out.exists():
        raise SystemExit(f"{out} exists")
    source = model_path(args.run)
    meta = read_meta(source)
    names = meta["class_names"]
    others = [model_path(m) for m in args.average]
    for other in others:
        if read_meta(other)["class_names"] != names:
            raise SystemExit(f"{other} has classes {read_meta(other)['class_names']}, not {names}")
    keep = [c.strip() for c in args.classes.split(",")] if args.classes else names
    missing = [c for c in keep if c not in names]
    if missing:
        raise SystemExit(f"{source} has no class(es) {missing}; it has {names}")
    if args.logit_adjust and not (args.prior and Path(args.prior).is_dir()):
        raise SystemExit("--logit-adjust needs --prior DIR, a folder of class subfolders")
    model = load_keras_model(source)  # behind emotion.guard, as every load in the package
    if args.member is not None:
        parts = members(model)
        if not 0 <= args.member < len(parts):
            raise SystemExit(f"{source} has {len(parts)} member(s): --member must be in 0..{len(parts) - 1}")
        model = parts[args.member]
    if others:
        model = ensemble([model, *(load_keras_model(m) for m in others)], name=model.name)
    counts = None
    if args.logit_adjust:
        labels = [label for f, label in list_files(Path(args.prior), names) if f.suffix.lower() in IMAGE_SUFFIXES]
        counts = np.bincount(labels, minlength=len(names)).tolist()
        adjust_logits(model, counts, args.logit_adjust)
    if keep != names:
        model = restrict_classes(model, [names.index(c) for c in keep])
    out.mkdir(parents=True)
    target = out / MODEL_FILE
    model.save(target)
    ref = reference_inputs(model.input_shape[1:])
    meta.update({"class_names": keep, **backends.describe(),
                 "derived_from": {"model": str(source), "classes": names, "kept": keep,
                                  **({"member": args.member} if args.member is not None else {}),
                                  **({"averaged_with": [str(m) for m in others]} if others else {}),
                                  **({"logit_adjust": args.logit_adjust, "prior": dict(zip(names, counts, strict=True))}
                                     if counts else {})},
                 "reference": {"inputs": meta["reference"]["inputs"],
                               "outputs": np.asarray(model.predict(ref.astype(np.float32), verbose=0)).tolist()}})
    write_meta(target, meta)
    runs = [Path(r) for r in (args.run, *args.average) if Path(r).is_dir()]  # the first run folder's figures
    metrics = json.loads((runs[0] / "metrics.json").read_text()) if runs else {}
    metrics.update({"class_names": keep, "derived_from": str(source), "test": None, "val": None})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    print(f"wrote {target}: {', '.join(keep)} of {', '.join(names)}")


def model_path(name: str) -> Path:
    """A run folder's model, or a shipped model's name or a .keras file."""
    return Path(name) / MODEL_FILE if Path(name).is_dir() else find_model(name)


if __name__ == "__main__":
    main()
