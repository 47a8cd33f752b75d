"""Faces: the detector (weights inside the OpenCV wheel), the crop, training on faces, and the commands that
use them (predict on folders, test, video), all on images the tests draw themselves."""

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import write_image

from emotion.cli import main
from emotion.data.synth import face
from emotion.errors import EmotionError
from emotion.faces.base import MIN_FACE_SIDE
from emotion.faces.detect import crop, face_inputs, square_box
from emotion.faces.haar import HaarDetector, cascade_path


def drawn_faces(n: int, size: int = 256, seed: int = 7):
    """(image, known face box) pairs from the synthetic face generator."""
    for i in range(n):
        img, box = face(i % 2, np.random.default_rng([seed, i]), size, with_box=True)
        yield np.asarray(img), box


@pytest.mark.once
def test_the_cascade_ships_inside_the_opencv_wheel():
    path = cascade_path()
    assert path.is_file() and path.stat().st_size > 100_000
    assert Path(cv2.__file__).parent in path.parents, "the weights come with the wheel, not from a download"
    assert int(cv2.__version__.split(".")[0]) == 4, "OpenCV 5 wheels ship no cascades"
    with pytest.raises(EmotionError, match="opencv-python-headless<5"):
        cascade_path("no_such_cascade.xml")


@pytest.mark.once
def test_detector_finds_drawn_faces_where_they_are():
    detector = HaarDetector()
    found = on_face = 0
    for image, (bx, by, bw, bh) in drawn_faces(40):
        faces = detector.detect(image)
        if faces:
            found += 1
            x, y, w, h = faces[0].box
            cx, cy = x + w / 2, y + h / 2
            on_face += bx <= cx <= bx + bw and by <= cy <= by + bh and 0.4 < w / bw < 2.5
            assert faces == sorted(faces, key=lambda f: -f.area), "largest first"
            assert all(f.score > 0 for f in faces)
    assert found >= 12, f"found faces in only {found} of 40 drawn faces"
    assert on_face >= found - 2, f"{found - on_face} of {found} largest boxes are off the face"


@pytest.mark.once
def test_haar_drops_faces_under_min_side():
    """The same drawn faces, shrunk: Haar with min_side=0 finds some under MIN_FACE_SIDE px, the default none."""
    keep_all, default = HaarDetector(min_side=0), HaarDetector()
    small = kept = 0
    for image, _ in drawn_faces(12):
        for side in (24, 48):  # Haar's boxes: 17-20 px, then 36-41 px
            shrunk = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
            every = keep_all.detect(shrunk)
            small += sum(f.side < MIN_FACE_SIDE for f in every)
            found = default.detect(shrunk)
            assert found == [f for f in every if f.side >= MIN_FACE_SIDE]
            kept += len(found)
    assert small > 0 and kept > 0, (small, kept)
    assert default.settings()["min_side"] == MIN_FACE_SIDE


@pytest.mark.once
def test_detector_finds_nothing_in_noise_or_flat_images():
    detector = HaarDetector()
    rng = np.random.default_rng(0)
    for image in [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), np.full((200, 200, 3), 128, np.uint8),
                  np.zeros((30, 30), np.uint8)]:
        assert detector.detect(image) == []


@pytest.mark.once
def test_square_box_and_crop_geometry():
    assert square_box((10, 20, 40, 20), margin=0.0) == (10, 10, 40)  # square on the longer side, same centre
    assert square_box((10, 20, 40, 40), margin=0.25) == (0, 10, 60)
    image = np.zeros((100, 100, 3), np.uint8)
    image[20:60, 30:70] = 255  # a white 40x40 square
    out = crop(image, (30, 20, 40, 40), size=20, color="rgb", margin=0.0)
    assert out.shape == (20, 20, 3) and out.min() == 255, "the box alone, resized"
    grey = crop(image, (30, 20, 40, 40), size=16, color="grayscale", margin=0.5)
    assert grey.shape == (16, 16, 1)
    assert grey[8, 8, 0] == 255 and grey[0, 0, 0] == 0, "a margin of half the side on each side around it"
    edge = np.zeros((50, 50), np.uint8)
    edge[:, :10] = 200  # a face box at the left edge: the square reaches past the image, filled by the edge pixels
    out = crop(edge, (0, 10, 20, 20), size=30, color="grayscale", margin=0.25)
    assert out.shape == (30, 30, 1) and out[:, 0, 0].min() == 200
    with pytest.raises(EmotionError, match="outside"):
        crop(image, (500, 500, 10, 10), 16)


