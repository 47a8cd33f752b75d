"""`emotion clean`: find the files of a data folder that are not valid images, and move them (only when asked)
into a quarantine folder, keeping their relative paths, never deleting one.

    bad = scan_invalid("data")                             # [(path, reason), ...]
    quarantine([p for p, _ in bad], "data", "quarantine")  # moved, with their folders
"""
from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path

from emotion.data.decode import decode_files
from emotion.data.folders import SPLITS, class_folders, is_hidden, is_presplit, list_files
from emotion.errors import EmotionError
from emotion.images import MAX_IMAGE_MB, file_kind, within


def scan_invalid(root: str | Path, classes: list[str] | None = None, max_image_mb: float = MAX_IMAGE_MB,
                 progress: bool | None = None) -> tuple[list[tuple[str, str]], int]:
    """(invalid files with reasons, number of valid files) over every class folder of ``root``."""
    root = Path(root)
    names = class_folders(root, classes)
    bases = [root / s for s in SPLITS] if is_presplit(root) else [root]
    invalid, valid = [], 0
    for base in bases:
        present = [c for c in names if (base / c).is_dir()]
        folder = decode_files(list_files(base, present), present, 16, "rgb", max_image_mb=max_image_mb,
                              inside=base, progress=progress, label=f"checking {base}")
        invalid += folder.invalid
        valid += len(folder)
    return invalid, valid


def quarantine(files: list[str], root: str | Path, dest: str | Path) -> list[tuple[str, str]]:
    """Move ``files`` (under ``root``) to ``dest``, keeping relative paths. Returns the moves.

    Plans first, then moves: every source (there, inside the data folder, not reached through a symlinked
    folder that leads out of it) and every destination (free, its folders creatable, not overwriting anything,
    not inside the data folder unless in a hidden folder) is checked before the first move. A symlink is moved
    as the link, never the file it points to. Should a move still fail, the ones before it are put back."""
    root_real = os.path.realpath(root)
    dest_abs = os.path.abspath(os.path.expanduser(str(dest)))
    if os.path.lexists(dest_abs) and not os.path.isdir(dest_abs):
        raise EmotionError(f"quarantine folder {dest} exists and is not a folder; nothing was moved")
    dest_real = Path(os.path.realpath(dest_abs))
    if within(str(dest_real), root_real) and not any(
            is_hidden(p) for p in dest_real.relative_to(root_real).parts):
        raise EmotionError(f"quarantine folder {dest_real} must be outside the data folder (or a hidden folder in "
                           "it); nothing was moved")
    plan, sources, targets = [], set(), set()
    for f in files:
        src = Path(os.path.realpath(Path(f).parent)) / Path(f).name  # the entry itself: a link stays a link
        if not within(str(src.parent), root_real):
            raise EmotionError(f"{f} lies outside the data folder {root} (through a symlinked folder), and is never "
                               "moved; nothing was moved")
        if src in sources:
            continue  # the same file reached twice (two class folders linking to one)
        try:
            src_stat = os.lstat(src)
        except OSError:
            raise EmotionError(f"{f} is no longer there; nothing was moved") from None
        target = dest_real / src.relative_to(root_real)
        if os.path.lexists(target) or target in targets:
            raise EmotionError(f"{target} already exists; nothing was moved (nothing is ever overwritten)")
        for parent in target.parents:
            if parent == dest_real.parent:
                break
            if os.path.lexists(parent) and not os.path.isdir(parent):
                raise EmotionError(f"cannot make folder {parent}: a file is in the way; nothing was moved")
        special = not (stat.S_ISREG(src_stat.st_mode) or stat.S_ISLNK(src_stat.st_mode))
        if special and _device_of(dest_real) != src_stat.st_dev:
            raise EmotionError(f"cannot move {f} ({file_kind(src_stat.st_mode)}) to another file system; "
                               "nothing was moved")
        sources.add(src)
        targets.add(target)
        plan.append((f, src, target))
    done = []
    for f, src, target in plan:
        try:
            if os.path.lexists(target):
                raise FileExistsError(f"{target} appeared meanwhile")
            target.parent.mkdir(parents=True, exist_ok=True)
            _move(src, target)
        except OSError as e:
            back = [t for _, s, t in reversed(done) if not _put_back(t, s)]
            left = f"; {len(back)} could not be put back: {', '.join(map(str, back))}" if back else ""
            raise EmotionError(f"moving {f} failed ({e.strerror or e}); the {len(done) - len(back)} file(s) moved "
                               f"before it were put back{left}") from None
        done.append((f, src, target))
    return [(str(f), str(target)) for f, _, target in done]


def _device_of(path: Path) -> int:
    """st_dev of ``path`` or of its nearest existing folder."""
    for p in (path, *path.parents):
        try:
            return os.stat(p).st_dev
        except OSError:
            continue
    return -1


def _move(src: Path, target: Path) -> None:
    """Rename ``src`` to ``target`` (which is free); across file systems a regular file is copied and removed,
    a symlink re-created."""
    try:
        os.rename(src, target)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        if os.path.islink(src):
            os.symlink(os.readlink(src), target)
        else:
            shutil.copy2(src, target, follow_symlinks=False)
        os.unlink(src)


def _put_back(target: Path, src: Path) -> bool:
    try:
        if os.path.lexists(src):
            return False
        _move(target, src)
        return True
    except OSError:
        return False
