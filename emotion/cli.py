"""emotion: train, check and use a facial-emotion classifier under JAX, TensorFlow or PyTorch.

examples:
  emotion predict photo.jpg photos/            # label every face with the happy/sad model that ships
  emotion fit --data ~/faces --out runs/mine --backend jax      # train; --print-config shows every setting
  emotion test --model runs/mine/imageclassifier.keras --data ~/more-faces

Each command has --help. Keras is imported only after --backend (or $KERAS_BACKEND) picks the backend.
Exit codes: 0 ok; 1 a check failed (parity, export verification); 2 bad usage or input (a missing or
unreadable file, a bad flag or setting), told in one line; 3 an internal error, a bug: EMOTION_DEBUG=1 shows
the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from emotion.config import parse_names
from emotion.errors import EmotionError
from emotion.faces.detect import DETECTORS, FACE_MODES
from emotion.modelfile import RUNTIMES


# --------------------------------------------------------------------------------------------- parser
class Parser(argparse.ArgumentParser):
    """argparse, with whole flag names only (``--epoch`` is not ``--epochs``) and usage errors in one line, with
    a "did you mean" for a misspelled flag; exit 2."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message):
        if message.startswith("unrecognized arguments:"):
            import difflib

            flags = [s for a in self._actions for s in a.option_strings]
            for word in message.split(":", 1)[1].split():
                close = difflib.get_close_matches(word.split("=")[0], flags, n=1) if word.startswith("-") else []
                if close:
                    message += f" (did you mean {close[0]}?)"
                    break
        self.exit(2, f"emotion: error: {message} (see {self.prog} --help)\n")


def _backend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=["jax", "tensorflow", "torch"],
                   help="Keras backend (default: $KERAS_BACKEND, else Keras's default)")


def _data_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--data", required=required, help="folder of class subfolders, or of train/ val/ test/")
    p.add_argument("--classes", type=parse_names, help="comma-separated subset of class folders (default: all)")
    _max_image_arg(p)
    p.add_argument("--quiet", action="store_true", help="no progress line while decoding")


def _max_image_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-image-mb", type=_positive_int, default=50, metavar="MB",
                   help="image files larger than this are reported and skipped, never read (default 50)")


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


CACHE_HELP = ("decoded-image cache folder, or 'off' (default: $EMOTION_CACHE, $XDG_CACHE_HOME/emotion, "
              "~/.cache/emotion)")


def _model_arg(p: argparse.ArgumentParser, runtime: bool = False) -> None:
    p.add_argument("--model", help="a .keras file" + (" or its .onnx export" if runtime else "") +
                   ", or a shipped model's name: happy-sad (the default: FER2013 faces, then web photos) or "
                   "fer2013-happy-sad")
    p.add_argument("--detector", choices=DETECTORS, help="face detector (default: blazeface; docs/faces.md)")
    p.add_argument("--min-face-score", type=_fraction, metavar="S",
                   help="the BlazeFace score a detection needs to count as a face, 0-1 (default 0.5): higher finds "
                        "fewer faces and is more often right on them (README, 'The operating point')")
    _max_model_arg(p)
    if runtime:
        p.add_argument("--runtime", choices=RUNTIMES,
                       help="keras: the .keras under the backend; onnx: the ONNX export under onnxruntime, with no "
                            "TensorFlow, JAX or PyTorch (the fastest start; the shipped model has both). "
                            "Default: from the --model file's suffix")


def _uses_keras(args) -> bool:
    """Whether the command needs a Keras backend: not for a model run by onnxruntime."""
    from emotion.modelfile import runtime_for

    return runtime_for(getattr(args, "model", None), getattr(args, "runtime", None)) == "keras"


def _max_model_arg(p: argparse.ArgumentParser) -> None:
    from emotion.guard import MAX_MODEL_MB

    p.add_argument("--max-model-mb", type=float, default=None, metavar="MB",
                   help=f"refuse a model file that unpacks to more than this (default {MAX_MODEL_MB}); "
                        "files are checked before Keras reads them (README, 'Model files are checked')")


def _limits(args):
    from emotion.guard import Limits

    return Limits.from_mb(getattr(args, "max_model_mb", None))


