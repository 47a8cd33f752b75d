"""`emotion synth`: draw a deterministic synthetic happy/sad face set."""

from __future__ import annotations

import argparse

from emotion.data.synth import generate

HELP = "draw a deterministic synthetic happy/sad face set"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="folder to create (happy/ and sad/ inside)")
    p.add_argument("--per-class", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=128)


def run(args) -> int:
    counts = generate(args.out, args.per_class, args.seed, args.size)
    print(f"wrote {sum(counts.values())} synthetic faces to {args.out} ({counts})")
    return 0
