"""`emotion export`: a .keras to SavedModel, ONNX, LiteRT, OpenVINO or torch, each verified (`emotion.tools.export`)."""

from __future__ import annotations

import argparse

from emotion.cli.common import backend_args, check_model
from emotion.files import refuse_existing, refuse_same_file
from emotion.tools import export, export_matrix

HELP = ("export a .keras (SavedModel, ONNX, LiteRT, OpenVINO, torch) and verify it; --matrix: every "
        "format from every backend")


def add_arguments(p: argparse.ArgumentParser) -> None:
    backend_args(p)
    export.add_arguments(p)


def check(args) -> None:
    if not args.matrix:  # an existing export is replaced only when asked, and never by the model it comes from
        refuse_same_file(args.out, [args.model], "--out")
        refuse_existing(args.out, args.overwrite)
    check_model(args)


def run(args) -> int:
    return export_matrix.matrix_command(args) if args.matrix else export.command(args)
