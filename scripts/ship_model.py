"""Put a run's model into the package as a shipped model (emotion/shipped/NAME.keras): the network and its
`emotion.json` only, no optimizer state, plus the run's test figures and the command that trained it; and its
verified ONNX export beside it (NAME.onnx, metadata included), which `emotion predict --runtime onnx` runs.

    emotion fit --config configs/fer2013-happy-sad.yaml --backend tensorflow
    python scripts/ship_model.py runs/fer2013-happy-sad fer2013-happy-sad \
        --trained-by "emotion fit --config configs/fer2013-happy-sad.yaml --backend tensorflow"

A run trained without a test split (every photo used) records the figures of `emotion test --json` instead
(``--test-json FILE``), e.g. on FER2013's PrivateTest: the README's "Shipped models" gives the commands.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402

from emotion.guard import check_model_file  # noqa: E402
from emotion.modelfile import SHIPPED_DIR, read_meta, write_meta  # noqa: E402
from emotion.models.surgery import unwrap, with_flip_tta  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", help="a run folder (imageclassifier.keras, metrics.json)")
    p.add_argument("name", help="the shipped model's name, e.g. happy-sad")
    p.add_argument("--trained-by", required=True, help="the command that trained the run")
    p.add_argument("--test-json", help="the output of `emotion test --json` on the run's model: the test figures "
                                       "to record (default: the run's own test split)")
    args = p.parse_args()
    run = Path(args.run)
    source = run / "imageclassifier.keras"
    metrics = json.loads((run / "metrics.json").read_text())
    meta = read_meta(source)
    if "reference" not in meta:
        raise SystemExit(f"{source} carries no emotion.json with reference outputs; retrain it with this version")
    check_model_file(source)  # emotion.guard, as every load in the package
    model = keras.saving.load_model(source, compile=False)
    inner = unwrap(model)  # a flip-TTA wrapper holds the trained (compiled) network, optimizer state and all
    network = keras.Model.from_config(inner.get_config())  # uncompiled: saved without optimizer state
    network.set_weights(inner.get_weights())
    model = with_flip_tta(network) if inner is not model else network
    target = SHIPPED_DIR / f"{args.name}.keras"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp.keras")
    model.save(tmp)
    if metrics["config"]["data"].get("faces") == "given":
        meta["margin"] = None  # trained on given face crops: each detector crops with its own margin
    test = json.loads(Path(args.test_json).read_text()) if args.test_json else metrics["test"]
    if not test:
        raise SystemExit(f"{run} has no test split: give --test-json (the output of emotion test --json)")
    keys = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "n", "confusion_matrix")
    meta.update({"name": args.name, "trained_by": args.trained_by, "split": metrics["split"],
                 "test": {k: test[k] for k in keys} | ({"data": test["data"]} if args.test_json else {})})
    write_meta(tmp, meta)
    os.replace(tmp, target)
    print(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB)")
    from emotion.tools.export import export_model

    report = export_model(target, "onnx", target.with_suffix(".onnx"))
    if not report["ok"]:
        raise SystemExit(f"the ONNX export failed its check: max |dP| {report['max_abs_dp']:.2g}")
    print(f"wrote {target.with_suffix('.onnx')} ({report['bytes'] / 1e6:.1f} MB, max |dP| {report['max_abs_dp']:.2g})")


if __name__ == "__main__":
    main()
