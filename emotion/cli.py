"""The `emotion` command. Keras is imported only after `--backend` has set `KERAS_BACKEND`.

    emotion fit --data ../shared/data/web-happy-sad --out runs/jax --backend jax
    emotion test --model runs/jax/imageclassifier.keras --data ../shared/data/web-happy-sad
    emotion predict --model runs/jax/imageclassifier.keras face.jpg [--json]
    emotion clean --data DIR [--quarantine DIR]
    emotion synth DIR

Errors a user can fix print one line and exit 2; set EMOTION_DEBUG=1 for tracebacks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .config import PRECISIONS, parse_fractions, parse_names
from .errors import EmotionError


# --------------------------------------------------------------------------------------------- parser
def _backend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=["jax", "tensorflow", "torch"],
                   help="Keras backend (default: $KERAS_BACKEND, else Keras's default)")


def _data_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--data", required=required, help="folder of class subfolders, or of train/ val/ test/")
    p.add_argument("--classes", type=parse_names, help="comma-separated subset of class folders (default: all)")


def _fit_args(p: argparse.ArgumentParser) -> None:
    """Flags that override the config; None means 'keep the config's value'."""
    _data_args(p)
    p.add_argument("--config", help="YAML settings file (flags override it)")
    p.add_argument("--out", help="run folder (default: models/)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--image-size", type=int)
    p.add_argument("--color", choices=["rgb", "grayscale"])
    p.add_argument("--split", type=parse_fractions, help="train,val,test fractions (default 0.7,0.2,0.1)")
    p.add_argument("--seed", type=int)
    p.add_argument("--preset", help="model preset (default: seed)")
    p.add_argument("--lr", type=float, help="learning rate (default 1e-3)")
    p.add_argument("--lr-schedule", choices=["constant", "cosine"])
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--precision", choices=PRECISIONS,
                   help="Keras dtype policy (default float32); mixed_bfloat16 uses AMX/bf16 units where the CPU has them")
    p.add_argument("--early-stopping", type=int, metavar="PATIENCE", help="stop after PATIENCE epochs w/o val_loss gain")
    p.add_argument("--restore-best", action="store_true", default=None, help="keep the weights of the best val_loss epoch")
    p.add_argument("--tta-flip", action="store_true", default=None,
                   help="after training, save and test the mean prediction of each image and its mirror")
    p.add_argument("--deterministic", action="store_true", default=None, help="backend determinism switches")
    p.add_argument("--cache", help="decoded-image cache folder, or 'off' (default ~/.cache/emotion)")
    p.add_argument("--quiet", action="store_true", help="one line per epoch instead of progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emotion", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fit", help="train, test and save a run folder")
    _backend_args(p)
    _fit_args(p)

    p = sub.add_parser("cv", help="K-fold cross-validation: mean ± std of every test metric")
    _backend_args(p)
    _fit_args(p)
    p.add_argument("--folds", type=int, default=5)

    p = sub.add_parser("data", help="import a data set as image folders")
    p.add_argument("dataset", choices=["fer2013"], help="fer2013: the official Kaggle CSV (emotion,pixels,Usage)")
    p.add_argument("csv", help="the CSV file")
    p.add_argument("out", help="new folder; gets train/ val/ test/ with one subfolder per class")
    p.add_argument("--classes", type=parse_names, help="keep only these emotions, e.g. happy,sad")

    p = sub.add_parser("test", help="score a saved model on a data folder")
    _backend_args(p)
    p.add_argument("--model", required=True, help="a .keras file")
    _data_args(p, required=True)
    p.add_argument("--split", choices=("train", "val", "test"),
                   help="which split of a train/ val/ test/ folder (default: test)")
    p.add_argument("--tta-flip", action="store_true",
                   help="score the mean of the model on each image and its mirror")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")

    p = sub.add_parser("predict", help="label images with a saved model")
    _backend_args(p)
    p.add_argument("--model", required=True, help="a .keras file")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--json", action="store_true", help="one JSON list for machines")

    p = sub.add_parser("clean", help="list (and optionally quarantine) files that are not valid images")
    _data_args(p, required=True)
    p.add_argument("--quarantine", help="move invalid files here, keeping their relative paths")

    p = sub.add_parser("synth", help="draw a deterministic synthetic happy/sad face set")
    p.add_argument("out", help="folder to create (happy/ and sad/ inside)")
    p.add_argument("--per-class", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=128)

    p = sub.add_parser("bench", help="time training and inference under each backend (bench.md/.json/.png)")
    from .bench import add_arguments

    add_arguments(p)

    p = sub.add_parser("parity", help="train under every backend from the same weights and compare (parity.md)")
    from . import parity

    parity.add_arguments(p)

    p = sub.add_parser("export", help="export a .keras (SavedModel, ONNX, LiteRT, OpenVINO, torch) and verify it")
    _backend_args(p)
    from . import export

    export.add_arguments(p)
    return parser


# --------------------------------------------------------------------------------------------- commands
def _config(args):
    from .config import load_config

    overrides = {
        "seed": args.seed, "data.data": args.data, "data.classes": args.classes, "data.batch_size": args.batch_size,
        "data.image_size": args.image_size, "data.color": args.color, "data.split": args.split,
        "data.cache": args.cache, "model.preset": args.preset, "model.learning_rate": args.lr,
        "trainer.epochs": args.epochs, "trainer.out": args.out, "trainer.lr_schedule": args.lr_schedule,
        "trainer.early_stopping": args.early_stopping, "trainer.restore_best": args.restore_best,
        "trainer.deterministic": args.deterministic, "trainer.verbose": 2 if args.quiet else None,
        "model.label_smoothing": args.label_smoothing, "trainer.tta_flip": args.tta_flip,
        "model.precision": args.precision,
    }
    return load_config(args.config, overrides)


def cmd_fit(args) -> int:
    cfg = _config(args)
    from .run import fit_run

    metrics = fit_run(cfg)
    t = metrics["test"]
    if t:
        print(f"test: accuracy {t['accuracy']:.4f}  precision {t['precision']:.4f}  recall {t['recall']:.4f}  "
              f"f1 {t['f1']:.4f}  (n={t['n']})")
    print(f"run folder: {cfg.trainer.out}")
    return 0


def cmd_cv(args) -> int:
    cfg = _config(args)
    from .cv import cv_run

    result = cv_run(cfg, args.folds)
    for m, v in result["summary"].items():
        print(f"{m}: {v['mean']:.4f} ± {v['std']:.4f}")
    print(f"cv folder: {cfg.trainer.out} (cv.md, cv.json, fold-*/)")
    return 0


def cmd_data(args) -> int:
    from .fer2013 import import_csv

    result = import_csv(args.csv, args.out, args.classes)
    for line in result["malformed"][:20]:
        print(f"malformed: {line}", file=sys.stderr)
    if len(result["malformed"]) > 20:
        print(f"... and {len(result['malformed']) - 20} more malformed rows", file=sys.stderr)
    for split, counts in result["written"].items():
        print(f"{split}: {sum(counts.values())} images {counts}")
    print(f"skipped {len(result['malformed'])} malformed row(s); wrote {args.out}")
    return 0


def cmd_test(args) -> int:
    from .data import class_folders, is_presplit, load_folder
    from .infer import Predictor
    from .metrics import score

    clf = Predictor.load(args.model)
    root = Path(args.data)
    classes = args.classes
    if classes is None and not any(c.startswith("class_") for c in clf.class_names):
        classes = clf.class_names
    names = class_folders(root, classes)
    if len(names) != len(clf.class_names):
        raise EmotionError(f"the model knows {len(clf.class_names)} classes {clf.class_names}, "
                           f"the data has {len(names)}: {names}")
    if is_presplit(root):
        base = root / (args.split or "test")
    elif args.split:
        raise EmotionError(f"--split needs a folder with train/ val/ test/ in it; {root} has class folders")
    else:
        base = root
    if args.tta_flip and not any(layer.name == "flip_tta" for layer in clf.model.layers):
        from .model import with_flip_tta

        clf.model = with_flip_tta(clf.model)
    folder = load_folder(base, names, clf.image_size, clf.color)
    if not len(folder):
        raise EmotionError(f"no valid images in {base}")
    probs = clf.probabilities(folder.images)
    result = score(probs[:, 1] if probs.shape[1] == 2 else probs, folder.labels, names)
    result.update({"model": str(args.model), "data": str(base), "class_names": names,
                   "invalid_files": len(folder.invalid)})
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{base}: {result['n']} images ({len(folder.invalid)} invalid skipped)")
        print(f"accuracy {result['accuracy']:.4f}  precision {result['precision']:.4f}  "
              f"recall {result['recall']:.4f}  f1 {result['f1']:.4f}  loss {result['loss']:.4f}")
        print(f"confusion matrix (rows true {names}, columns predicted): {result['confusion_matrix']}")
    return 0


def cmd_predict(args) -> int:
    from .infer import Predictor

    clf = Predictor.load(args.model)
    good, failed = [], 0
    for f in args.images:
        try:
            clf.preprocess(f)
            good.append(f)
        except EmotionError as e:
            print(f"emotion: error: {e}", file=sys.stderr)
            failed += 1
    results = clf.predict_files(good) if good else []
    positive = clf.class_names[-1] if len(clf.class_names) == 2 else None
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            extra = f"P({positive})={r['probs'][positive]:.4f}" if positive else f"P={r['p']:.4f}"
            print(f"{r['file']}\t{r['label']}\t{extra}")
    return 1 if failed else 0


def cmd_clean(args) -> int:
    from .data import quarantine, scan_invalid

    invalid, valid = scan_invalid(args.data, args.classes)
    for path, reason in invalid:
        print(f"invalid: {path}: {reason}")
    print(f"{valid} valid image(s), {len(invalid)} invalid in {args.data}")
    if args.quarantine and invalid:
        moves = quarantine([p for p, _ in invalid], args.data, args.quarantine)
        print(f"moved {len(moves)} file(s) to {args.quarantine}")
    elif invalid:
        print("nothing was changed; --quarantine DIR moves them out")
    return 0


def cmd_synth(args) -> int:
    from .synth import generate

    counts = generate(args.out, args.per_class, args.seed, args.size)
    print(f"wrote {sum(counts.values())} synthetic faces to {args.out} ({counts})")
    return 0


def cmd_bench(args) -> int:
    from .bench import config_from_args, run_bench

    cfg = config_from_args(args)
    run_bench(cfg, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print((Path(cfg.out) / "bench.md").read_text(), end="")
    return 0


def cmd_parity(args) -> int:
    from .parity import command

    return command(args)


def cmd_export(args) -> int:
    from .export import command

    return command(args)


COMMANDS = {"bench": cmd_bench, "fit": cmd_fit, "cv": cmd_cv, "data": cmd_data, "test": cmd_test, "predict": cmd_predict, "clean": cmd_clean, "synth": cmd_synth,
            "parity": cmd_parity, "export": cmd_export}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if hasattr(args, "backend"):
            import backends

            backends.select(args.backend, deterministic=bool(getattr(args, "deterministic", False)))
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("emotion: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get("EMOTION_DEBUG"):
            raise
        from backends import BackendError

        known = isinstance(e, EmotionError | BackendError)
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        prefix = "error" if known else f"internal error ({type(e).__name__})"
        hint = "" if known else " (EMOTION_DEBUG=1 shows the traceback)"
        print(f"emotion: {prefix}: {text}{hint}", file=sys.stderr)
        return 2 if known else 1
