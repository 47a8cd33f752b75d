"""`emotion parity`: train under every backend from the same weights and compare (parity.md)."""

from __future__ import annotations

import argparse

from emotion.tools import parity
from emotion.tools.parity import command

HELP = "train under every backend from the same weights and compare (parity.md)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    parity.add_arguments(p)


def run(args) -> int:
    return command(args)
