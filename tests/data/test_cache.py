"""The decoded-image cache checks itself: an entry that is not exactly what it records is rebuilt, never used;
temporary files of dead writers go; `emotion cache info|clear` touch nothing but our own entries."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_classes

from emotion.cli import main
from emotion.data import cache as cache_module
from emotion.data.cache import cache_dir, load_folder
from emotion.data.decode import Progress, decode_files
from emotion.data.folders import list_files

pytestmark = pytest.mark.once  # touches no Keras backend: `nox -s tests` runs it once


@pytest.fixture
def folder(tmp_path):
    return write_classes(tmp_path / "d")


def entry(cache: Path) -> tuple[Path, Path]:
    (npy,) = cache.glob("emotion-*.npy")
    return npy, npy.with_suffix(".json")


def damage_zero_bytes(npy, meta):
    npy.write_bytes(b"")


def damage_truncated(npy, meta):
    npy.write_bytes(npy.read_bytes()[:-50])


def damage_extra_image(npy, meta):
    images = np.load(npy)
    np.save(npy, np.concatenate([images, images[:1]]))


def damage_inverted_pixels(npy, meta):
    np.save(npy, 255 - np.load(npy))


def damage_flipped_labels(npy, meta):
    m = json.loads(meta.read_text())
    m["labels"] = [1 - v for v in m["labels"]]
    meta.write_text(json.dumps(m))


def damage_not_json(npy, meta):
    meta.write_text("{")


@pytest.mark.parametrize("damage", [damage_zero_bytes, damage_truncated, damage_extra_image, damage_inverted_pixels,
                                    damage_flipped_labels, damage_not_json], ids=lambda f: f.__name__[7:])
def test_a_damaged_entry_is_rebuilt_never_used(folder, tmp_path, damage, monkeypatch):
    cache = tmp_path / "cache"
    names = ["happy", "sad"]
    fresh = load_folder(folder, names, 8, cache=str(cache))
    assert isinstance(fresh.images, np.memmap)  # the entry's images are read where they lie
    fresh.images = np.array(fresh.images)  # a copy: the damage below rewrites the mapped file in place
    npy, meta = entry(cache)
    damage(npy, meta)
    decoded = []
    real = cache_module.decode_files
    monkeypatch.setattr(cache_module, "decode_files", lambda *a, **k: decoded.append(1) or real(*a, **k))
    again = load_folder(folder, names, 8, cache=str(cache))
    assert decoded, "a damaged entry was used"
    assert np.array_equal(again.images, fresh.images) and np.array_equal(again.labels, fresh.labels)
    decoded.clear()
    third = load_folder(folder, names, 8, cache=str(cache))  # the rebuilt entry is whole again, and used
    assert not decoded and np.array_equal(third.images, fresh.images) and third.paths == fresh.paths


def test_entry_records_what_it_holds(folder, tmp_path):
    cache = tmp_path / "cache"
    f = load_folder(folder, ["happy", "sad"], 8, cache=str(cache))
    meta = json.loads(entry(cache)[1].read_text())
    assert meta["shape"] == [6, 8, 8, 3] and meta["dtype"] == "uint8" and len(meta["checksum"]) == 40
    assert meta["labels"] == f.labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_temporary_files_of_dead_writers_are_removed(folder, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = cache / f"emotion-{'a' * 20}.{dead.pid}.tmp.npy"
    live = cache / f"emotion-{'b' * 20}.{os.getpid()}.tmp.npy"
    old_style = cache / f"{'c' * 20}.{dead.pid}.tmp.npy"
    mine = cache / "notes.txt"
    for p in (stale, live, old_style, mine):
        p.write_bytes(b"x" * 10)
    load_folder(folder, ["happy", "sad"], 8, cache=str(cache))
    assert not stale.exists() and not old_style.exists()
    assert live.exists() and mine.read_bytes() == b"x" * 10


def test_cache_location_order(monkeypatch, tmp_path):
    monkeypatch.delenv("EMOTION_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir(None) == tmp_path / "home" / ".cache" / "emotion"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert cache_dir(None) == tmp_path / "home" / ".cache" / "emotion"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir(None) == tmp_path / "xdg" / "emotion"
    monkeypatch.setenv("EMOTION_CACHE", str(tmp_path / "env"))
    assert cache_dir(None) == tmp_path / "env"
    assert cache_dir(str(tmp_path / "flag")) == tmp_path / "flag"
    assert cache_dir("off") is None
    monkeypatch.setenv("EMOTION_CACHE", "off")
    assert cache_dir(None) is None


def test_cache_command_info_and_clear_touch_only_our_entries(folder, tmp_path, capsys):
    cache = tmp_path / "cache"
    load_folder(folder, ["happy", "sad"], 8, cache=str(cache))
    load_folder(folder, ["happy", "sad"], 10, cache=str(cache))
    (cache / "0123456789abcdef0123.json").write_text(json.dumps({"labels": [], "paths": [], "digests": []}))
    (cache / "0123456789abcdef0123.npy").write_bytes(b"old")  # a version-1 entry
    keep = {"notes.txt": b"mine", "fedcba9876543210fedc.npy": b"not ours: no record beside it",
            "emotion-x.npy": b"not our name"}
    for name, data in keep.items():
        (cache / name).write_bytes(data)
    (cache / "jax").mkdir()  # JAX's persistent compilation cache (backends/jax.py)
    for name in ("jit_f-0123-cache", "jit_f-0123-atime"):
        (cache / "jax" / name).write_bytes(b"compiled")
    assert main(["cache", "info", "--cache", str(cache)]) == 0
    out = capsys.readouterr().out
    assert f"cache: {cache}" in out and "entries: 2 decoded folder(s)" in out and "old-format entries: 1" in out
    assert "JAX compiled programs (jax/): 2 file(s)" in out
    assert main(["cache", "clear", "--cache", str(cache)]) == 0
    assert "removed 8 cache file(s)" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in cache.iterdir() if p.is_file()} == keep
    assert not any((cache / "jax").iterdir())
    assert main(["cache", "info", "--cache", str(cache)]) == 0
    assert "entries: 0" in capsys.readouterr().out
    (tmp_path / "f").write_text("x")
    assert main(["cache", "info", "--cache", str(tmp_path / "f")]) == 2
    assert capsys.readouterr().err.startswith("emotion: error: cache location")


def test_progress_line_only_when_asked_or_on_a_terminal(folder, capsys):
    stream = io.StringIO()
    bar = Progress(3, "decoding x", on=None, stream=stream)  # not a terminal: silent
    for _ in range(3):
        bar.update()
    bar.close()
    assert stream.getvalue() == ""
    decode_files(list_files(folder, ["happy", "sad"]), ["happy", "sad"], 8, "rgb", progress=True, label="decoding d")
    err = capsys.readouterr().err
    assert "decoding d: 6/6" in err and err.endswith("\n")
    decode_files(list_files(folder, ["happy", "sad"]), ["happy", "sad"], 8, "rgb", progress=None)
    assert capsys.readouterr().err == ""  # pytest's stderr is not a terminal
