"""Writing files so that nothing is lost: every file the package writes (run folders, exports, annotated images,
videos, CSVs, plots) goes to a temporary name beside its target and is renamed into place (`os.replace` is atomic
on POSIX), so a full disk or a kill leaves the old file whole, never a truncated one; an output that is one of the
inputs is refused; and a full disk, a read-only folder or a closed pipe is told in one line (`user_os_error`).

    with atomic_path("exports/model.tflite") as tmp:   # write tmp; on success it replaces the target
        tmp.write_bytes(data)
    refuse_same_file("clip.mp4", ["clip.mp4"], "--out")  # EmotionError: --out clip.mp4 is an input
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

from emotion.errors import EmotionError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(target: str | Path, suffix: str = ""):
    """Yield a temporary path beside ``target`` (same folder, so the rename is atomic); on success it is synced
    and renamed onto ``target``, on error removed and ``target`` left as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix or target.suffix}", dir=target.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the target gets what a plain open() gives
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as e:
        if e.filename is None:  # (zipfile, h5py, numpy raise without one): the error names what was being written
            e.filename = str(target)
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_dir(target: str | Path):
    """A temporary folder beside ``target`` (a folder: a SavedModel); on success it takes ``target``'s place
    (an old one is moved aside first and removed after), on error it is removed and ``target`` left as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.replace(target, old / "x")
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_atomic(target: str | Path, data: str | bytes) -> None:
    with atomic_path(target) as tmp:
        Path(tmp).write_bytes(data.encode() if isinstance(data, str) else data)


def refuse_same_file(output: str | Path | None, inputs: Iterable[str | Path], flag: str) -> None:
    """An output that is one of the inputs (the same file, by device and inode, whatever the path) is refused:
    writing it would destroy what is being read."""
    if output is None or not Path(output).exists():
        return
    out = os.stat(output)
    for path in inputs:
        try:
            st = os.stat(path)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (out.st_dev, out.st_ino):
            raise EmotionError(f"{flag} {output} is an input ({path}): it would be replaced by its own output; "
                               "write somewhere else")


def refuse_existing(target: str | Path | None, overwrite: bool, flag: str = "--out") -> None:
    if target is not None and Path(target).exists() and not overwrite:
        raise EmotionError(f"{flag} {target} exists; pass --overwrite to replace it")


# OSErrors that are the user's conditions, not bugs: what to do about each
USER_ERRNOS = {
    errno.ENOSPC: "no space left on the device: free some space, or write somewhere else",
    errno.EDQUOT: "disk quota exceeded: free some space, or write somewhere else",
    errno.EROFS: "the file system is read-only: write somewhere else",
    errno.EACCES: "permission denied: write somewhere you may, or change the permissions",
    errno.EPERM: "operation not permitted: write somewhere you may",
    errno.EPIPE: "the reader of the output went away (a closed pipe)",
    errno.EFBIG: "the file is too large for this file system: write somewhere else",
}


def user_os_error(e: BaseException) -> str | None:
    """One line for an OSError that the user can act on (a full disk, a read-only folder, a closed pipe),
    naming the path; None for any other error (a bug, told as an internal error)."""
    if not isinstance(e, OSError) or e.errno not in USER_ERRNOS:
        return None
    where = e.filename if e.filename is not None else "the output (standard output, where it is redirected)"
    return f"cannot write {where}: {USER_ERRNOS[e.errno]}"
