"""`emotion data`: import a data set as image folders."""

from __future__ import annotations

import argparse
import sys

from emotion.config import parse_names
from emotion.data.fer2013 import import_csv

HELP = "import a data set as image folders"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", choices=["fer2013"], help="fer2013: the official Kaggle CSV (emotion,pixels,Usage)")
    p.add_argument("csv", help="the CSV file")
    p.add_argument("out", help="new folder; gets train/ val/ test/ with one subfolder per class")
    p.add_argument("--classes", type=parse_names, help="keep only these emotions, e.g. happy,sad")


def run(args) -> int:
    result = import_csv(args.csv, args.out, args.classes)
    for line in result["malformed"][:20]:
        print(f"malformed: {line}", file=sys.stderr)
    if len(result["malformed"]) > 20:
        print(f"... and {len(result['malformed']) - 20} more malformed rows", file=sys.stderr)
    for split, counts in result["written"].items():
        print(f"{split}: {sum(counts.values())} images {counts}")
    print(f"skipped {len(result['malformed'])} malformed row(s); wrote {args.out}")
    return 0
