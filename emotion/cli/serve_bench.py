"""`emotion serve-bench`: load-test `emotion serve`, batched and not (serve-bench.md/.json/.png)."""

from __future__ import annotations

import argparse

from emotion.tools import serve_bench
from emotion.tools.serve_bench import command

HELP = "load-test `emotion serve`, batched and not (serve-bench.md/.json/.png)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    serve_bench.add_arguments(p)


def run(args) -> int:
    return command(args)
