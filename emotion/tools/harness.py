"""One harness for the per-backend experiments (`emotion bench`, `emotion parity`, `emotion export --matrix`).

    present, missing = plan(["jax", "torch"], need=2, what="parity", log=log)   # missing: named, left out
    result = run_step("jax", "emotion.tools.bench:measure_json", {"config": {...}}, what="bench", timeout=600)
    run(["python", "scripts/seed_reference.py", ...], "tensorflow", what="the seed reference")
    table(["backend", "step s"], [["jax", "0.31"]])                              # a markdown table

A step is ``MODULE:FUNCTION`` called with JSON arguments in a fresh ``python -m emotion.tools.harness`` process with
``KERAS_BACKEND`` set (and this checkout first on ``PYTHONPATH``); the worker selects the backend
(`backends.select`) before the function imports Keras, and the function's return value comes back as JSON.
A failed step raises `StepError` with one line: what ran, under which backend, the last meaningful line of its
output (an ``emotion: error:`` line where there is one), and the full log file when there is one. An
`EmotionError` in the step (a refusal) exits 2; anything else is a crash (its traceback goes to the log).

A requested backend that is not installed is named (logged, and listed by the caller's report), left out of
every run, and never counted as agreeing or compared.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from emotion import backends
from emotion.errors import EmotionError
from emotion.files import write_atomic

REPO = Path(__file__).resolve().parents[2]
ERROR_PREFIX = "emotion: error: "
_COUNT = {1: "one", 2: "two", 3: "three"}


class StepError(EmotionError):
    """A step failed (one line). ``refused``: it ended with a one-line `EmotionError` (exit 2), not a crash."""

    def __init__(self, message: str, backend: str, line: str, returncode: int | None = None,
                 log: Path | None = None, timed_out: bool = False, refused: bool = False):
        super().__init__(message)
        self.backend, self.line, self.returncode, self.log = backend, line, returncode, log
        self.timed_out, self.refused = timed_out, refused


# ============================================================================================ backends
def log(msg: str) -> None:
    """A progress line, on stderr (stdout is for what a command reports)."""
    print(msg, file=sys.stderr, flush=True)


def check_names(names) -> list[str]:
    """``names`` (a list or a comma-separated string) without repeats; an unknown or empty one is an error."""
    if isinstance(names, str):
        names = names.split(",")
    names = [n.strip() for n in names if n and n.strip()]
    unknown = [n for n in names if n not in backends.NAMES]
    if unknown or not names:
        raise EmotionError(f"unknown backend(s) {unknown or names}: choose from {','.join(backends.NAMES)}")
    return list(dict.fromkeys(names))


def plan(requested=None, need: int = 1, what: str = "this", log=log) -> tuple[list[str], list[str]]:
    """(installed backends to run, requested backends that are not installed): the one rule for a missing
    backend. Each missing one is logged by name; fewer than ``need`` installed is a one-line error."""
    names = check_names(requested) if requested else list(backends.NAMES)
    installed = backends.installed()
    present = [b for b in names if b in installed]
    missing = [b for b in names if b not in installed]
    if len(present) < need:
        raise EmotionError(
            f"{what} needs at least {_COUNT.get(need, need)} installed backend{'s' if need > 1 else ''}; installed: "
            f"{', '.join(installed) or 'none'}{'; not installed: ' + ', '.join(missing) if missing else ''}")
    for b in missing:
        log(f"{what}: backend {b} is not installed: left out, not compared (pip install -e '.[{b}]')")
    return present, missing


def missing_note(missing: list[str]) -> str:
    """The report line that names the backends left out ("" when none)."""
    if not missing:
        return ""
    return (f"Not installed here, left out and not compared: {', '.join(missing)} "
            f"(pip install -e '.[{','.join(missing)}]').")


# ============================================================================================ processes
def environment(backend: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment with ``KERAS_BACKEND=backend``, this checkout first on ``PYTHONPATH``, and
    ``extra`` on top."""
    env = dict(os.environ, KERAS_BACKEND=backend)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env.update(extra or {})
    return env


