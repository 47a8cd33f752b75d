"""`emotion parity`: train under every backend from the same weights and compare (parity.md)."""

from __future__ import annotations

import argparse

HELP = "train under every backend from the same weights and compare (parity.md)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from emotion.tools import parity

    parity.add_arguments(p)


def run(args) -> int:
    from emotion.tools.parity import command

    return command(args)