def _fit_args(p: argparse.ArgumentParser) -> None:
    """Every setting of `emotion.config` as a flag (declared there, once), and what a run folder needs."""
    from emotion.config import add_arguments

    add_arguments(p)
    p.add_argument("--print-config", action="store_true",
                   help="print the effective settings as YAML (which --config takes back) and exit")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --out from its last checkpoint (same settings)")
    p.add_argument("--overwrite", action="store_true", help="replace a finished or interrupted run in --out")


def _args_fit(p):
    _backend_args(p)
    _fit_args(p)
    _max_model_arg(p)  # for the --init-from file


def _args_cv(p):
    _backend_args(p)
    _fit_args(p)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--jobs", type=int, default=1, help="folds trained at a time, each in its own process (default 1)")


def _args_data(p):
    p.add_argument("dataset", choices=["fer2013"], help="fer2013: the official Kaggle CSV (emotion,pixels,Usage)")
    p.add_argument("csv", help="the CSV file")
    p.add_argument("out", help="new folder; gets train/ val/ test/ with one subfolder per class")
    p.add_argument("--classes", type=parse_names, help="keep only these emotions, e.g. happy,sad")


def _args_test(p):
    _backend_args(p)
    _model_arg(p)
    _data_args(p, required=True)
    p.add_argument("--faces", choices=["crop", "none"],
                   help="crop each image to its largest face (whole image where none is found) or not; "
                        "default: crop for a model trained on faces")
    p.add_argument("--cache", help=CACHE_HELP)
    p.add_argument("--split", choices=("train", "val", "test"),
                   help="which split of a train/ val/ test/ folder (default: test)")
    p.add_argument("--tta-flip", action="store_true",
                   help="score the mean of the model on each image and its mirror")
    p.add_argument("--restrict", action="store_true",
                   help="predict the top class among the folder's classes only (an eight-emotion model answers "
                        "happy vs sad on a happy/sad folder); default: among all the model's classes, so a face "
                        "predicted as a class with no folder counts as wrong")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")


def _args_predict(p):
    _backend_args(p)
    _model_arg(p, runtime=True)
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files and folders (searched recursively)")
    p.add_argument("--faces", choices=FACE_MODES,
                   help="classify the largest face of each image, all faces, or none (the whole image); "
                        "default: largest for a model trained on faces, else none")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON list, a row per face, for machines")
    fmt.add_argument("--csv", action="store_true", help="CSV, a row per face")
    p.add_argument("--annotate", metavar="DIR", help="write a copy of each image with boxes and labels into DIR")
    _max_image_arg(p)


def _args_video(p):
    _backend_args(p)
    _model_arg(p, runtime=True)
    p.add_argument("source", help="a video file, or a camera index such as 0")
    p.add_argument("--out", help="write the annotated video here (.mp4)")
    p.add_argument("--csv", help="write a row per face per frame here (frame, time, box, label, probabilities)")
    p.add_argument("--faces", choices=FACE_MODES, default=None,
                   help="all faces (default for a face model), the largest, or none (the whole frame)")
    p.add_argument("--smooth", type=float, default=0.6,
                   help="weight of a face's past in its shown probabilities, 0..0.99 (default 0.6)")
    p.add_argument("--detect-every", type=int, default=1, metavar="K",
                   help="look for faces every K-th frame and keep the boxes in between (default 1)")
    p.add_argument("--max-frames", type=int, help="stop after this many frames")
    p.add_argument("--show", action="store_true", help="a live window (where a display exists)")
    p.add_argument("--overwrite", action="store_true", help="replace existing --out/--csv files")


def _args_clean(p):
    _data_args(p, required=True)
    p.add_argument("--quarantine", help="move invalid files here, keeping their relative paths")


def _args_cache(p):
    p.add_argument("action", choices=["info", "clear"],
                   help="info: where the cache is, its entries and size; clear: delete its entries (only those)")
    p.add_argument("--cache", help=CACHE_HELP.replace(", or 'off'", ""))


def _args_synth(p):
    p.add_argument("out", help="folder to create (happy/ and sad/ inside)")
    p.add_argument("--per-class", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=128)


def _args_export(p):
    from emotion.tools import export

    _backend_args(p)
    export.add_arguments(p)


def _args_bench(p):
    from emotion.tools import bench

    bench.add_arguments(p)


def _args_parity(p):
    from emotion.tools import parity

    parity.add_arguments(p)


