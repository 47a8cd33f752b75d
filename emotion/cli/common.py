"""What every command shares: the parser class, the flag groups declared once (backend, model, data, limits,
fit settings), and how results and file names are printed."""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import json
import re
import sys
from pathlib import Path

from emotion import backends
from emotion.backends import NAMES as BACKENDS
from emotion.config import (
    add_arguments,
    flatten,
    load_config,
    overrides_from_args,
    parse_names,
    to_yaml,
)
from emotion.errors import EmotionError
from emotion.faces.detect import DETECTORS, check_detector
from emotion.guard import MAX_MODEL_MB, Limits
from emotion.metrics import chance_line
from emotion.modelfile import DEFAULT_MODEL, RUNTIMES, SHIPPED, resolve_model, runtime_for
from emotion.training.run import resolve_resume


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


class Parser(argparse.ArgumentParser):
    """argparse, with whole flag names only (``--epoch`` is not ``--epochs``) and usage errors in one line, with
    a "did you mean" for a misspelled flag, command or choice; exit 2."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message):
        wrong = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if wrong:  # a misspelt command or --backend value
            options = re.findall(r"'?([^',\s]+)'?", wrong.group(2))
            close = difflib.get_close_matches(wrong.group(1), options, n=1)
            if close:
                message += f" (did you mean {close[0]!r}?)"
        if message.startswith("unrecognized arguments:"):
            flags = [s for a in self._actions for s in a.option_strings]
            for word in message.split(":", 1)[1].split():
                close = difflib.get_close_matches(word.split("=")[0], flags, n=1) if word.startswith("-") else []
                if close:
                    message += f" (did you mean {close[0]}?)"
                    break
        self.exit(2, f"emotion: error: {message} (see {self.prog} --help)\n")


def backend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=BACKENDS,
                   help="Keras backend (default: $KERAS_BACKEND, else Keras's default)")


def data_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--data", required=required, help="folder of class subfolders, or of train/ val/ test/")
    p.add_argument("--classes", type=parse_names, help="comma-separated subset of class folders (default: all)")
    max_image_arg(p)
    p.add_argument("--quiet", action="store_true", help="no progress line while decoding")


def max_image_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-image-mb", type=positive_int, default=50, metavar="MB",
                   help="image files larger than this are reported and skipped, never read (default 50)")


def model_arg(p: argparse.ArgumentParser, runtime: bool = False) -> None:
    p.add_argument("--model", help="a .keras file" + (" or its .onnx export" if runtime else "") +
                   f", or a shipped model's name: {', '.join(SHIPPED)} (default {DEFAULT_MODEL}; docs/models.md)")
    p.add_argument("--detector", choices=DETECTORS, help="face detector (default: blazeface; docs/faces.md)")
    p.add_argument("--min-face-score", type=fraction, metavar="S",
                   help="the BlazeFace score a detection needs to count as a face, 0-1 (default 0.5): higher finds "
                        "fewer faces and is more often right on them (docs/faces.md, 'The operating point')")
    max_model_arg(p)
    if runtime:
        p.add_argument("--runtime", choices=RUNTIMES,
                       help="keras: the .keras under the backend; onnx: the ONNX export under onnxruntime, with no "
                            "TensorFlow, JAX or PyTorch (the fastest start; the shipped model has both). "
                            "Default: from the --model file's suffix")


def pick_runtime(args) -> None:
    """With no Keras backend installed but onnxruntime (the ``.[onnx]`` venv), a shipped model runs on its ONNX
    export by itself, and says so once; a ``--backend`` or ``--runtime`` given is kept."""
    if getattr(args, "runtime", "absent") is not None or getattr(args, "backend", None) is not None:
        return
    if getattr(args, "model", None) not in (None, *SHIPPED) or backends.installed():
        return
    if importlib.util.find_spec("onnxruntime") is None:
        return
    args.runtime = "onnx"
    print("emotion: no Keras backend (TensorFlow, JAX, PyTorch) installed here: running the shipped model's ONNX "
          "export under onnxruntime (--runtime onnx)", file=sys.stderr)


def uses_keras(args) -> bool:
    """Whether the command needs a Keras backend: not for a model run by onnxruntime."""
    return runtime_for(getattr(args, "model", None), getattr(args, "runtime", None)) == "keras"


def max_model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-model-mb", type=float, default=None, metavar="MB",
                   help=f"refuse a model file that unpacks to more than this (default {MAX_MODEL_MB}); "
                        "files are checked before Keras reads them (docs/security.md)")


def limits(args):
    return Limits.from_mb(getattr(args, "max_model_mb", None))


CACHE_HELP = ("decoded-image cache folder, or 'off' (default: $EMOTION_CACHE, $XDG_CACHE_HOME/emotion, "
              "~/.cache/emotion)")


def fit_args(p: argparse.ArgumentParser) -> None:
    """Every setting of `emotion.config` as a flag (declared there, once), and what a run folder needs."""
    add_arguments(p)
    p.add_argument("--print-config", action="store_true",
                   help="print the effective settings as YAML (which --config takes back) and exit")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --out from its last checkpoint (same settings)")
    p.add_argument("--overwrite", action="store_true", help="replace a finished or interrupted run in --out")


def config(args, from_checkpoint: bool = True):
    """The settings of a fit or cv: defaults, --config, flags; with `fit --resume`, the checkpoint's, which the
    given settings must agree with (`cv --resume` resumes fold by fold with the settings given)."""
    overrides = overrides_from_args(args)
    if not (from_checkpoint and getattr(args, "resume", False)):
        return load_config(args.config, overrides)

    given = flatten(load_config(args.config, overrides)) if args.config else \
        {k: v for k, v in overrides.items() if v is not None}
    out = overrides["trainer.out"] or given.get("trainer.out")
    if out is None:
        raise EmotionError("--resume needs --out RUN: the folder of the interrupted run")
    return resolve_resume(given, Path(out))


def warn_chance(result: dict, what: str = "test") -> None:
    line = chance_line(result, what)
    if line:
        print(f"emotion: {line}", file=sys.stderr)



def warn_undefined(result: dict, what: str = "test") -> None:
    for line in result.get("warnings", []):
        print(f"emotion: warning: {what}: {line}", file=sys.stderr)


def print_config(cfg) -> int:
    print(to_yaml(cfg), end="")
    return 0


def text(value) -> str:
    """A file name as one line of text: names with control characters are printed JSON-quoted."""
    value = str(value)
    return json.dumps(value) if any(ord(c) < 32 or ord(c) == 127 for c in value) else value


def check_model(args) -> None:
    """The model named by ``--model`` (and its detector settings), checked before any framework loads."""
    if getattr(args, "min_face_score", None) is not None:
        check_detector(args.detector, args.min_face_score)
    resolve_model(args.model, getattr(args, "runtime", None), limits(args))