def last_line(text: str) -> str:
    """The line that says why a process failed: its last ``emotion: error:`` line (prefix dropped), else its
    last non-blank line; at most 200 characters."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(ERROR_PREFIX)]
    line = errors[-1][len(ERROR_PREFIX):] if errors else (lines[-1] if lines else "no output")
    return line[:200]


def run(argv: list[str], backend: str, *, what: str, timeout: float | None = None, log: Path | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``argv`` under ``backend`` in a fresh process; its output goes to ``log`` (stdout and stderr together)
    when given, else is captured. A failure or a timeout raises `StepError`."""
    where = f" (full log: {log})" if log else ""
    if log:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
    try:
        if log:
            with open(log, "w") as f:
                proc = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                                      env=environment(backend, env))
            output = Path(log).read_text(errors="replace")
        else:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=environment(backend, env))
            output = proc.stderr if proc.stderr.strip() else proc.stdout
    except subprocess.TimeoutExpired:
        raise StepError(f"{what} under {backend} took longer than {timeout:g} s{where}", backend,
                        f"took longer than {timeout:g} s", log=log, timed_out=True) from None
    if proc.returncode != 0:
        line = last_line(output)
        refused = proc.returncode == 2 and ERROR_PREFIX.strip() in output
        raise StepError(f"{what} under {backend} failed (exit {proc.returncode}): {line}{where}", backend, line,
                        proc.returncode, log, refused=refused)
    return proc


def run_step(backend: str, target: str, args: dict | list | None = None, *, what: str | None = None,
             timeout: float | None = None, log: Path | None = None, env: dict[str, str] | None = None,
             deterministic: bool = False):
    """Call ``target`` (``"module:function"``) with ``args`` (keywords, or a list of positional arguments)
    under ``backend`` in a fresh process; returns what it returned (through JSON)."""
    with tempfile.TemporaryDirectory(prefix="emotion-step-") as tmp:
        result = Path(tmp) / "result.json"
        argv = [sys.executable, "-m", "emotion.tools.harness", target, json.dumps(args if args is not None else {}),
                str(result)] + (["--deterministic"] if deterministic else [])
        run(argv, backend, what=what or target, timeout=timeout, log=log, env=env)
        return json.loads(result.read_text())


# ============================================================================================ the worker
def worker(argv: list[str] | None = None) -> int:
    """``python -m emotion.tools.harness MODULE:FUNCTION ARGS_JSON RESULT_JSON [--deterministic]``: the process side
    of `run_step` (``KERAS_BACKEND`` names the backend)."""
    p = argparse.ArgumentParser(prog="python -m emotion.tools.harness")
    p.add_argument("target")
    p.add_argument("args")
    p.add_argument("result")
    p.add_argument("--deterministic", action="store_true")
    a = p.parse_args(argv)

    try:
        backends.select(os.environ.get("KERAS_BACKEND"), deterministic=a.deterministic)
        module, _, name = a.target.partition(":")
        fn = getattr(importlib.import_module(module), name)
        args = json.loads(a.args)
        value = fn(*args) if isinstance(args, list) else fn(**args)
    except (EmotionError, backends.BackendError) as e:
        text = str(e).strip()
        print(ERROR_PREFIX + (text.splitlines()[0] if text else type(e).__name__), file=sys.stderr, flush=True)
        return 2
    write_atomic(Path(a.result), json.dumps(value))
    return 0


# ============================================================================================ reports
def _cell(value) -> str:
    return " ".join(str(value).split("\n")).replace("|", "\\|")


def table(headers: list, rows: list[list]) -> str:
    """A markdown table (no trailing newline); ``|`` in a cell is escaped, a newline becomes a space."""
    lines = ["| " + " | ".join(_cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"table row has {len(row)} cells for {len(headers)} headers: {row}")
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(worker())
