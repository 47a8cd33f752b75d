"""Test metrics from predicted probabilities, in numpy: one definition for every backend and every command.

    score(probs, labels, ["happy", "sad"])
    # {"accuracy": .., "balanced_accuracy": .., "precision": .., "recall": .., "f1": .., "f1_macro": .., "loss": ..,
    #  "confusion_matrix": [[tn, fp], [fn, tp]]}

Binary: ``probs`` is P(second class), shape (n,) or (n, 1); precision/recall/f1 are for the second class
(``sad``), as Keras's Precision/Recall metrics report them during training. Multi-class: ``probs`` is (n, k);
precision/recall/f1 are macro averages, with the per-class values under ``per_class``.
"""

from __future__ import annotations

import math

import numpy as np

EPS = 1e-7
ALPHA = 0.05  # a result is "better than the majority class" when chance alone would give it less often than this


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): how often answering at accuracy ``p`` gets ``k`` of ``n`` right or more."""
    if k <= 0:
        return 1.0
    if p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p)
            + (n - i) * math.log1p(-p) for i in range(k, n + 1)]
    top = max(logs)
    return float(min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs)))


def vs_majority(correct: int, n: int, majority: int) -> dict:
    """Is ``correct`` of ``n`` better than always answering the majority class (``majority`` of ``n``) by more
    than chance allows? A one-sided binomial test against the majority share, at `ALPHA`."""
    share = majority / n if n else 1.0
    p_value = binomial_tail(correct, n, share) if n else 1.0
    return {"majority_share": share, "p_value": p_value, "better_than_majority": bool(n and p_value < ALPHA)}


def chance_line(result: dict, what: str = "test") -> str | None:
    """The one line `fit`, `test` and `cv` print when a result is not better than the majority class."""
    check = result.get("vs_majority") or {}
    if not check or check["better_than_majority"]:
        return None
    return (f"warning: {what} accuracy {result['accuracy']:.4f} (n={result['n']}) is not better than always "
            f"answering the majority class ({check['majority_share']:.4f}) by more than chance allows "
            f"(binomial p = {check['p_value']:.2f}): this model has not shown it learned anything")


def figure(value) -> str:
    """A metric for people: 4 decimals, or "undefined" (null in JSON) where it is 0/0."""
    return "undefined" if value is None else f"{value:.4f}"


def predicted_labels(probs) -> np.ndarray:
    probs = np.asarray(probs)
    if probs.ndim == 1 or probs.shape[-1] == 1:
        return (probs.reshape(-1) > 0.5).astype(int)
    return probs.argmax(-1)


def _ratio(a, b) -> float | None:
    """a / b, or None (null in JSON: undefined) where b is 0."""
    return float(a / b) if b else None


def _mean(values) -> float | None:
    """The mean of the defined values, None where none is."""
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def score(probs, labels, class_names) -> dict:
    """Accuracy, balanced accuracy, precision, recall, f1, loss, the confusion matrix and per-class figures.

    A figure that is 0/0 is undefined and is None (null in JSON), never 0 or 1: the recall of a class with no
    image in the split, the precision of a class nothing was predicted as, and the f1 of a class that is neither
    present nor predicted. Macro averages are over the classes where the figure is defined. ``warnings`` says, in
    one line each, which classes had none."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels, dtype=int)
    k = len(class_names)
    pred = predicted_labels(probs)
    cm = np.zeros((k, k), dtype=int)
    np.add.at(cm, (labels, pred), 1)
    if k == 2:
        p = np.clip(probs.reshape(-1), EPS, 1 - EPS)
        loss = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)) if len(labels) else 0.0
    else:
        p = np.clip(probs[np.arange(len(labels)), labels], EPS, 1.0)
        loss = -np.mean(np.log(p)) if len(labels) else 0.0
    per_class, warnings = {}, []
    for i, c in enumerate(class_names):
        tp, predicted, support = cm[i, i], cm[:, i].sum(), cm[i, :].sum()
        prec, rec = _ratio(tp, predicted), _ratio(tp, support)
        f1 = _ratio(2 * tp, predicted + support)  # = 2PR/(P+R) where both are defined
        per_class[c] = {"precision": prec, "recall": rec, "f1": f1, "support": int(support)}
        if not support:
            warnings.append(f"class {c!r} has no images here: its recall is undefined (null)"
                            + ("" if predicted else ", and so are its precision and f1"))
        elif not predicted:
            warnings.append(f"no image was predicted as {c!r}: its precision is undefined (null)")
    if k == 2:
        summary = {m: per_class[class_names[1]][m] for m in ("precision", "recall", "f1")}
    else:
        summary = {m: _mean(v[m] for v in per_class.values()) for m in ("precision", "recall", "f1")}
    present = [v for v in per_class.values() if v["support"]]
    out = {
        "accuracy": _ratio(np.trace(cm), cm.sum()) or 0.0,
        # the mean recall over the classes present: an imbalanced folder cannot flatter it
        "balanced_accuracy": float(np.mean([v["recall"] for v in present])) if present else 0.0,
        **summary,
        "f1_macro": _mean(v["f1"] for v in per_class.values()),
        "loss": float(loss),
        "n": int(len(labels)),
        "vs_majority": vs_majority(int(np.trace(cm)), int(cm.sum()), int(cm.sum(axis=1).max()) if k else 0),
        "confusion_matrix": cm.tolist(),
        "per_class": per_class,
    }
    if warnings:
        out["warnings"] = warnings
    return out