@pytest.mark.once
def test_face_inputs_modes():
    detector = HaarDetector()
    image = next(img for img, _ in drawn_faces(40) if detector.detect(img))
    rows = face_inputs(image, 32, "grayscale", "largest")
    assert len(rows) == 1 and rows[0][0] is not None and rows[0][1].shape == (32, 32, 1)
    whole = face_inputs(image, 32, "rgb", "none")
    assert whole[0][0] is None and whole[0][1].shape == (32, 32, 3)
    flat = face_inputs(np.full((64, 64, 3), 90, np.uint8), 32, "rgb", "all")
    assert flat[0][0] is None, "no face: the whole image"
    with pytest.raises(EmotionError):
        face_inputs(image, 32, "rgb", "biggest")


# ------------------------------------------------------------------------------------------ training on faces
@pytest.fixture(scope="module")
def faces_dir(tmp_path_factory) -> Path:
    """12 drawn faces per class at 160 px, plus one flat image per class in which no face can be found."""
    root = tmp_path_factory.mktemp("faces")
    for label, c in enumerate(("happy", "sad")):
        (root / c).mkdir()
        for i in range(12):
            img = face(label, np.random.default_rng([3, label, i]), 160)
            img.save(root / c / f"{i:02d}.jpg", quality=92)
        write_image(root / c / "flat.png", (120, 120), seed=label)
    return root


