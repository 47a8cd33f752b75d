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
import os
import sys
from contextlib import contextmanager

from emotion import __version__, backends
from emotion.backends import BackendError
from emotion.cli import (
    bench,
    cache,
    clean,
    cv,
    data,
    export,
    fit,
    parity,
    predict,
    serve,
    serve_bench,
    synth,
    test,
    video,
)
from emotion.cli.common import Parser, pick_runtime, uses_keras
from emotion.errors import EmotionError, Terminated, stops_as_interrupts, tell
from emotion.files import user_os_error

# Every command, registered here and only here: name -> its module (HELP, add_arguments, run).
COMMANDS = {"fit": fit, "cv": cv, "test": test, "predict": predict, "video": video, "export": export, "bench": bench,
            "parity": parity, "serve": serve, "serve-bench": serve_bench, "data": data, "clean": clean, "cache": cache,
            "synth": synth}


def build_parser() -> argparse.ArgumentParser:
    """The `emotion` parser: one sub-parser per entry of `COMMANDS`."""
    parser = Parser(prog="emotion", description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 2)[2],
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"emotion {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, command in COMMANDS.items():
        command.add_arguments(sub.add_parser(name, help=command.HELP))
    return parser


def early_checks(args) -> None:
    """What a command can check with no framework (its `check`): paths, model files (through `emotion.guard`),
    settings. Told in one line before TensorFlow, JAX or PyTorch is imported; the commands check again where they
    use them."""
    check = getattr(COMMANDS[args.command], "check", None)
    if check is not None:
        check(args)


@contextmanager
def stops_for(command: str):
    """Ctrl-C and SIGTERM stop the command (`errors.stops_as_interrupts`); `serve` has its own shutdown, and
    keeps it."""
    if command in ("serve", "serve-bench"):
        yield
        return
    with stops_as_interrupts():
        yield


def interrupted(args, e: KeyboardInterrupt) -> int:
    """The one line of an interrupted command, on a line of its own (not glued to a progress bar), with what the
    command says about continuing (`fit`: the checkpoint and the --resume command)."""
    sys.stdout.flush()
    fresh = "\n" if sys.stdout.isatty() or sys.stderr.isatty() else ""
    how = getattr(COMMANDS[args.command], "interrupted", None)
    hint = how(args) if how else ""
    what = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
    tell(f"{fresh}emotion: {what}" + (f"; {hint}" if hint else ""))
    return 143 if isinstance(e, Terminated) else 130


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
        with stops_for(args.command):
            early_checks(args)  # bad paths, run folders and hostile model files: told before a framework loads
            pick_runtime(args)  # no framework here but onnxruntime: a shipped model runs on its ONNX export
            if hasattr(args, "backend") and uses_keras(args):
                backends.select(args.backend, deterministic=bool(getattr(args, "deterministic", False)))
            rc = COMMANDS[args.command].run(args)
            sys.stdout.flush()  # a full disk under a redirected stdout is told here, not at exit
            return rc
    except KeyboardInterrupt as e:
        return interrupted(args, e)
    except BrokenPipeError as e:  # the reader went away (`emotion predict ... | head`): stop writing, say so once
        _quiet_stdout(e)  # what is still buffered is dropped, not written again at exit
        tell(f"emotion: error: {user_os_error(e)}")
        return 2
    except Exception as e:
        if os.environ.get("EMOTION_DEBUG"):
            raise

        told = user_os_error(e)  # a full disk, a read-only folder: the user's to fix, in one line
        if told is not None:
            _quiet_stdout(e)
            tell(f"emotion: error: {told}")
            return 2
        known = isinstance(e, EmotionError | BackendError)
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        prefix = "error" if known else f"internal error ({type(e).__name__})"
        hint = "" if known else " (EMOTION_DEBUG=1 shows the traceback)"
        tell(f"emotion: {prefix}: {text}{hint}")
        return 2 if known else 3


def _quiet_stdout(e: OSError) -> None:
    """After a failed write to stdout (``> /dev/full``), what is still buffered would fail again at exit: drop it."""
    if e.filename is None:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
