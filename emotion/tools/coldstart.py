"""How long a cold `emotion predict` on one photo takes, each way it can run, measured side by side.

    python -m emotion.tools.coldstart PHOTO [--repeat 5] [--out docs/coldstart.md]

Each round runs every way once, in a fresh process, in turn (so a busy machine slows them alike); the table gives
the median and the fastest of the rounds. A second table says where a Keras run's time goes (importing the
framework, loading the model, the first prediction, which compiles), measured inside one more process per way.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from emotion import backends
from emotion.files import write_atomic

PHASES = r"""
import json, sys, time
t0 = time.perf_counter()
from emotion import backends
backends.select(sys.argv[1])
import keras
t1 = time.perf_counter()
from emotion.predictor import Predictor
clf = Predictor.load()
t2 = time.perf_counter()
rows = clf.predict(sys.argv[2])
t3 = time.perf_counter()
clf.predict(sys.argv[2])
t4 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "load": t2 - t1, "first": t3 - t2, "again": t4 - t3}))
"""


def ways() -> dict[str, tuple[list[str], dict]]:
    """name -> (emotion's arguments, extra environment)."""
    out = {f"keras, {b} backend": (["predict", "--backend", b], {}) for b in backends.installed()}
    if "jax" in backends.installed():  # JAX's persistent compilation cache (backends/jax.py) off: every compile anew
        out["keras, jax backend, EMOTION_JAX_CACHE=off"] = (["predict", "--backend", "jax"],
                                                             {"EMOTION_JAX_CACHE": "off"})
    try:
        import onnxruntime  # noqa: F401

        out["onnx (onnxruntime, no framework)"] = (["predict", "--runtime", "onnx"], {})
    except ImportError:
        pass
    return out


def timed(args: list[str], env: dict | None = None) -> float:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "emotion", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"emotion {' '.join(args)} failed: {done.stderr.strip().splitlines()[-1:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m emotion.tools.coldstart", description=__doc__.splitlines()[0])
    p.add_argument("photo")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--out", help="also write the tables (markdown) here")
    args = p.parse_args(argv)
    if not Path(args.photo).is_file():
        p.error(f"not a file: {args.photo}")
    table = ways()
    times = {name: [] for name in table}
    for _ in range(args.repeat):
        for name, (cmd, env) in table.items():
            times[name].append(timed([*cmd, args.photo], env))
    lines = [f"Cold `emotion predict` on one photo ({Path(args.photo).name}), {args.repeat} rounds, "
             f"{os.cpu_count()} CPU cores, load average before: {os.getloadavg()[0]:.2f}", "",
             "| way | median s | fastest s |", "|---|---|---|"]
    lines += [f"| {name} | {statistics.median(t):.2f} | {min(t):.2f} |" for name, t in times.items()]
    lines += ["", "Where a Keras run's time goes (one more process each, seconds):", "",
              "| backend | import framework + keras | load model | first predict | second predict |",
              "|---|---|---|---|---|"]
    for b in backends.installed():
        done = subprocess.run([sys.executable, "-c", PHASES, b, args.photo], capture_output=True, text=True,
                              env=dict(os.environ, KERAS_BACKEND=b))
        if done.returncode == 0:
            ph = json.loads(done.stdout.strip().splitlines()[-1])
            lines.append(f"| {b} | {ph['import']:.2f} | {ph['load']:.2f} | {ph['first']:.2f} | {ph['again']:.3f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(Path(args.out), text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
