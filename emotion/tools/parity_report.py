"""The verdict of `emotion parity`: the backends' runs compared against the tolerances, and parity.md.

    verdict = compare(results, crossload, Tolerances())
    print(render({**report, **verdict}))
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from emotion.tools import harness

EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")
TEST_METRICS = ("loss", "accuracy", "precision", "recall", "f1")


@dataclass
class Tolerances:
    loss_rel: float = 0.02  # relative spread of a loss across backends (train, val and test)
    accuracy_points: float = 1.0  # spread of train/val accuracy per epoch, in percentage points
    test_points: float = 1.0  # spread of test accuracy/precision/recall/f1, in percentage points
    crossload: float = 1e-5  # max |dP| when a .keras is loaded under another backend


# ============================================================================================ comparison
def _check(checks: list, name: str, value: float, limit: float, unit: str = "") -> None:
    checks.append({"check": name, "value": value, "tolerance": limit, "unit": unit,
                   "ok": bool(np.isfinite(value) and value <= limit)})


def loss_spread(values) -> float:
    """(max - min) / min over the backends: at least every pairwise relative difference."""
    v = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(v)):
        return float("inf")
    low = max(float(np.min(np.abs(v))), 1e-12)
    return float((v.max() - v.min()) / low)


def points_spread(values) -> float:
    if all(x is None for x in values):  # undefined (0/0) under every backend: they agree
        return 0.0
    v = np.asarray(values, dtype=np.float64)  # undefined under some only (None -> nan): they do not
    return float((v.max() - v.min()) * 100) if np.all(np.isfinite(v)) else float("inf")


def compare(results: dict, crossload: dict, tol: Tolerances) -> dict:
    """Every check of the issue, from the workers' ``result.json`` and ``crossload.json`` contents."""
    names = list(results)
    checks: list[dict] = []
    epochs = min(len(results[b]["history"].get("loss", [])) for b in names)
    per_epoch = []
    for e in range(epochs):
        row = {"epoch": e + 1}
        for m in EPOCH_METRICS:
            vals = [results[b]["history"].get(m, [float("nan")] * epochs)[e] for b in names]
            row[m] = dict(zip(names, vals, strict=True))
            if m.endswith("loss"):
                row[f"{m}_spread"] = loss_spread(vals)
                _check(checks, f"epoch {e + 1} {m}", row[f"{m}_spread"], tol.loss_rel, "relative")
            else:
                row[f"{m}_spread"] = points_spread(vals)
                _check(checks, f"epoch {e + 1} {m}", row[f"{m}_spread"], tol.accuracy_points, "points")
        per_epoch.append(row)
    test = {}
    for m in TEST_METRICS:
        vals = [results[b]["test"][m] for b in names]
        if m == "loss":
            spread = loss_spread(vals)
            _check(checks, "test loss", spread, tol.loss_rel, "relative")
        else:
            spread = points_spread(vals)
            _check(checks, f"test {m}", spread, tol.test_points, "points")
        test[m] = {**dict(zip(names, vals, strict=True)), "spread": spread}

    reference = results[names[0]].get("batches")
    same_batches = all(results[b].get("batches") == reference for b in names) and bool(reference)
    checks.append({"check": "same batches in the same order", "value": float(not same_batches),
                   "tolerance": 0.0, "unit": "", "ok": same_batches})

    matrix = {saver: {loader: crossload.get(loader, {}).get(saver, float("inf")) for loader in names}
              for saver in names}
    worst = max(v for row in matrix.values() for v in row.values())
    _check(checks, "cross-load max |dP|", worst, tol.crossload)

    failures = [c for c in checks if not c["ok"]]
    return {
        "ok": not failures,
        "failures": [_describe_failure(c) for c in failures],
        "per_epoch": per_epoch,
        "test": test,
        "crossload": matrix,
        "batches": {"identical": same_batches, "per_epoch": [len(x) for x in (reference or [])]},
        "runs": {b: {k: results[b].get(k) for k in ("backend", "keras_version", "framework_version", "devices",
                                                      "learning_rate", "seconds")} for b in names},
        "checks": checks,
    }