@pytest.fixture(scope="module")
def face_run(faces_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("face-run")
    assert main(["fit", "--data", str(faces_dir), "--out", str(out), "--epochs", "1", "--image-size", "32",
                 "--color", "grayscale", "--batch-size", "8", "--faces", "crop", "--quiet", "--split",
                 "0.6,0.2,0.2"]) == 0
    return out


def test_fit_with_faces_crop_records_what_it_did(face_run):
    metrics = json.loads((face_run / "metrics.json").read_text())
    faces = metrics["faces"]
    assert faces["mode"] == "crop" and faces["skipped"] == 0
    assert faces["cropped"] + faces["kept_whole"] == sum(metrics["split"].values()) == 26
    assert faces["kept_whole"] >= 2, "the flat images have no face and are kept whole"
    assert faces["cropped"] >= 4
    from emotion.modelfile import read_meta
    from emotion.predictor import Predictor

    meta = read_meta(face_run / "imageclassifier.keras")
    assert meta["faces"] == "crop" and meta["class_names"] == ["happy", "sad"] and meta["image_size"] == 32
    clf = Predictor.load(face_run / "imageclassifier.keras")
    assert clf.faces == "all" and clf.face_model, "a face model crops every face by default"


def test_a_crop_margin_set_for_training_is_the_models_margin(faces_dir, face_run, tmp_path):
    """``data.margin`` cuts the training crops (and keys their cache) and is recorded in the model, so that every
    consumer cuts faces as it learnt them; without it, the detector's own (FER2013's framing) is recorded."""
    from emotion.faces.detect import make_detector
    from emotion.modelfile import read_meta
    from emotion.predictor import Predictor

    assert read_meta(face_run / "imageclassifier.keras")["margin"] == make_detector().margin == 0.1
    out = tmp_path / "wide"
    assert main(["fit", "--data", str(faces_dir), "--out", str(out), "--epochs", "1", "--image-size", "32",
                 "--batch-size", "8", "--faces", "crop", "--margin", "0.4", "--quiet", "--split", "0.6,0.2,0.2",
                 "--cache", str(tmp_path / "cache")]) == 0
    assert read_meta(out / "imageclassifier.keras")["margin"] == 0.4
    clf = Predictor.load(out / "imageclassifier.keras")
    assert clf.margin == clf.detector.margin == 0.4, "emotion test cuts with the predictor's detector: the same margin"
    image = np.asarray(face(0, np.random.default_rng(5), 160))
    (found,) = make_detector().detect(image)[:1]
    assert not np.array_equal(crop(image, found.box, 32, "grayscale", 0.4), crop(image, found.box, 32, "grayscale"))


def test_fit_with_faces_crop_can_skip_faceless_images(faces_dir, tmp_path, capsys):
    assert main(["fit", "--data", str(faces_dir), "--out", str(tmp_path / "r"), "--epochs", "1", "--image-size",
                 "32", "--batch-size", "8", "--faces", "crop", "--no-face", "skip", "--quiet", "--split",
                 "0.6,0.2,0.2", "--cache", "off"]) == 0
    err = capsys.readouterr().err
    faces = json.loads((tmp_path / "r" / "metrics.json").read_text())["faces"]
    assert faces["kept_whole"] == 0 and faces["skipped"] >= 2
    assert faces["cropped"] == 26 - faces["skipped"]
    assert "flat.png" in err and "no face found, skipped" in err


def test_predict_streams_a_folder_with_faces(face_run, faces_dir, tmp_path, capsys):
    model = str(face_run / "imageclassifier.keras")
    (faces_dir.parent / "notes.txt").write_text("not an image")  # a folder's non-image files are left out
    assert main(["predict", "--model", model, str(faces_dir), "--json", "--annotate", str(tmp_path / "a")]) == 0
    rows = json.loads(capsys.readouterr().out)
    files = {r["file"] for r in rows}
    assert len(files) == 26, "every image of the folder, recursively"
    for r in rows:
        assert set(r) >= {"file", "face", "box", "score", "whole_image", "label", "p", "probs"}
        assert r["label"] in ("happy", "sad") and abs(sum(r["probs"].values()) - 1) < 1e-6
        assert (r["box"] is None) == r["whole_image"]
        if not r["whole_image"]:
            x, y, w, h = r["box"]
            assert w > 0 and h > 0 and x + w > 0 and y + h > 0
    assert all(r["whole_image"] for r in rows if r["file"].endswith("flat.png"))
    copies = [p for p in (tmp_path / "a").rglob("*") if p.is_file()]
    assert len(copies) == 26, "one annotated copy per image, at its path under the folder given"

    assert main(["predict", "--model", model, str(faces_dir / "happy"), "--csv", "--faces", "none"]) == 0
    table = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert len(table) == 13 and all(t["whole_image"] == "True" for t in table)


def test_min_face_score_sets_the_operating_point(face_run, faces_dir, capsys):
    """A face counts only where its detector score reaches --min-face-score; below it the image goes whole."""
    model = str(face_run / "imageclassifier.keras")
    assert main(["predict", "--model", model, str(faces_dir), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    scores = sorted(r["score"] for r in rows if not r["whole_image"])
    assert len(scores) >= 4 and scores[0] < scores[-1], scores
    cut = (scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2  # about half the faces lie below it
    assert main(["predict", "--model", model, str(faces_dir), "--json", "--min-face-score", f"{cut:.6f}"]) == 0
    strict = json.loads(capsys.readouterr().out)
    kept = [r for r in strict if not r["whole_image"]]
    assert len(kept) == sum(s >= cut for s in scores) < len(scores)
    assert all(r["score"] >= cut for r in kept)
    assert len({r["file"] for r in strict}) == 26, "a photo with no face left still gets its whole-image row"

    assert main(["test", "--model", model, "--data", str(faces_dir), "--json", "--min-face-score", f"{cut:.6f}"]) == 0
    with_faces = {r["file"] for r in rows if not r["whole_image"]}
    assert json.loads(capsys.readouterr().out)["faces"]["found"] < len(with_faces)


@pytest.mark.once
@pytest.mark.parametrize("args, message", [
    (["--min-face-score", "1.5"], "argument --min-face-score: expected a number from 0 to 1, got 1.5"),
    (["--min-face-score", "high"], "argument --min-face-score: expected a number from 0 to 1, got 'high'"),
    (["--detector", "haar", "--min-face-score", "0.7"],
     "a minimum face score applies to the blazeface detector, not haar"),
])
def test_bad_min_face_score_is_one_line_before_any_model_loads(tmp_path, capsys, args, message):
    img = write_image(tmp_path / "x.png")
    rc = main(["predict", "--model", str(tmp_path / "no.keras"), str(img), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err


@pytest.mark.once
def test_predict_checks_paths_before_loading_a_model(capsys, tmp_path):
    rc = main(["predict", "--model", str(tmp_path / "no.keras"), str(tmp_path / "missing-folder")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == f"emotion: error: image or folder not found: {tmp_path / 'missing-folder'}"
    img = write_image(tmp_path / "x.png")
    rc = main(["predict", str(img), "--annotate", str(img)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == f"emotion: error: --annotate needs a folder; {img} is a file"


def test_predict_names_with_newlines_stay_on_one_line(face_run, tmp_path, capsys):
    img = write_image(tmp_path / "a\nb.png", (64, 64))
    assert main(["predict", "--model", str(face_run / "imageclassifier.keras"), str(img)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('"')


def test_test_command_reports_faces_and_balanced_accuracy(face_run, faces_dir, capsys):
    assert main(["test", "--model", str(face_run / "imageclassifier.keras"), "--data", str(faces_dir),
                 "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["n"] == 26 and {"balanced_accuracy", "f1_macro", "confusion_matrix"} <= set(r)
    cm = np.array(r["confusion_matrix"])
    recalls = cm.diagonal() / cm.sum(1)
    assert abs(r["balanced_accuracy"] - recalls.mean()) < 1e-9
    assert r["faces"]["found"] + r["faces"]["kept_whole"] == 26 and r["faces"]["kept_whole"] >= 2
    assert r["on_faces"]["n"] == r["faces"]["found"]


# ------------------------------------------------------------------------------------------ video
def write_clip(path: Path, frames: int, size=(320, 240), fps=10) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    for i in range(frames):
        frame = np.full((size[1], size[0], 3), 40, np.uint8)
        img = np.asarray(face(i // 6 % 2, np.random.default_rng([11, i // 6]), 160))
        x = 40 + (i % 6) * 10
        frame[40:200, x:x + 160] = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        writer.write(frame)
    writer.release()


def test_video_writes_a_row_for_every_frame_and_an_annotated_clip(face_run, tmp_path, capsys):
    clip = tmp_path / "clip.mp4"
    write_clip(clip, 24)
    out, table = tmp_path / "annotated.mp4", tmp_path / "frames.csv"
    assert main(["video", str(clip), "--model", str(face_run / "imageclassifier.keras"), "--out", str(out),
                 "--csv", str(table)]) == 0
    closing = capsys.readouterr().out.strip().splitlines()[-1]
    assert closing.startswith("24 frames,") and "frames/s" in closing
    rows = list(csv.DictReader(table.open()))
    assert sorted({int(r["frame"]) for r in rows}) == list(range(24)), "every frame has a row"
    faced = [r for r in rows if r["face"] != ""]
    assert faced, "the drawn faces are found in some frames"
    for r in faced:
        probs = [float(r["p_happy"]), float(r["p_sad"])]
        assert abs(sum(probs) - 1) < 1e-3 and r["label"] in ("happy", "sad")
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 24
    cap.release()
    # an existing output is never replaced without --overwrite; a missing source is a one-line error
    assert main(["video", str(clip), "--model", str(face_run / "imageclassifier.keras"), "--out", str(out)]) == 2
    assert main(["video", str(tmp_path / "none.mp4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"emotion: error: --out {out} exists; pass --overwrite to replace it",
                   f"emotion: error: video not found: {tmp_path / 'none.mp4'}"]


@pytest.mark.once
def test_tracks_smooth_probabilities_per_face():
    from emotion.faces.video import Tracks

    tracks = Tracks(smooth=0.5)
    a, b = (0, 0, 10, 10), (100, 100, 10, 10)
    first = tracks.update(0, [a, b], np.array([[1.0, 0.0], [0.0, 1.0]]))
    second = tracks.update(1, [(1, 1, 10, 10), b], np.array([[0.0, 1.0], [0.0, 1.0]]))
    assert [t for t, _ in first] == [t for t, _ in second] == [0, 1], "faces keep their ids across frames"
    assert np.allclose(second[0][1], [0.5, 0.5]) and np.allclose(second[1][1], [0.0, 1.0])
    third = tracks.update(2, [(500, 500, 10, 10)], np.array([[1.0, 0.0]]))
    assert third[0][0] == 2 and np.allclose(third[0][1], [1.0, 0.0]), "a new face starts unsmoothed"


@pytest.mark.once
def test_crop_levels_tilted_eyes():
    """A face whose eyes tilt by 20 degrees comes out of `crop` with its eyes level."""
    from emotion.faces.base import Face

    image = np.zeros((200, 200), np.uint8)
    angle = np.radians(20)
    eyes = [(100 + s * 30 * np.cos(angle), 100 + s * 30 * np.sin(angle)) for s in (-1, 1)]
    for x, y in eyes:
        cv2.circle(image, (int(round(x)), int(round(y))), 4, 255, -1)
    face = Face((60, 60, 80, 80), 0.9, tuple(eyes))
    assert abs(face.roll - 20) < 1e-6 and Face((0, 0, 1, 1), 1.0).roll == 0.0

    def eye_rows(out):
        out = out[..., 0].astype(float)
        left, right = out[:, :40], out[:, 40:]
        return [float((part.sum(1) * np.arange(80)).sum() / part.sum()) for part in (left, right)]

    tilted = eye_rows(crop(image, face.box, 80, "grayscale", margin=0.0))
    level = eye_rows(crop(image, face.box, 80, "grayscale", margin=0.0, roll=face.roll))
    assert abs(tilted[0] - tilted[1]) > 15, tilted
    assert abs(level[0] - level[1]) < 1.5, level
    assert abs(np.mean(level) - 40) < 1.5, "turned about the box's centre"
