"""A run folder whose model answers among some of another model's classes, with no retraining
(`emotion.models.surgery.restrict_classes`): the eight-emotion model's happy vs sad, for example. The new run
folder (imageclassifier.keras with its emotion.json, metrics.json) is what `scripts/ship_model.py` ships.

    python scripts/derive_model.py emotions --classes happy,sad --out runs/happy-sad-from-emotions
    emotion test --model runs/happy-sad-from-emotions/imageclassifier.keras --data ../shared/data/fer2013 \
        --classes happy,sad --json > runs/happy-sad-from-emotions/test.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from emotion import backends  # noqa: E402
from emotion.guard import check_model_file  # noqa: E402
from emotion.modelfile import find_model, read_meta, write_meta  # noqa: E402
from emotion.models.surgery import restrict_classes  # noqa: E402
from emotion.training.runfolder import MODEL_FILE, reference_inputs  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", help="the source: a run folder (imageclassifier.keras, metrics.json), a shipped model's "
                               "name (emotions) or a .keras file")
    p.add_argument("--classes", required=True, help="comma-separated class names to keep, in the new order")
    p.add_argument("--out", required=True, help="the new run folder (must not exist)")
    args = p.parse_args()
    run, out = Path(args.run), Path(args.out)
    if out.exists():
        raise SystemExit(f"{out} exists")
    source = run / MODEL_FILE if run.is_dir() else find_model(args.run)
    meta = read_meta(source)
    names = meta["class_names"]
    keep = [c.strip() for c in args.classes.split(",")]
    missing = [c for c in keep if c not in names]
    if missing:
        raise SystemExit(f"{source} has no class(es) {missing}; it has {names}")
    check_model_file(source)
    model = restrict_classes(keras.saving.load_model(source, compile=False), [names.index(c) for c in keep])
    out.mkdir(parents=True)
    target = out / MODEL_FILE
    model.save(target)
    ref = reference_inputs(model.input_shape[1:])
    meta.update({"class_names": keep, **backends.describe(),
                 "derived_from": {"model": str(source), "classes": names, "kept": keep},
                 "reference": {"inputs": meta["reference"]["inputs"],
                               "outputs": np.asarray(model.predict(ref.astype(np.float32), verbose=0)).tolist()}})
    write_meta(target, meta)
    metrics = json.loads((run / "metrics.json").read_text()) if run.is_dir() else {}
    metrics.update({"class_names": keep, "derived_from": str(source), "test": None, "val": None})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    print(f"wrote {target}: {', '.join(keep)} of {', '.join(names)}")


if __name__ == "__main__":
    main()
