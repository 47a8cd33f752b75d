"""The report of `emotion bench`: the summary of its measurements, bench.md and bench.png.

    report = json.loads(Path("runs/bench/bench.json").read_text())
    print(markdown(report))                                # what bench.md holds
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emotion.tools import harness

TARGETS = {"pipeline": 1.10, "vs_reference": 2.0, "spread": 1.5}


def scaling_line(sc: dict) -> str:
    """One line for a `measure_scaling` result."""
    if "skipped" in sc:
        return f"data parallel skipped: {sc['skipped']}"
    n, step = sc["devices"], sc["step_s"]
    return (f"compute step {step['1']['median']:.3f} s on 1 device, {step[str(n)]['median']:.3f} s on {n} "
            f"(same global batch): speedup {sc['speedup']:.2f}x, scaling efficiency {sc['efficiency']:.0%}")


# ============================================================================================ report
def summarize(report: dict) -> dict:
    """Ratios to the fastest backend and to the reference, the arithmetic floor, and the speed targets."""
    rows = report["backends"]
    cfg = report["settings"]
    compute = {b: r["compute"]["step_s"]["median"] for b, r in rows.items()}
    e2e = {b: r["end_to_end"]["warm_step_s"]["median"] for b, r in rows.items()}
    cpu = {b: r["end_to_end"]["warm_step_cpu_s"]["median"] for b, r in rows.items()}
    ref = report.get("reference")
    ref_step = ref["warm_step_s"]["median"] if ref else None
    first = next(iter(rows.values()))
    gflops = report["machine"]["sgemm_gflops"]
    floor_step = first["train_gflop_per_image"] * cfg["batch_size"] / gflops
    floor_img_s = gflops / first["forward_gflop_per_image"]
    out = {"fastest_compute": min(compute, key=compute.get), "fastest_end_to_end": min(e2e, key=e2e.get),
           "floor": {"train_gflop_per_step": first["train_gflop_per_image"] * cfg["batch_size"],
                     "step_s": floor_step, "forward_gflop_per_image": first["forward_gflop_per_image"],
                     "images_per_s": floor_img_s},
           "rows": {}}
    for b in rows:
        out["rows"][b] = {
            "compute_x_fastest": compute[b] / min(compute.values()),
            "end_to_end_x_fastest": e2e[b] / min(e2e.values()),
            "end_to_end_cpu_x_fastest": cpu[b] / min(cpu.values()),
            "end_to_end_over_compute_cpu": cpu[b] / rows[b]["compute"]["step_cpu_s"]["median"],
            "end_to_end_over_compute": e2e[b] / compute[b],
            "speedup_vs_reference": ref_step / e2e[b] if ref_step else None,
            "x_floor": e2e[b] / floor_step,
            "inference_share_of_floor": rows[b]["inference"]["images_per_s"]["median"] / floor_img_s,
        }
    fastest = min(e2e.values())
    out["targets"] = {
        "end_to_end <= 1.10 x compute, every backend": all(
            v["end_to_end_over_compute"] <= TARGETS["pipeline"] for v in out["rows"].values()),
        "end_to_end <= 1.10 x compute, every backend (CPU seconds)": all(
            v["end_to_end_over_compute_cpu"] <= TARGETS["pipeline"] for v in out["rows"].values()),
        "fastest end to end >= 2 x faster than the seed reference": (
            ref_step / fastest >= TARGETS["vs_reference"]) if ref_step else None,
        "every backend within 1.5 x of the fastest (end to end)": all(
            v["end_to_end_x_fastest"] <= TARGETS["spread"] for v in out["rows"].values()),
        "every backend within 1.5 x of the fastest (compute only)": all(
            v["compute_x_fastest"] <= TARGETS["spread"] for v in out["rows"].values()),
        "every backend within 1.5 x of the fastest (end to end, CPU seconds)": all(
            v["end_to_end_cpu_x_fastest"] <= TARGETS["spread"] for v in out["rows"].values()),
    }
    return out


def _spread(stats: dict, scale: float = 1.0, fmt: str = "{:.3f}") -> str:
    med, lo, hi = (stats[k] * scale for k in ("median", "min", "max"))
    if len(stats["values"]) < 2:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(lo)}–{fmt.format(hi)})"


def _ratio(x) -> str:
    return "–" if x is None else f"{x:.2f}×"


def _on_accelerator(row: dict) -> bool:
    """Whether a backend's row ran on an accelerator (the arithmetic floor is the host CPU's sgemm rate)."""
    return any(not d.startswith("cpu") for d in row.get("devices", []))


def _accelerators(row: dict) -> str:
    names = row.get("accelerators") or []
    return f" ({', '.join(sorted(set(names)))})" if names else ""


def markdown(report: dict) -> str:
    cfg, m, summary = report["settings"], report["machine"], report["summary"]
    rows, ref, stock = report["backends"], report.get("reference"), report.get("stock") or {}
    floor = summary["floor"]
    versions = ", ".join(f"{b} {r['framework_version']}" for b, r in rows.items())
    keras_version = next(iter(rows.values()))["keras_version"]
    fastest = min(r["end_to_end"]["warm_step_s"]["median"] for r in rows.values())
    fastest_compute = min(r["compute"]["step_s"]["median"] for r in rows.values())
    ref_step = ref["warm_step_s"]["median"] if ref else None
    missing = harness.missing_note(report.get("not_installed") or [])

    speed = []
    for b, r in rows.items():
        s = summary["rows"][b]
        speed.append([b, _spread(r["compute"]["step_s"]), _ratio(s["compute_x_fastest"]),
                      _spread(r["end_to_end"]["warm_step_s"]), _ratio(s["end_to_end_x_fastest"]),
                      f"{s['end_to_end_over_compute']:.2f}", _ratio(s["speedup_vs_reference"]),
                      f"{r['end_to_end']['cold_epoch_s']:.2f}", f"{r['compute']['compile_s']:.2f}"])
    for b, r in stock.items():
        c, e = r["compute"]["step_s"], r["end_to_end"]["warm_step_s"]
        speed.append([f"{b}, stock Keras (`EMOTION_FAST_KERNELS=0`)", _spread(c), _ratio(c["median"] / fastest_compute),
                      _spread(e), _ratio(e["median"] / fastest), f"{e['median'] / c['median']:.2f}",
                      _ratio(ref_step / e["median"] if ref_step else None), f"{r['end_to_end']['cold_epoch_s']:.2f}",
                      f"{r['compute']['compile_s']:.2f}"])
    if ref:
        speed.append(["reference (seed notebook pipeline, tensorflow)", "–", "–", _spread(ref["warm_step_s"]),
                      _ratio(ref["warm_step_s"]["median"] / fastest), "–", "1.00×", f"{ref['first_epoch_s']:.2f}", "–"])

    named = [*rows.items(), *((f"{b}, stock Keras", r) for b, r in stock.items())]
    best_c = min(r["compute"]["step_cpu_s"]["median"] for r in rows.values())
    best_e = min(r["end_to_end"]["warm_step_cpu_s"]["median"] for r in rows.values())
    cpu = [[b, _spread(c), _ratio(c["median"] / best_c), _spread(e), _ratio(e["median"] / best_e)]
           for b, c, e in ((b, r["compute"]["step_cpu_s"], r["end_to_end"]["warm_step_cpu_s"]) for b, r in named)]

    inference = []
    for b, r in named:
        inf, mem = r["inference"], r["memory"]
        share = "–" if _on_accelerator(r) else f"{inf['images_per_s']['median'] / floor['images_per_s']:.0%}"
        inference.append([b, f"{inf['latency_s']['p50'] * 1e3:.1f}", f"{inf['latency_s']['p95'] * 1e3:.1f}",
                          _spread(inf["images_per_s"], fmt="{:.1f}"), share, f"{inf['compile_s']:.2f}",
                          f"{mem['peak_host_mb']:.0f}",
                          "–" if mem["peak_device_mb"] is None else f"{mem['peak_device_mb']:.0f}"])

    lines = [
        "# emotion bench", "",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, {m['os']}; load average "
        f"{m['load_average'][0]} at start, {m.get('load_average_end', ['?'])[0]} at end",
        f"- versions: Keras {keras_version}; {versions}; Python {m['python']}, numpy {m['numpy']}",
        "- devices: " + "; ".join(f"{b} {', '.join(r['devices'])}" + _accelerators(r) for b, r in rows.items()),
        f"- settings: preset `{cfg['preset']}`, {cfg['image_size']}×{cfg['image_size']}, batch {cfg['batch_size']}, "
        f"{cfg['precision']}, device {cfg['device']}, {cfg['repeats']} repeat(s)"
        + (" (quick mode)" if cfg["quick"] else "") + f", data `{cfg['data']}`",
        f"- arithmetic floor: {floor['train_gflop_per_step']:.1f} GFLOP per training step at numpy's "
        f"{m['sgemm_gflops']:.0f} GFLOP/s sgemm = {floor['step_s']:.3f} s/step; inference "
        f"{floor['forward_gflop_per_image']:.3f} GFLOP/image = {floor['images_per_s']:.0f} images/s"
        + ("; the host CPU's rate, no yardstick for a GPU (no share of floor for its rows)"
           if any(_on_accelerator(r) for r in rows.values()) else ""),
        *([f"- {missing}"] if missing else []),
        *(f"- {b}, data parallel: {scaling_line(r['scaling'])}" for b, r in rows.items() if r.get("scaling")),
        "", "Seconds per training step of "
        f"{cfg['batch_size']} images: median (min–max over repeats). Compute only: `train_on_batch` on tensors "
        "already in memory. End to end: `fit` on the image files through `emotion.data.datamodule`, warm epochs; the "
        "cold epoch decodes every file (decode + first epoch). Ratios are to the fastest backend of this run.",
        "",
        harness.table(["backend", "compute step s", "× fastest", "end-to-end step s", "× fastest", "e2e / compute",
                       "× faster than reference", "cold epoch s", "compile + first step s"], speed),
        "", "CPU seconds per step (process time of all the backend's threads): less disturbed than wall time "
        "by other programs on a shared machine, and on an idle one about wall time × busy cores.", "",
        harness.table(["backend", "compute CPU-s", "× fastest", "end-to-end CPU-s", "× fastest"], cpu),
        "", f"Inference (`predict_on_batch`); the floor is the per-image arithmetic at numpy's sgemm rate "
        f"({floor['images_per_s']:.0f} images/s).", "",
        harness.table(["backend", "batch-1 p50 ms", "batch-1 p95 ms", f"batch-{cfg['batch_size']} images/s",
                       "share of floor", "compile s", "peak host MB", "peak GPU MB"], inference),
        "", "Speed targets (medians of this run):", "",
    ]
    for name, ok in summary["targets"].items():
        lines.append(f"- {'n/a' if ok is None else 'met' if ok else 'NOT met'}: {name}")
    return "\n".join(lines) + "\n"


def _error_bars(medians, stats) -> np.ndarray:
    return np.array([[m - s["min"] for m, s in zip(medians, stats, strict=True)],
                     [s["max"] - m for m, s in zip(medians, stats, strict=True)]])


def chart(report: dict, path: str | Path) -> None:
    import matplotlib  # here: matplotlib is optional or slow to import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # here: matplotlib is optional or slow to import

    rows, ref = report["backends"], report.get("reference")
    names = list(rows)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    xs = np.arange(len(names))
    for offset, key, sub, label, color in ((-0.2, "compute", "step_s", "compute only", "teal"),
                                           (0.2, "end_to_end", "warm_step_s", "end to end (warm)", "orange")):
        stats = [rows[b][key][sub] for b in names]
        med = np.array([s["median"] for s in stats])
        err = _error_bars(med, stats)
        left.bar(xs + offset, med, 0.4, yerr=err, capsize=3, label=label, color=color)
    if ref:
        left.axhline(ref["warm_step_s"]["median"], color="crimson", ls="--", label="seed notebook pipeline")
    left.axhline(report["summary"]["floor"]["step_s"], color="gray", ls=":", label="arithmetic floor")
    left.set_xticks(xs, names)
    left.set_ylabel(f"seconds per step (batch {report['settings']['batch_size']})")
    left.set_title("training step (lower is better)")
    left.legend(fontsize=8)
    ips = [rows[b]["inference"]["images_per_s"] for b in names]
    med = np.array([s["median"] for s in ips])
    err = _error_bars(med, ips)
    right.bar(xs, med, 0.5, yerr=err, capsize=3, color="slateblue")
    right.set_xticks(xs, names)
    right.set_ylabel("images / s")
    right.set_title(f"inference, batch {report['settings']['batch_size']} (higher is better)")
    fig.suptitle(f"emotion bench: {report['settings']['preset']} {report['settings']['image_size']}px, "
                 f"{report['machine']['cpu']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
