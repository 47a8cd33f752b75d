"""`emotion export --matrix`: one model to every format from every backend that can write it, each verified with its
own runtime (export.md).

    result = matrix("runs/mine/imageclassifier.keras", "runs/export")
    print(render_matrix(result))
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path

from emotion import backends
from emotion.errors import EmotionError
from emotion.files import write_atomic
from emotion.tools import harness
from emotion.tools.export import ACCURACY_POINTS, FORMATS, TOLERANCE, log

MATRIX_RUNS = [(fmt, None) for fmt in FORMATS] + [("litert", "dynamic"), ("litert", "int8")]


def matrix(model: str, out: str | Path, data: str | None = None, backend_names=None, tolerance: float = TOLERANCE,
           accuracy_points: float = ACCURACY_POINTS, max_model_mb: float | None = None) -> dict:
    """Every (backend, format) as a step of its own process (`export_model` under that backend, through
    `emotion.tools.harness`); ``OUT/export.md`` and ``OUT/export.json``.

    A combination the backend's table promises must export and pass its check; any other must be refused with
    a one-line error. ``ok`` is False when either does not hold. A backend that is not installed is named in
    ``not_installed`` and has no cells."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EmotionError(f"--out {out} exists and is not a folder")
    names, missing = harness.plan(backend_names, what="export --matrix", log=log)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for b in names:
        for fmt, quantize in MATRIX_RUNS:
            promised = fmt in backends.export_formats(b) and (
                quantize is None or hasattr(importlib.import_module(f"emotion.backends.{b}"), "litert_quantization"))
            name = f"model-{quantize}" if quantize else "model"
            target = out / b / (name + (FORMATS[fmt].suffix or ""))
            row = {"backend": b, "format": fmt, "quantize": quantize, "promised": promised,
                   "log": str(out / b / f"{fmt}{'-' + quantize if quantize else ''}.log")}
            log(f"export matrix: {b} -> {fmt}{' ' + quantize if quantize else ''} ...")
            try:
                report = harness.run_step(b, "emotion.tools.export:export_model", {
                    "model_path": str(model), "fmt": fmt, "out": str(target), "quantize": quantize, "data": data,
                    "tolerance": tolerance, "accuracy_points": accuracy_points, "max_model_mb": max_model_mb},
                    what=f"{fmt} export", log=row["log"])
                row.update(report=report, status="pass" if report["ok"] else "FAIL: check",
                           ok=bool(report["ok"]) and promised)
            except harness.StepError as e:
                row.update(status="refused" if e.refused else "crashed", error=e.line, ok=(not promised) and e.refused)
            rows.append(row)
    result = {"model": str(model), "rows": rows, "not_installed": missing, "ok": all(r["ok"] for r in rows),
              "tolerance": {"max_abs_dp": tolerance, "accuracy_points": accuracy_points}}
    write_atomic(out / "export.json", json.dumps(result, indent=2))
    write_atomic(out / "export.md", render_matrix(result))
    return result


def render_matrix(result: dict) -> str:
    names = list(dict.fromkeys(r["backend"] for r in result["rows"]))
    kinds = list(dict.fromkeys((r["format"], r["quantize"]) for r in result["rows"]))
    cell = {(r["backend"], r["format"], r["quantize"]): r for r in result["rows"]}
    tol = result.get("tolerance") or {"max_abs_dp": TOLERANCE, "accuracy_points": ACCURACY_POINTS}

    def show(r):
        if "report" in r:
            rep = r["report"]
            mark = "yes" if rep["ok"] else "**FAIL**"
            extra = (f"acc {rep.get('accuracy_change_points', float('nan')):+.1f} pt" if rep.get("quantize")
                     else f"dP {rep['max_abs_dp']:.1e}")
            return f"{mark}: {extra}, {rep['bytes'] / 1e6:.2f} MB"
        return ("no (refused)" if r["status"] == "refused" else "**crashed**") + ("" if r["ok"] else " **UNEXPECTED**")

    grid = [[fmt + (f" --quantize {q}" if q else ""), *(show(cell[(b, fmt, q)]) for b in names)] for fmt, q in kinds]
    missing = harness.missing_note(result.get("not_installed") or [])
    dp = f"{tol['max_abs_dp']:.0e}".replace("e-0", "e-")
    lines = ["# Export matrix", "", f"Model: `{result['model']}`. Each cell: one `emotion export` process; "
             f"'yes' = written and verified with its own runtime (float: max |dP| vs Keras <= {dp}; quantized: "
             f"test accuracy within {tol['accuracy_points']:g} point), 'no' = refused with a one-line reason.", "",
             *([missing, ""] if missing else []), harness.table(["format", *names], grid)]
    lines += ["", "Refusals:", ""]
    for r in result["rows"]:
        if r.get("status") in ("refused", "crashed"):
            quantize = " " + r["quantize"] if r["quantize"] else ""
            lines.append(f"- {r['backend']} / {r['format']}{quantize}: {r['error']}")
    lines += ["", f"**{'PASS' if result['ok'] else 'FAIL'}**", ""]
    return "\n".join(lines)


def matrix_command(args) -> int:
    """``emotion export --matrix``: print the matrix (or its JSON); exit 1 when a cell is not as promised."""
    for flag, value in (("--format", args.format), ("--quantize", args.quantize),
                        ("--backend", getattr(args, "backend", None))):
        if value is not None:
            raise EmotionError(f"{flag} does not go with --matrix (it runs every format under every backend in "
                               "--backends)")
    if not Path(args.model).is_file():
        raise EmotionError(f"model file not found: {args.model}")
    result = matrix(args.model, args.out, args.data, args.backends, args.tolerance, args.accuracy_tol,
                    args.max_model_mb)
    print(json.dumps(result, indent=2) if args.json else render_matrix(result), end="\n" if args.json else "")
    return 0 if result["ok"] else 1
