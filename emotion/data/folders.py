"""Folders of class subfolders: the class names, the files under each, and the pre-split layout
(``train/ val/ test/``).

    class_folders("../shared/data/web-happy-sad")          # ['happy', 'sad']
    is_presplit(Path("../shared/data/fer2013"))            # True
    match_classes(["Happy", "sad"], MODEL_CLASSES, base)   # ['happy', 'sad']: each folder's class of a model
"""
from __future__ import annotations

import os
from pathlib import Path

from emotion.errors import EmotionError

SPLITS = ("train", "val", "test")

def is_hidden(name: str) -> bool:
    return name.startswith(".")


def subdirs(path: Path) -> list[str]:
    """The sorted names of ``path``'s visible subfolders (its class folders)."""
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not is_hidden(p.name))



def _files_under(folder: Path) -> list[Path]:
    """Every non-hidden entry below ``folder`` but its folders. A symlinked folder is not followed (no loops, no
    reach out of the data folder): it is listed, and so reported as not a regular file."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        dirnames[:] = sorted(d for d in dirnames if not is_hidden(d) and d not in links)
        out += [Path(dirpath) / f for f in sorted(filenames + links) if not is_hidden(f)]
    return out


def is_presplit(root: Path) -> bool:
    """True where ``root`` holds ``train/``, ``val/`` and ``test/`` (used as given, not re-split)."""
    return all((root / s).is_dir() for s in SPLITS)


def class_folders(root: str | Path, classes: list[str] | None = None) -> list[str]:
    """Sorted class names under ``root`` (or ``root/train`` when pre-split), checked against ``classes``."""
    root = Path(root)
    if not root.exists():
        raise EmotionError(f"data folder not found: {root}")
    if not root.is_dir():
        raise EmotionError(f"data path is not a folder: {root}")
    base = root / "train" if is_presplit(root) else root
    present = subdirs(base)
    if classes:
        missing = [c for c in classes if c not in present]
        if missing:
            raise EmotionError(f"class folder(s) {missing} not in {base} (it has: {', '.join(present) or 'none'})")
        names = sorted(dict.fromkeys(classes))
    else:
        names = present
    if len(names) < 2:
        found = f"found {len(names)}" + (f" ({names[0]})" if names else "")
        raise EmotionError(f"need at least two class folders in {base}, {found}")
    return names


def list_files(base: Path, class_names: list[str]) -> list[tuple[Path, int]]:
    """Every non-hidden file under each class folder, recursively, with its class index."""
    return [(p, label) for label, c in enumerate(class_names) for p in _files_under(base / c)]


def match_classes(folders: list[str], known: list[str], base) -> list[str]:
    """The model's class for each class folder: the same name, else the one name that differs only in case
    (a folder ``Happy/`` is the class ``happy``). A folder matching none, or two folders one class, is an error."""
    by_lower: dict[str, list[str]] = {}
    for k in known:
        by_lower.setdefault(k.lower(), []).append(k)

    def model_class(folder: str) -> str | None:
        if folder in known:
            return folder
        same = by_lower.get(folder.lower(), [])
        return same[0] if len(same) == 1 else None

    names = [model_class(c) for c in folders]
    unknown = [c for c, n in zip(folders, names, strict=True) if n is None]
    if unknown:
        raise EmotionError(f"class folder(s) {unknown} in {base} are not classes of the model, which knows: "
                           f"{', '.join(known)}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        same = [c for c, n in zip(folders, names, strict=True) if n in twice]
        raise EmotionError(f"class folders {same} in {base} are the same class of the model "
                           f"({', '.join(twice)}): keep one")
    return names
