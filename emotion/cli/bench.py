"""`emotion bench`: time training and inference under each backend (bench.md/.json/.png)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from emotion.tools import bench
from emotion.tools.bench import config_from_args, run_bench

HELP = "time training and inference under each backend (bench.md/.json/.png)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    bench.add_arguments(p)


def run(args) -> int:
    cfg = config_from_args(args)
    run_bench(cfg, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print((Path(cfg.out) / "bench.md").read_text(), end="")
    return 0
