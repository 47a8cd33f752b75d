"""`emotion clean`: list (and optionally quarantine) files that are not valid images."""

from __future__ import annotations

import argparse

from emotion.cli.common import data_args, text
from emotion.data.clean import quarantine, scan_invalid

HELP = "list (and optionally quarantine) files that are not valid images"


def add_arguments(p: argparse.ArgumentParser) -> None:
    data_args(p, required=True)
    p.add_argument("--quarantine", help="move invalid files here, keeping their relative paths")


def run(args) -> int:
    invalid, valid = scan_invalid(args.data, args.classes, args.max_image_mb, progress=False if args.quiet else None)
    for path, reason in invalid:
        print(f"invalid: {text(path)}: {reason}")
    print(f"{valid} valid image(s), {len(invalid)} invalid in {args.data}")
    if args.quarantine and invalid:
        moves = quarantine([p for p, _ in invalid], args.data, args.quarantine)
        print(f"moved {len(moves)} file(s) to {args.quarantine}")
    elif invalid:
        print("nothing was changed; --quarantine DIR moves them out")
    return 0
