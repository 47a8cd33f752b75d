import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA, write_image
from PIL import Image

from emotion.config import DataConfig
from emotion.data.clean import quarantine, scan_invalid
from emotion.data.datamodule import EmotionDataModule
from emotion.data.split import split_indices
from emotion.errors import EmotionError
from emotion.images import load_image

pytestmark = pytest.mark.once  # touches no Keras backend: `nox -s tests` runs it once


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def messy(tmp_path) -> tuple[Path, set[str], set[str]]:
    """Class folders holding every awkward kind of file; returns (root, valid names, invalid names)."""
    root = tmp_path / "messy"
    for i in range(6):
        write_image(root / "happy" / f"h{i}.jpg", seed=i)
        write_image(root / "sad" / f"s{i}.png", seed=10 + i)
    happy, sad = root / "happy", root / "sad"
    (happy / "empty.jpg").write_bytes(b"")
    full = (happy / "h0.jpg").read_bytes()
    (happy / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (sad / "notes.jpg").write_text("this is not an image\n")
    write_image(happy / "anim.gif", fmt="GIF")
    Image.fromarray(np.arange(40 * 40, dtype=np.uint16).reshape(40, 40) * 40).save(sad / "deep16.png")
    write_image(sad / "gray.png", mode="L")
    write_image(happy / "alpha.png", mode="RGBA")
    write_image(sad / "cmyk.jpg", mode="CMYK", fmt="JPEG")
    Image.new("RGB", (6000, 6000), (200, 100, 50)).save(happy / "huge.jpg", quality=50)
    write_image(sad / "visage-été-😀.jpg")
    valid = {"anim.gif", "deep16.png", "gray.png", "alpha.png", "cmyk.jpg", "huge.jpg", "visage-été-😀.jpg"}
    return root, valid, {"empty.jpg", "truncated.jpg", "notes.jpg"}


def test_bad_input_is_skipped_reported_and_never_touched(messy):
    root, valid, invalid = messy
    before = snapshot(root)
    dm = EmotionDataModule(DataConfig(data=str(root), image_size=32, cache="off")).setup()
    assert {Path(p).name for p, _ in dm.invalid} == invalid
    used = {Path(p).name for part in (dm.train, dm.val, dm.test) for p in part.paths}
    assert valid <= used and not (invalid & used)
    assert len(used) == 12 + len(valid)
    assert snapshot(root) == before, "the data folder changed"
    reasons = dict((Path(p).name, r) for p, r in dm.invalid)
    assert reasons["empty.jpg"] == "empty file" and reasons["notes.jpg"] == "not an image"


def test_load_image_converts_every_mode_to_rgb_or_gray(messy):
    root, _, _ = messy
    for name in ("happy/alpha.png", "sad/gray.png", "sad/cmyk.jpg", "sad/deep16.png", "happy/anim.gif",
                 "happy/huge.jpg"):
        rgb = load_image(root / name, 24)
        gray = load_image(root / name, 24, "grayscale")
        assert rgb.shape == (24, 24, 3) and rgb.dtype == np.uint8, name
        assert gray.shape == (24, 24, 1), name
    # 16-bit values are scaled, not clipped: the ramp spans dark to bright
    deep = load_image(root / "sad/deep16.png", 40, "grayscale")
    assert deep.min() < 20 and deep.max() > 200
    # RGBA is composited on white: a fully transparent image is white
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(root / "clear.png")
    assert load_image(root / "clear.png", 8).min() == 255


def test_images_are_rgb_not_bgr(tmp_path):
    Image.new("RGB", (16, 16), (255, 0, 0)).save(tmp_path / "red.png")
    px = load_image(tmp_path / "red.png", 8)[0, 0]
    assert tuple(px) == (255, 0, 0)


@pytest.mark.parametrize("orientation, turn", [(6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270),
                                               (3, Image.Transpose.ROTATE_180)])
def test_phone_photos_are_turned_upright_by_their_exif_orientation(tmp_path, orientation, turn):
    """A phone stores a portrait photo sideways with an Orientation tag; viewers, and faces, want it upright."""
    from emotion.images import decode_image

    upright = np.zeros((60, 40, 3), np.uint8)
    upright[:20] = (255, 0, 0)  # red at the top
    stored = Image.fromarray(upright).transpose(turn)  # what the camera wrote: turned back by the tag
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    stored.save(tmp_path / "untagged.jpg", quality=95)
    img = decode_image(tmp_path / "phone.jpg")
    assert img.shape == (60, 40, 3)
    assert img[5, 20, 0] > 200 and img[55, 20, 0] < 50, "red at the top, as the viewer shows it"
    assert decode_image(tmp_path / "untagged.jpg").shape == stored.size[::-1] + (3,)  # no tag: as stored
    assert load_image(tmp_path / "phone.jpg", 30)[2, 15, 0] > 200


def test_a_damaged_exif_block_is_ignored(tmp_path):
    Image.new("RGB", (30, 20), (0, 200, 0)).save(tmp_path / "bad.jpg", exif=b"Exif\x00\x00MM\x00*garbage")
    assert load_image(tmp_path / "bad.jpg", 8)[0, 0, 1] > 150


def test_clean_reports_and_quarantine_moves_keeping_paths(messy, tmp_path):
    root, valid, invalid = messy
    found, n_valid = scan_invalid(root)
    assert {Path(p).name for p, _ in found} == invalid and n_valid == 12 + len(valid)
    before = snapshot(root)
    q = tmp_path / "quarantine"
    quarantine([p for p, _ in found], root, q)
    after = snapshot(root)
    moved = {k for k in before if k not in after}
    assert {Path(k).name for k in moved} == invalid
    assert snapshot(q) == {k: before[k] for k in moved}, "moved files keep relative paths and bytes"
    with pytest.raises(EmotionError, match="outside the data folder"):
        quarantine([], root, root / "happy" / "q")


def test_split_is_file_level_stratified_and_seeded():
    labels = np.array([0] * 151 + [1] * 150)
    digests = [f"f{i}" for i in range(301)]
    s = split_indices(labels, digests, (0.7, 0.2, 0.1), seed=3)
    all_idx = np.concatenate([s["train"], s["val"], s["test"]])
    assert len(all_idx) == 301 and len(set(all_idx.tolist())) == 301, "no file in two splits, none lost"
    for c, n in ((0, 151), (1, 150)):
        for name, frac in (("train", 0.7), ("val", 0.2), ("test", 0.1)):
            k = int((labels[s[name]] == c).sum())
            assert abs(k - frac * n) <= 1, (name, c, k)
    again = split_indices(labels, digests, (0.7, 0.2, 0.1), seed=3)
    assert all(np.array_equal(s[k], again[k]) for k in s)
    other = split_indices(labels, digests, (0.7, 0.2, 0.1), seed=4)
    assert not np.array_equal(s["test"], other["test"])


def test_identical_files_share_a_split():
    labels = np.zeros(40, dtype=int)
    digests = [f"d{i % 10}" for i in range(40)]  # ten contents, four copies each
    s = split_indices(labels, digests, (0.7, 0.2, 0.1), seed=0)
    where = {}
    for name, idx in s.items():
        for i in idx:
            where.setdefault(digests[i], set()).add(name)
    assert all(len(v) == 1 for v in where.values())


def test_presplit_folder_is_used_as_given(tmp_path):
    for split, n in (("train", 5), ("val", 2), ("test", 3)):
        for c in ("happy", "sad", "angry"):
            for i in range(n):
                write_image(tmp_path / split / c / f"{i}.png", seed=i)
    dm = EmotionDataModule(DataConfig(data=str(tmp_path), image_size=16, classes=["sad", "happy"], cache="off"))
    dm.setup()
    assert dm.class_names == ["happy", "sad"]
    assert dm.split_sizes() == {"train": 10, "val": 4, "test": 6}
    assert all("/test/" in p for p in dm.test.paths)


def test_mix_in_joins_the_training_split_only(tmp_path, synth_dir):
    """--mix-in: another folder's images (its train/ where pre-split) are added to train, never to val or test; a
    file that is also held out is left out; --mix-in-max draws a fixed, stratified share."""
    extra = tmp_path / "extra"
    for split, n in (("train", 12), ("val", 2), ("test", 2)):
        for c in ("happy", "sad", "angry"):
            for i in range(n):
                write_image(extra / split / c / f"{split}{i}.png", seed=100 + i)
    base = EmotionDataModule(DataConfig(data=str(synth_dir), image_size=16, cache="off")).setup()
    held_out = next(p for p in base.test.paths)  # a copy of a test image in the mix-in folder: must not train
    (extra / "train" / "happy" / "copy.png").write_bytes(Path(held_out).read_bytes())
    dm = EmotionDataModule(DataConfig(data=str(synth_dir), image_size=16, cache="off", mix_in=str(extra))).setup()
    assert dm.mixed_in == 24 and len(dm.train) == len(base.train) + 24
    assert dm.val.paths == base.val.paths and dm.test.paths == base.test.paths
    mixed = [p for p in dm.train.paths if p.startswith(str(extra))]
    assert all("/train/" in p and "/angry/" not in p and "copy" not in p for p in mixed)
    assert dm.train.counts() == {c: base.train.counts()[c] + 12 for c in ("happy", "sad")}
    capped = EmotionDataModule(DataConfig(data=str(synth_dir), image_size=16, cache="off", mix_in=str(extra),
                                          mix_in_max=10), seed=3).setup()
    assert capped.mixed_in == 10 and capped.train.counts() == {c: base.train.counts()[c] + 5 for c in ("happy", "sad")}
    folds = EmotionDataModule(DataConfig(data=str(synth_dir), image_size=16, cache="off", mix_in=str(extra)))
    folds.setup_fold(0, 5)
    assert folds.mixed_in == 24 and not any(p.startswith(str(extra)) for p in folds.test.paths + folds.val.paths)
    with pytest.raises(EmotionError, match="mix-in folder .* lacks class folder"):
        EmotionDataModule(DataConfig(data=str(synth_dir), image_size=16, cache="off",
                                     mix_in=str(extra / "train" / "happy"))).setup()
    with pytest.raises(EmotionError, match="does not exist"):
        EmotionDataModule(DataConfig(data=str(synth_dir), image_size=16, cache="off",
                                     mix_in=str(tmp_path / "nope"))).setup()


def test_cache_is_reused_and_invalidated(tmp_path, synth_dir):
    cache = tmp_path / "cache"
    cfg = DataConfig(data=str(synth_dir), image_size=16, cache=str(cache))
    a = EmotionDataModule(cfg).setup()
    assert len(list(cache.glob("*.npy"))) == 1
    b = EmotionDataModule(cfg).setup()
    assert np.array_equal(a.train.images, b.train.images) and a.train.paths == b.train.paths
    cfg.image_size = 20
    c = EmotionDataModule(cfg).setup()
    assert c.train.images.shape[1] == 20 and len(list(cache.glob("*.npy"))) == 2


def test_batches_reshuffle_each_epoch_deterministically(synth_dir):
    dm = EmotionDataModule(DataConfig(data=str(synth_dir), image_size=16, batch_size=8, cache="off"), seed=1).setup()
    loader = dm.train_dataloader()
    first = np.concatenate([loader[i][1].ravel() for i in range(len(loader))])
    x0 = loader[0][0].copy()
    loader.on_epoch_end()
    assert not np.array_equal(x0, loader[0][0]), "a new epoch reshuffles"
    fresh = EmotionDataModule(dm.cfg, seed=1).setup().train_dataloader()
    assert np.array_equal(first, np.concatenate([fresh[i][1].ravel() for i in range(len(fresh))]))
    assert loader[0][0].dtype == np.float32 and loader[0][0].max() > 1.0, "raw 0-255 pixels; the model rescales"


def test_data_errors_are_clear(tmp_path):
    with pytest.raises(EmotionError, match="not found"):
        EmotionDataModule(DataConfig(data=str(tmp_path / "nope"))).setup()
    write_image(tmp_path / "one" / "happy" / "a.png")
    with pytest.raises(EmotionError, match="at least two class folders"):
        EmotionDataModule(DataConfig(data=str(tmp_path / "one"))).setup()
    (tmp_path / "one" / "sad").mkdir()
    with pytest.raises(EmotionError, match="no valid images for class"):
        EmotionDataModule(DataConfig(data=str(tmp_path / "one"), cache="off")).setup()
    with pytest.raises(EmotionError, match="not in"):
        EmotionDataModule(DataConfig(data=str(tmp_path / "one"), classes=["happy", "angry"])).setup()


@pytest.mark.skipif(not (SHARED_DATA / "web-happy-sad").is_dir(),
                    reason="../shared/data/web-happy-sad is not on this machine")
def test_web_photos_scan_and_split():
    root = SHARED_DATA / "web-happy-sad"
    dm = EmotionDataModule(DataConfig(data=str(root), image_size=32)).setup()
    sizes = dm.split_sizes()
    assert sum(sizes.values()) + len(dm.invalid) == sum(1 for _ in root.rglob("*") if _.is_file())
    assert abs(sizes["test"] - 30) <= 2 and abs(sizes["val"] - 60) <= 2
    assert os.path.isdir(root)