def _describe_failure(c: dict) -> str:
    if c["unit"] == "relative":
        return f"{c['check']}: spread {c['value']:.2%} > {c['tolerance']:.2%} (--loss-rtol)"
    if c["unit"] == "points":
        flag = "--test-tol" if c["check"].startswith("test") else "--acc-tol"
        return f"{c['check']}: spread {c['value']:.2f} points > {c['tolerance']:g} ({flag})"
    if c["check"].startswith("cross-load"):
        return f"{c['check']} = {c['value']:.3g} > {c['tolerance']:g} (--crossload-tol)"
    return f"{c['check']}: no (the backends did not consume identical batches)"


# ============================================================================================ report
def _f(v: float, digits: int = 4) -> str:
    return "inf" if not np.isfinite(v) else f"{v:.{digits}f}"


def _cells(values: dict, names: list[str], spread: float, loss: bool, points_tol: float, loss_tol: float) -> list:
    """One metric's per-backend values, its spread and whether it is within tolerance (table cells)."""
    if loss:
        return [_f(values[b], 6) for b in names] + [f"{spread:.4%}", "yes" if spread <= loss_tol else "NO"]
    return ([("undefined" if values[b] is None else f"{100 * values[b]:.2f}%") for b in names]
            + [f"{spread:.2f} pt", "yes" if spread <= points_tol else "NO"])


def render(report: dict) -> str:
    """``parity.md``: the tables a person reads."""
    names = report["backends"]["compared"]
    c, tol = report["spec"]["config"], report["tolerances"]
    spec = SimpleNamespace(seed=c["seed"], data=c["data"]["data"], image_size=c["data"]["image_size"],
                           batch_size=c["data"]["batch_size"], preset=c["model"]["preset"],
                           learning_rate=c["model"]["learning_rate"], epochs=c["trainer"]["epochs"])
    runs = [[b, f"{r.get('framework_version')} (Keras {r.get('keras_version')})", ", ".join(r.get("devices") or []),
             f"{r.get('learning_rate'):g}", (r.get("seconds") or {}).get("fit", "")]
            for b, r in ((b, report["runs"][b]) for b in names)]
    runs += [[b, "**not installed: not compared**", "", "", ""] for b in report["backends"]["not_installed"]]
    lines = [
        "# Backend parity",
        "",
        f"{spec.epochs} epoch(s) of `{spec.data}` at {spec.image_size}x{spec.image_size}, batch "
        f"{spec.batch_size}, seed {spec.seed}, preset `{spec.preset}`, learning rate "
        f"{spec.learning_rate:g}; split {report['split']}. Every backend starts from the same initial weights "
        "(`init.weights.h5`) and trains in its own process.",
        "",
        harness.table(["backend", "framework", "devices", "learning rate", "fit seconds"], runs),
    ]
    lines += ["", f"**Result: {'PASS' if report['ok'] else 'FAIL'}**" + (
        "" if report["ok"] else " - " + "; ".join(report["failures"])), ""]

    per_epoch = [[row["epoch"], m, *_cells(row[m], names, row[f"{m}_spread"], m.endswith("loss"),
                                            tol["accuracy_points"], tol["loss_rel"])]
                 for row in report["per_epoch"] for m in EPOCH_METRICS]
    lines += ["## Per epoch", "",
              f"Loss spread = (max - min) / min across backends (tolerance {tol['loss_rel']:.0%}); accuracy spread "
              f"= max - min in percentage points (tolerance {tol['accuracy_points']:g}).", "",
              harness.table(["epoch", "metric", *names, "spread", "ok"], per_epoch)]

    test = [[m, *_cells(row, names, row["spread"], m == "loss", tol["test_points"], tol["loss_rel"])]
            for m, row in report["test"].items()]
    lines += ["", "## Test split", "", harness.table(["metric", *names, "spread", "ok"], test)]

    batches = report["batches"]
    lines += ["", "## Batches", "",
              ("Every backend consumed identical batches (sha1 of pixels and labels) in the same order: "
               if batches["identical"] else "**The backends did NOT consume identical batches**: ")
              + f"{sum(batches['per_epoch'])} batches over {len(batches['per_epoch'])} epoch(s).", ""]

    crossload = [[saver, *(f"{row[b]:.2e}" for b in names)] for saver, row in report["crossload"].items()]
    lines += ["## Cross-load", "",
              f"max |dP| on the test split when the `.keras` saved by one backend (row) is loaded under another "
              f"(column), against the saving backend's own predictions (tolerance {tol['crossload']:g}).", "",
              harness.table(["saved by \\ loaded by", *names], crossload), ""]
    return "\n".join(lines)
