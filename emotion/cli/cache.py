"""`emotion cache`: show (info) or empty (clear) the decoded-image cache."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from emotion.cli.common import CACHE_HELP
from emotion.data.cache import cache_dir, cache_entries, clear_cache, remove_files
from emotion.errors import EmotionError

HELP = "show (info) or empty (clear) the decoded-image cache"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["info", "clear"],
                   help="info: where the cache is, its entries and size; clear: delete its entries (only those)")
    p.add_argument("--cache", help=CACHE_HELP.replace(", or 'off'", ""))


def run(args) -> int:
    where = cache_dir(args.cache)
    if where is None:
        raise EmotionError("the cache is off ('off' from --cache or $EMOTION_CACHE): there is nothing to show or clear")
    if os.path.lexists(where) and not where.is_dir():
        raise EmotionError(f"cache location {where} is not a folder")
    compiled = _compiled_programs(where / "jax")
    if args.action == "clear":
        (files, size), (programs, program_bytes) = clear_cache(where), remove_files(compiled)
        files, size = files + programs, size + program_bytes
        print(f"removed {files} cache file(s), {_size(size)}, from {where}; nothing else there was touched")
        return 0
    found = cache_entries(where)
    keys = {p.name.split(".")[0] for p in found["entries"]}
    print(f"cache: {where}" + ("" if where.is_dir() else " (not created yet)"))
    print(f"entries: {len(keys)} decoded folder(s), {_size(found['bytes'])} in all")
    if compiled:
        print(f"JAX compiled programs (jax/): {len(compiled)} file(s), "
              f"{_size(sum(p.lstat().st_size for p in compiled))}")
    if found["old"]:
        print(f"old-format entries: {len(found['old']) // 2 or 1} "
              "(never read again; 'emotion cache clear' removes them)")
    if found["stale"]:
        print(f"temporary files of interrupted writers: {len(found['stale'])} (removed by the next run or by clear)")
    return 0


def _compiled_programs(folder: Path) -> list[Path]:
    """The regular files of JAX's persistent compilation cache in emotion's cache folder (backends/jax.py)."""
    try:
        return sorted(Path(e.path) for e in os.scandir(folder) if e.is_file(follow_symlinks=False))
    except OSError:
        return []


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"