def score_classes(probs, labels, folder_names, model_names, restrict: bool = False) -> dict:
    """`score` for a folder whose classes are a subset of a model's, matched by name.

    ``probs``: (n, k) probabilities over ``model_names``; ``labels``: each image's index in ``folder_names``.
    Without ``restrict`` the prediction is the top class among all the model's, so a face predicted as a class
    that has no folder counts as wrong, and the confusion matrix has a row per folder class and a column per
    model class. With ``restrict`` the prediction is the top class among the folder's classes only (the
    probabilities renormalised over them): an eight-emotion model answers happy vs sad on a happy/sad folder.
    ``balanced_accuracy`` is the mean recall over the folder's classes; ``predicted_classes`` names the columns.

        score_classes(probs8, labels, ["happy", "sad"], EIGHT, restrict=True)["balanced_accuracy"]
    """
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels, dtype=int)
    cols = [model_names.index(c) for c in folder_names]
    if restrict or cols == list(range(len(model_names))):
        part = probs[:, cols]
        if restrict:
            part = part / np.maximum(part.sum(1, keepdims=True), EPS)
        out = score(part[:, 1] if len(cols) == 2 else part, labels, folder_names)
        out["predicted_classes"] = list(folder_names)
        return out
    k, m = len(folder_names), len(model_names)
    pred = probs.argmax(-1)
    cm = np.zeros((k, m), dtype=int)
    np.add.at(cm, (labels, pred), 1)
    right = cm[np.arange(k), cols]
    p = np.clip(probs[np.arange(len(labels)), np.asarray(cols)[labels]], EPS, 1.0)
    per_class, warnings = {}, []
    for i, c in enumerate(folder_names):
        tp, predicted, support = right[i], cm[:, cols[i]].sum(), cm[i].sum()
        per_class[c] = {"precision": _ratio(tp, predicted), "recall": _ratio(tp, support),
                        "f1": _ratio(2 * tp, predicted + support), "support": int(support)}
        if not support:
            warnings.append(f"class {c!r} has no images here: its recall is undefined (null)")
    present = [v for v in per_class.values() if v["support"]]
    out = {
        "accuracy": _ratio(right.sum(), cm.sum()) or 0.0,
        "balanced_accuracy": float(np.mean([v["recall"] for v in present])) if present else 0.0,
        **{f: _mean(v[f] for v in per_class.values()) for f in ("precision", "recall", "f1")},
        "f1_macro": _mean(v["f1"] for v in per_class.values()),
        "loss": float(-np.mean(np.log(p))) if len(labels) else 0.0,
        "n": int(len(labels)),
        "vs_majority": vs_majority(int(right.sum()), int(cm.sum()), int(cm.sum(axis=1).max()) if k else 0),
        "confusion_matrix": cm.tolist(),
        "predicted_classes": list(model_names),
        "per_class": per_class,
    }
    if warnings:
        out["warnings"] = warnings
    return out
