"""What a data folder may hold and what is read from it: only regular files, under a size limit, symlinks only to
files inside the folder; special files reported and never opened; images refused by their header's size; and
quarantine that plans every move before making one."""

import hashlib
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import write_classes, write_image
from PIL import Image

from emotion import images
from emotion.config import DataConfig
from emotion.data import clean
from emotion.data.clean import quarantine, scan_invalid
from emotion.data.datamodule import EmotionDataModule
from emotion.errors import EmotionError
from emotion.images import decode_image, read_image_file

posix_only = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs and symlinks need a POSIX system")


def in_time(fn, seconds=30):
    """fn() in a thread; fails (instead of hanging the suite) where it does not return in time."""
    box = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "hung (a FIFO or device was opened?)"
    if "error" in box:
        raise box["error"]
    return box["value"]


def tree(root: Path) -> dict:
    """Every entry under root, links as links: {relative path: ('link', target) | sha1 of the bytes | 'dir'}."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.is_dir():
            out[rel] = "dir"
        elif p.is_file():
            out[rel] = hashlib.sha1(p.read_bytes()).hexdigest()
        else:
            out[rel] = "special"
    return out


@pytest.fixture
def hostile(tmp_path):
    """Two valid images per class, and every kind of file that must not be read as one."""
    root = write_classes(tmp_path / "d", size=(16, 16))
    os.mkfifo(root / "happy" / "pipe.jpg")
    os.symlink("/dev/zero", root / "happy" / "zero.jpg")
    os.symlink("loop2.jpg", root / "sad" / "loop1.jpg")
    os.symlink("loop1.jpg", root / "sad" / "loop2.jpg")
    write_image(tmp_path / "elsewhere.png", size=(16, 16))
    os.symlink(tmp_path / "elsewhere.png", root / "sad" / "out.png")
    os.symlink("h0.png", root / "happy" / "inside.png")  # a link to a file inside the folder: valid
    os.symlink("..", root / "sad" / "up")  # a folder loop: listed, never walked
    with open(root / "sad" / "big.jpg", "wb") as f:  # sparse: 3 MB on paper, nothing on disk
        f.truncate(3_000_000)
    reasons = {"pipe.jpg": "not a regular file (a FIFO)", "zero.jpg": "outside the data folder",
               "loop1.jpg": "symlink loop", "loop2.jpg": "symlink loop", "out.png": "outside the data folder",
               "big.jpg": "file too large", "up": "a symlinked folder (not followed)"}
    return root, reasons


@posix_only
def test_special_files_and_links_are_reported_never_opened(hostile, tmp_path):
    root, reasons = hostile
    before = tree(root)
    invalid, valid = in_time(lambda: scan_invalid(root, max_image_mb=2))
    got = {Path(p).name: r for p, r in invalid}
    assert set(got) == set(reasons), got
    for name, reason in reasons.items():
        assert reason in got[name], (name, got[name])
    assert valid == 7  # 6 images and the link to one of them
    dm = in_time(lambda: EmotionDataModule(DataConfig(data=str(root), image_size=16, max_image_mb=2,
                                                      cache=str(tmp_path / "cache"))).setup())
    assert {Path(p).name for p, _ in dm.invalid} == set(reasons)
    assert sum(dm.split_sizes().values()) == 7
    assert tree(root) == before


@posix_only
def test_read_image_file_refuses_what_is_not_a_small_regular_file(tmp_path):
    write_image(tmp_path / "a.png", size=(8, 8))
    assert read_image_file(tmp_path / "a.png")[:4] == b"\x89PNG"
    os.mkfifo(tmp_path / "p")
    for path, word in ((tmp_path / "p", "FIFO"), (tmp_path, "folder"), (tmp_path / "gone", "No such file")):
        with pytest.raises(ValueError, match=word):
            in_time(lambda path=path: read_image_file(path))
    (tmp_path / "b.bin").write_bytes(b"x" * 2_000_001)
    with pytest.raises(ValueError, match="file too large"):
        read_image_file(tmp_path / "b.bin", max_image_mb=2)
    os.symlink("/dev/zero", tmp_path / "z")
    with pytest.raises(ValueError, match="character device"):  # no `inside`: followed, and refused by kind
        in_time(lambda: read_image_file(tmp_path / "z"))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_pixel_limit_is_checked_from_the_header(tmp_path, monkeypatch):
    Image.new("L", (300, 200)).save(tmp_path / "wide.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40_000)
    with pytest.raises(ValueError, match="image too large: 300x200 pixels"):
        decode_image(tmp_path / "wide.png")
    Image.new("L", (600, 400)).save(tmp_path / "wider.png")  # past twice the limit: Pillow's own guard
    with pytest.raises(ValueError, match="image too large: 240000 pixels"):
        decode_image(tmp_path / "wider.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    assert decode_image(tmp_path / "wider.png").shape == (400, 600, 3)


# ------------------------------------------------------------------------------------------- quarantine
def _data(tmp_path, bad=("happy/bad1.jpg", "happy/bad2.jpg")):
    root = tmp_path / "d"
    for c in ("happy", "sad"):
        write_image(root / c / "ok.png", size=(8, 8))
    for b in bad:
        (root / b).write_text("not an image " + b)
    return root


def test_quarantine_into_a_file_moves_nothing(tmp_path):
    root = _data(tmp_path)
    (tmp_path / "q").write_text("mine")
    before = tree(root)
    with pytest.raises(EmotionError, match="not a folder; nothing was moved"):
        quarantine([str(p) for p, _ in scan_invalid(root)[0]], root, tmp_path / "q")
    assert tree(root) == before and (tmp_path / "q").read_text() == "mine"


def test_quarantine_checks_every_destination_before_the_first_move(tmp_path):
    root = _data(tmp_path)
    (tmp_path / "q" / "happy").mkdir(parents=True)
    (tmp_path / "q" / "happy" / "bad2.jpg").write_text("an earlier one")
    before = tree(root)
    with pytest.raises(EmotionError, match="already exists; nothing was moved"):
        quarantine([str(p) for p, _ in scan_invalid(root)[0]], root, tmp_path / "q")
    assert tree(root) == before and not (tmp_path / "q" / "happy" / "bad1.jpg").exists()
    assert (tmp_path / "q" / "happy" / "bad2.jpg").read_text() == "an earlier one"


@posix_only
def test_quarantine_never_moves_through_a_class_folder_that_links_out(tmp_path):
    root = _data(tmp_path)
    outside = tmp_path / "outside" / "sad"
    write_image(outside / "ok.png", size=(8, 8))
    (outside / "bad3.jpg").write_text("nope")
    import shutil

    shutil.rmtree(root / "sad")
    os.symlink(outside, root / "sad")
    before, before_out = tree(root), tree(outside)
    invalid = [p for p, _ in scan_invalid(root)[0]]
    assert len(invalid) == 4  # bad1, bad2, and both files reached through the link
    with pytest.raises(EmotionError, match="outside the data folder.*nothing was moved"):
        quarantine(invalid, root, tmp_path / "q")
    assert tree(root) == before and tree(outside) == before_out and not (tmp_path / "q").exists()


@posix_only
def test_quarantine_moves_a_link_as_a_link(tmp_path):
    root = _data(tmp_path)
    os.symlink("../happy/bad1.jpg", root / "sad" / "link.jpg")  # an invalid link to another invalid file
    os.symlink("nowhere.jpg", root / "sad" / "broken.jpg")
    invalid = [p for p, _ in scan_invalid(root)[0]]
    assert len(invalid) == 4
    moves = quarantine(invalid, root, tmp_path / "q")
    q = tmp_path / "q"
    assert len(moves) == 4
    assert (q / "happy" / "bad1.jpg").read_text() == "not an image happy/bad1.jpg"
    assert (q / "happy" / "bad2.jpg").read_text() == "not an image happy/bad2.jpg"
    assert os.readlink(q / "sad" / "link.jpg") == "../happy/bad1.jpg"
    assert os.readlink(q / "sad" / "broken.jpg") == "nowhere.jpg"
    assert sorted(tree(root)) == ["happy", "happy/ok.png", "sad", "sad/ok.png"]


def test_a_failed_move_puts_the_earlier_ones_back(tmp_path, monkeypatch):
    root = _data(tmp_path, bad=("happy/bad1.jpg", "happy/bad2.jpg", "sad/bad3.jpg"))
    before = tree(root)
    real, calls = clean._move, []

    def flaky(src, target):
        calls.append(src)
        if len(calls) == 3:
            raise PermissionError(13, "Permission denied")
        real(src, target)

    monkeypatch.setattr(clean, "_move", flaky)
    with pytest.raises(EmotionError, match="Permission denied.*the 2 file\\(s\\) moved before it were put back"):
        quarantine([p for p, _ in scan_invalid(root)[0]], root, tmp_path / "q")
    assert tree(root) == before
    assert not [p for p in (tmp_path / "q").rglob("*") if p.is_file()]


# ------------------------------------------------------------------------------------------- fuzz
def _seed_images() -> list[bytes]:
    import io

    out = []
    rng = np.random.default_rng(0)
    for fmt, mode in (("PNG", "RGB"), ("JPEG", "RGB"), ("PNG", "P"), ("GIF", "L"), ("BMP", "RGB")):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).convert(mode).save(buf, format=fmt)
        out.append(buf.getvalue())
    return out


SEEDS = _seed_images()


def _check_decodes_or_refuses(data: bytes) -> None:
    try:
        arr = decode_image(data)
    except ValueError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3 and min(arr.shape[:2]) >= 1


hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

pytestmark = pytest.mark.once  # touches no Keras backend: `nox -s tests` runs it once

FUZZ = settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_random_bytes_decode_or_refuse(data):
    _check_decodes_or_refuses(data)


@FUZZ
@given(which=st.sampled_from(range(len(SEEDS))),
       edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8),
       cut=st.integers(0, 10_000))
def test_fuzz_mutated_images_decode_or_refuse(which, edits, cut):
    data = bytearray(SEEDS[which])
    for pos, value in edits:
        data[pos % len(data)] = value
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 4_000_000  # a mutated header may claim a huge image: keep the test small
    try:
        _check_decodes_or_refuses(bytes(data[: max(1, len(data) - cut % 64)] if cut % 3 == 0 else data))
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def test_decoded_pixels_are_bounded_after_a_jpegs_reduced_scale(tmp_path, monkeypatch):
    """A PNG over MAX_DECODE_PIXELS is refused from its header; a JPEG as large decodes at a reduced DCT scale
    (draft) that fits, so it is read."""
    monkeypatch.setattr(images, "MAX_DECODE_PIXELS", 10_000)
    png = write_image(tmp_path / "big.png", size=(200, 100))
    with pytest.raises(ValueError, match="image too large: 200x100 pixels"):
        images.decode_image(png, max_side=64)
    jpg = write_image(tmp_path / "big.jpg", size=(400, 400))  # 160,000 pixels, decoded at 1/4: 100x100
    assert images.decode_image(jpg, max_side=64).shape[:2] == (64, 64)