def _args_serve(p):
    # (not `backend`: main() would pick it, importing the framework, in this process; the workers pick it)
    p.add_argument("--backend", dest="serve_backend", choices=["jax", "tensorflow", "torch"],
                   help="Keras backend of the inference workers (default: $KERAS_BACKEND, else Keras's default)")
    _model_arg(p, runtime=True)
    p.add_argument("--faces", choices=FACE_MODES,
                   help="the largest face, all faces, or none (the whole image); default: largest for a face model")
    p.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1", "0.0.0.0", "::"],
                   help="interface to listen on (default 127.0.0.1; 0.0.0.0 for every one)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch-size", type=int, default=32,
                   help="requests gathered into one model call (1: no batching; default 32)")
    p.add_argument("--batch-timeout", type=float, default=0.005,
                   help="seconds a batch waits to fill (default 0.005)")
    p.add_argument("--workers", type=int, default=1, help="inference processes, each with the model (default 1)")
    p.add_argument("--max-bytes", default="10MB", help="largest request body accepted (default 10MB)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def _args_serve_bench(p):
    from emotion.tools import serve_bench

    serve_bench.add_arguments(p)


def build_parser() -> argparse.ArgumentParser:
    """The `emotion` parser: one sub-parser per entry of `COMMANDS`."""
    from emotion import __version__

    parser = Parser(prog="emotion", description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 2)[2],
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"emotion {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, (text, add_arguments, _) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=text))
    return parser


# --------------------------------------------------------------------------------------------- commands
def _config(args, from_checkpoint: bool = True):
    """The settings of a fit or cv: defaults, --config, flags; with `fit --resume`, the checkpoint's, which the
    given settings must agree with (`cv --resume` resumes fold by fold with the settings given)."""
    from emotion.config import flatten, load_config, overrides_from_args

    overrides = overrides_from_args(args)
    if not (from_checkpoint and getattr(args, "resume", False)):
        return load_config(args.config, overrides)
    from emotion.training.run import resolve_resume

    given = flatten(load_config(args.config, overrides)) if args.config else \
        {k: v for k, v in overrides.items() if v is not None}
    out = Path(overrides["trainer.out"] or (given.get("trainer.out") or load_config().trainer.out))
    return resolve_resume(given, out)


def _warn_chance(result: dict, what: str = "test") -> None:
    from emotion.metrics import chance_line

    line = chance_line(result, what)
    if line:
        print(f"emotion: {line}", file=sys.stderr)


def _figure(value) -> str:
    """A metric for people: 4 decimals, or "undefined" (null in JSON) where it is 0/0."""
    return "undefined" if value is None else f"{value:.4f}"


def _warn_undefined(result: dict, what: str = "test") -> None:
    for line in result.get("warnings", []):
        print(f"emotion: warning: {what}: {line}", file=sys.stderr)


def _print_config(cfg) -> int:
    from emotion.config import to_yaml

    print(to_yaml(cfg), end="")
    return 0


def cmd_fit(args) -> int:
    cfg = _config(args)
    if args.print_config:
        return _print_config(cfg)
    from emotion.training.run import fit_run

    metrics = fit_run(cfg, resume=args.resume, overwrite=args.overwrite, limits=_limits(args))
    t = metrics["test"]
    if t:
        print(f"test: accuracy {t['accuracy']:.4f}  precision {_figure(t['precision'])}  recall {_figure(t['recall'])}  "
              f"f1 {_figure(t['f1'])}  (n={t['n']})")
        _warn_undefined(t)
        _warn_chance(t)
    if metrics.get("val"):
        _warn_undefined(metrics["val"], "val")
    t = cfg.trainer
    print(f"run folder: {t.out}" if t.process_id == 0 else
          f"process {t.process_id} of {t.num_processes}: done; process 0 writes the run folder ({t.out} on its host)")
    return 0


def cmd_cv(args) -> int:
    cfg = _config(args, from_checkpoint=False)
    if args.print_config:
        return _print_config(cfg)
    if cfg.trainer.num_processes > 1:
        raise EmotionError("emotion cv trains each fold in one process (--jobs runs folds side by side); "
                           "--num-processes is for emotion fit")
    from emotion.training.cv import cv_run

    result = cv_run(cfg, args.folds, resume=args.resume, overwrite=args.overwrite, jobs=args.jobs)
    for m, v in result["summary"].items():
        print(f"{m}: {_figure(v['mean'])} ± {_figure(v['std'])}"
              + (f" (undefined in fold(s) {v['undefined_in']})" if v.get("undefined_in") else ""))
    _warn_chance(result["pooled"], "pooled test")
    print(f"cv folder: {cfg.trainer.out} (cv.md, cv.json, fold-*/)")
    return 0


def cmd_data(args) -> int:
    from emotion.data.fer2013 import import_csv

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
    import numpy as np

    from emotion.data.cache import load_folder
    from emotion.data.folders import class_folders, is_presplit, subdirs
    from emotion.metrics import score_classes
    from emotion.predictor import Predictor

    root = Path(args.data)
    class_folders(root, args.classes)  # data errors before the model loads
    if is_presplit(root):
        base = root / (args.split or "test")
    elif args.split:
        raise EmotionError(f"--split needs a folder with train/ val/ test/ in it; {root} has class folders")
    else:
        base = root
    names = sorted(dict.fromkeys(args.classes)) if args.classes else subdirs(base)
    clf = Predictor.load(args.model, detector=args.detector, limits=_limits(args), min_face_score=args.min_face_score)
    known = clf.class_names
    if any(c.startswith("class_") for c in known):  # a model without class names: the folders in order
        if len(names) != len(known):
            raise EmotionError(f"the model knows {len(known)} classes {known}, the data has {len(names)}: {names}")
        known = names
    unknown = [c for c in names if c not in known]
    if unknown:
        raise EmotionError(f"class folder(s) {unknown} in {base} are not classes of the model, which knows: "
                           f"{', '.join(known)}")
    if args.restrict and len(names) < 2:
        raise EmotionError(f"--restrict needs at least two class folders in {base}, found {names}")
    if args.tta_flip and not any(layer.name == "flip_tta" for layer in clf.model.layers):
        from emotion.models.surgery import with_flip_tta

        clf.model = with_flip_tta(clf.model)
    faces = args.faces or ("crop" if clf.face_model else "none")
    folder = load_folder(base, names, clf.image_size, clf.color, args.cache, faces=faces,
                         detector=clf.detector if faces == "crop" else None, max_image_mb=args.max_image_mb,
                         progress=False if args.quiet else None)
    for path, reason in folder.invalid:
        print(f"emotion: skipped invalid file: {_text(path)}: {reason}", file=sys.stderr)
    if not len(folder):
        raise EmotionError(f"no valid images in {base}")
    probs = clf.probabilities(folder.images)

    def score(p, labels):
        return score_classes(p, labels, names, known, restrict=args.restrict)

    result = score(probs, folder.labels)
    result.update({"model": str(args.model or "happy-sad (shipped)"), "data": str(base), "class_names": names,
                   "model_classes": list(known), "restrict": bool(args.restrict),
                   "invalid_files": len(folder.invalid)})
    fmt = _figure
    if faces == "crop":
        whole = set(folder.no_face)
        on_faces = np.array([p not in whole for p in folder.paths])
        result["faces"] = {"mode": "crop", "found": int(on_faces.sum()), "kept_whole": len(whole),
                           "found_share": float(on_faces.mean())}
        if on_faces.any():
            result["on_faces"] = score(probs[on_faces], folder.labels[on_faces])
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{base}: {result['n']} images ({len(folder.invalid)} invalid skipped)")
        print(f"accuracy {result['accuracy']:.4f}  balanced accuracy {result['balanced_accuracy']:.4f}  "
              f"precision {fmt(result['precision'])}  recall {fmt(result['recall'])}  f1 {fmt(result['f1'])}  "
              f"macro f1 {fmt(result['f1_macro'])}  loss {result['loss']:.4f}")
        print(f"confusion matrix (rows true {names}, columns predicted {result['predicted_classes']}): "
              f"{result['confusion_matrix']}")
        if "faces" in result:
            f = result["faces"]
            line = f"faces found in {f['found']} of {result['n']} images ({f['found_share']:.1%}); the rest scored whole"
            if "on_faces" in result:
                o = result["on_faces"]
                line += f"; on those {f['found']}: accuracy {o['accuracy']:.4f}, balanced {o['balanced_accuracy']:.4f}"
            print(line)
    _warn_undefined(result)
    _warn_chance(result)
    return 0


def _text(value) -> str:
    """A file name as one line of text: names with control characters are printed JSON-quoted."""
    value = str(value)
    return json.dumps(value) if any(ord(c) < 32 or ord(c) == 127 for c in value) else value


def cmd_predict(args) -> int:
    import csv
    import time

    from emotion.predictor import Predictor, image_files

    files = image_files(args.paths)  # every path checked before the model loads
    if not files:
        raise EmotionError("no image files in " + ", ".join(args.paths))
    if args.annotate:
        if Path(args.annotate).exists() and not Path(args.annotate).is_dir():
            raise EmotionError(f"--annotate needs a folder; {args.annotate} is a file")
        Path(args.annotate).mkdir(parents=True, exist_ok=True)
    clf = Predictor.load(args.model, faces=args.faces, detector=args.detector, runtime=args.runtime,
                         limits=_limits(args), min_face_score=args.min_face_score)
    names = clf.class_names
    positive = names[-1] if len(names) == 2 else None
    writer = None
    if args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(["file", "face", "x", "y", "w", "h", "score", "whole_image", "label", "p",
                         *[f"p_{c}" for c in names], "error"])
    on_image = _annotator(Path(args.annotate)) if args.annotate else None
    counts = {"images": 0, "faces": 0, "whole": 0, "errors": 0}
    t0 = time.perf_counter()
    first = True
    if args.json:
        print("[", end="")
    for row in clf.predict_files(files, on_image=on_image, max_image_mb=args.max_image_mb):
        if "error" in row:
            counts["errors"] += 1
            print(f"emotion: error: cannot read image {_text(row['file'])}: {row['error']}", file=sys.stderr)
        else:
            counts["faces" if not row["whole_image"] else "whole"] += 1
            counts["images"] += row["face"] in (0, None)
        if args.json:
            print(("" if first else ",") + "\n  " + json.dumps(row), end="")
        elif writer:
            box = row.get("box") or [""] * 4
            probs = row.get("probs") or {}
            writer.writerow([row["file"], "" if row.get("face") is None else row["face"], *box,
                             "" if row.get("score") is None else row["score"], row.get("whole_image", ""),
                             row.get("label", ""), row.get("p", ""), *[probs.get(c, "") for c in names],
                             row.get("error", "")])
        elif "error" not in row:
            where = "whole image" if row["whole_image"] else f"face {row['face']} {row['box']}"
            extra = f"P({positive})={row['probs'][positive]:.4f}" if positive else f"P={row['p']:.4f}"
            print(f"{_text(row['file'])}\t{where}\t{row['label']}\t{extra}")
        first = False
        sys.stdout.flush()
    if args.json:
        print("\n]")
    seconds = time.perf_counter() - t0
    if counts["images"]:  # (an unreadable file alone gets its one error line, nothing more)
        print(f"{counts['images']} image(s): {counts['faces']} face(s), {counts['whole']} scored whole (no face "
              f"found or --faces none), {counts['errors']} unreadable; {counts['images'] / max(seconds, 1e-9):.1f} "
              f"images/s", file=sys.stderr)
    return 2 if counts["errors"] else 0  # bad input, though every readable image got its rows


def _annotator(folder: Path):
    """on_image callback of `Predictor.predict_files`: a copy of the image with boxes and labels, in ``folder``,
    under the image's name (a free name is picked rather than overwrite a file)."""
    import cv2

    from emotion.faces.video import COLORS, draw

    def save(path, image, rows):
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.shape[-1] == 3 else \
            cv2.cvtColor(image[..., 0], cv2.COLOR_GRAY2BGR)
        for i, r in enumerate(rows):
            box = r["box"] or (0, 0, bgr.shape[1] - 1, bgr.shape[0] - 1)
            draw(bgr, box, f"{r['label']} {r['p']:.2f}", COLORS[i % len(COLORS)])
        suffix = Path(path).suffix.lower() if Path(path).suffix.lower() in (".jpg", ".jpeg", ".png") else ".png"
        target = folder / f"{Path(path).stem}{suffix}"
        k = 1
        while target.exists():
            target = folder / f"{Path(path).stem}-{k}{suffix}"
            k += 1
        cv2.imwrite(str(target), bgr)

    return save


def cmd_video(args) -> int:
    from emotion.faces import video
    from emotion.predictor import Predictor

    for target in (args.out, args.csv):
        if target and Path(target).exists() and not args.overwrite:
            raise EmotionError(f"{target} exists; pass --overwrite to replace it")
    if not 0 <= args.smooth < 1:
        raise EmotionError(f"--smooth must be in [0, 1), got {args.smooth}")
    if args.detect_every < 1:
        raise EmotionError(f"--detect-every must be at least 1, got {args.detect_every}")
    video.open_source(args.source).release()  # a bad source fails before the model loads
    clf = Predictor.load(args.model, detector=args.detector, runtime=args.runtime, limits=_limits(args),
                         min_face_score=args.min_face_score)
    faces = args.faces or ("all" if clf.face_model else "none")
    result = video.run(args.source, clf, out=args.out, csv_path=args.csv, show=args.show, faces=faces,
                       smooth=args.smooth, detect_every=args.detect_every, max_frames=args.max_frames,
                       log=lambda m: print(m, file=sys.stderr))
    print(f"{result['frames']} frames, {result['faces']} faces in {result['seconds']:.1f} s: "
          f"{result['fps']:.1f} frames/s" + (f"; wrote {args.out}" if args.out else "")
          + (f", {args.csv}" if args.csv else ""))
    return 0


def cmd_clean(args) -> int:
    from emotion.data.clean import quarantine, scan_invalid

    invalid, valid = scan_invalid(args.data, args.classes, args.max_image_mb, progress=False if args.quiet else None)
    for path, reason in invalid:
        print(f"invalid: {_text(path)}: {reason}")
    print(f"{valid} valid image(s), {len(invalid)} invalid in {args.data}")
    if args.quarantine and invalid:
        moves = quarantine([p for p, _ in invalid], args.data, args.quarantine)
        print(f"moved {len(moves)} file(s) to {args.quarantine}")
    elif invalid:
        print("nothing was changed; --quarantine DIR moves them out")
    return 0


def cmd_cache(args) -> int:
    from emotion.data.cache import cache_dir, cache_entries, clear_cache, remove_files

    where = cache_dir(args.cache)
    if where is None:
        raise EmotionError("the cache is off ('off' from --cache or $EMOTION_CACHE): there is nothing to show or clear")
    if os.path.lexists(where) and not where.is_dir():
        raise EmotionError(f"cache location {where} is not a folder")
    compiled = _compiled_programs(where / "jax")
    if args.action == "clear":
        (files, size), (programs, program_bytes) = clear_cache(where), remove_files(compiled)
        files, size = files + programs, size + program_bytes
        print(f"removed {files} cache file(s), {_size(size)}, from {where}; nothing else there was touched")
        return 0
    found = cache_entries(where)
    keys = {p.name.split(".")[0] for p in found["entries"]}
    print(f"cache: {where}" + ("" if where.is_dir() else " (not created yet)"))
    print(f"entries: {len(keys)} decoded folder(s), {_size(found['bytes'])} in all")
    if compiled:
        print(f"JAX compiled programs (jax/): {len(compiled)} file(s), "
              f"{_size(sum(p.lstat().st_size for p in compiled))}")
    if found["old"]:
        print(f"old-format entries: {len(found['old']) // 2 or 1} (never read again; 'emotion cache clear' removes them)")
    if found["stale"]:
        print(f"temporary files of interrupted writers: {len(found['stale'])} (removed by the next run or by clear)")
    return 0


def _compiled_programs(folder: Path) -> list[Path]:
    """The regular files of JAX's persistent compilation cache in emotion's cache folder (backends/jax.py)."""
    try:
        return sorted(Path(e.path) for e in os.scandir(folder) if e.is_file(follow_symlinks=False))
    except OSError:
        return []


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def cmd_synth(args) -> int:
    from emotion.data.synth import generate

    counts = generate(args.out, args.per_class, args.seed, args.size)
    print(f"wrote {sum(counts.values())} synthetic faces to {args.out} ({counts})")
    return 0


def cmd_bench(args) -> int:
    from emotion.tools.bench import config_from_args, run_bench

    cfg = config_from_args(args)
    run_bench(cfg, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print((Path(cfg.out) / "bench.md").read_text(), end="")
    return 0


def cmd_parity(args) -> int:
    from emotion.tools.parity import command

    return command(args)


def cmd_export(args) -> int:
    from emotion.tools.export import command

    return command(args)


def cmd_serve(args) -> int:
    try:
        from emotion.serve import parse_bytes, serve
    except ImportError as e:
        raise EmotionError(f"emotion serve needs {e.name}: pip install -e '.[serve]'") from None
    return serve(args.model, host=args.host, port=args.port, max_batch_size=args.max_batch_size,
                 batch_timeout=args.batch_timeout, workers=args.workers, runtime=args.runtime,
                 max_bytes=parse_bytes(args.max_bytes), faces=args.faces, detector=args.detector,
                 min_face_score=args.min_face_score, log_level=args.log_level, backend=args.serve_backend)


def cmd_serve_bench(args) -> int:
    from emotion.tools.serve_bench import command

    return command(args)


def _early_checks(args) -> None:
    """What a command can check with no framework: its model file (through `emotion.guard`), the images given to
    `predict`, the data folder given to `test`, and the settings of `fit` and `cv` (not of a `fit --resume`,
    whose settings come from its checkpoint). The commands check again where they use them."""
    from emotion.modelfile import resolve_model
    from emotion.predictor import image_files

    if args.command == "cv" or (args.command == "fit" and not args.resume):
        _config(args, from_checkpoint=False)

    if args.command == "predict":
        image_files(args.paths)
    if args.command == "test":
        from emotion.data.folders import class_folders

        class_folders(Path(args.data), args.classes)
    if getattr(args, "min_face_score", None) is not None:
        from emotion.faces.detect import check_detector

        check_detector(args.detector, args.min_face_score)
    if args.command in ("predict", "test", "video", "export"):
        resolve_model(args.model, getattr(args, "runtime", None), _limits(args))


# Every command, registered here and only here: name -> (help, its flags, what it runs).
COMMANDS = {
    "fit": ("train, test and save a run folder", _args_fit, cmd_fit),
    "cv": ("K-fold cross-validation: mean ± std of every test metric", _args_cv, cmd_cv),
    "test": ("score a saved model on a data folder", _args_test, cmd_test),
    "predict": ("find the faces in images and folders and label each one", _args_predict, cmd_predict),
    "video": ("label the faces of a video file or camera, frame by frame", _args_video, cmd_video),
    "export": ("export a .keras (SavedModel, ONNX, LiteRT, OpenVINO, torch) and verify it; --matrix: every "
               "format from every backend", _args_export, cmd_export),
    "bench": ("time training and inference under each backend (bench.md/.json/.png)", _args_bench, cmd_bench),
    "parity": ("train under every backend from the same weights and compare (parity.md)", _args_parity, cmd_parity),
    "serve": ("serve the model over HTTP (POST /predict an image; LitServe, dynamic batching)", _args_serve, cmd_serve),
    "serve-bench": ("load-test `emotion serve`, batched and not (serve-bench.md/.json/.png)", _args_serve_bench,
                    cmd_serve_bench),
    "data": ("import a data set as image folders", _args_data, cmd_data),
    "clean": ("list (and optionally quarantine) files that are not valid images", _args_clean, cmd_clean),
    "cache": ("show (info) or empty (clear) the decoded-image cache", _args_cache, cmd_cache),
    "synth": ("draw a deterministic synthetic happy/sad face set", _args_synth, cmd_synth),
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # told by the command's own parser, which knows the flags a misspelling was meant to be
            sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
            sub.choices[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as e:  # usage errors (2), --help and --version (0)
        return e.code if isinstance(e.code, int) else 2
    try:
        _early_checks(args)  # bad paths and hostile model files: told before a framework is imported
        if hasattr(args, "backend") and _uses_keras(args):
            from emotion import backends

            backends.select(args.backend, deterministic=bool(getattr(args, "deterministic", False)))
        return COMMANDS[args.command][2](args)
    except KeyboardInterrupt:
        print("emotion: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`emotion predict ... | head`): stop writing, quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as e:
        if os.environ.get("EMOTION_DEBUG"):
            raise
        from emotion.backends import BackendError

        known = isinstance(e, EmotionError | BackendError)
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        prefix = "error" if known else f"internal error ({type(e).__name__})"
        hint = "" if known else " (EMOTION_DEBUG=1 shows the traceback)"
        print(f"emotion: {prefix}: {text}{hint}", file=sys.stderr)
        return 2 if known else 3
