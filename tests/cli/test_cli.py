"""The `emotion` command as a user meets it: bad input gives one line on stderr and a non-zero exit."""

import json

import numpy as np
import pytest
from conftest import BACKEND, run_cli, write_image

from emotion.cli import main


def one_line_error(capsys, argv, code=2):
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == code, err
    assert len(err) == 1 and err[0].startswith("emotion: error:"), err
    assert "Traceback" not in err[0]
    return err[0]


@pytest.fixture(scope="module")
def model_file(synth_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli-run")
    rc = main(["fit", "--data", str(synth_dir), "--out", str(out), "--epochs", "1", "--image-size", "32",
               "--batch-size", "16", "--quiet"])
    assert rc == 0
    return out / "imageclassifier.keras"


def test_missing_data_folder(capsys, tmp_path):
    msg = one_line_error(capsys, ["fit", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert "not found" in msg


def test_single_class(capsys, tmp_path):
    write_image(tmp_path / "happy" / "a.png")
    assert "at least two class folders" in one_line_error(capsys, ["fit", "--data", str(tmp_path)])


def test_empty_class_folder(capsys, tmp_path):
    for i in range(3):
        write_image(tmp_path / "happy" / f"{i}.png")
    (tmp_path / "sad").mkdir()
    assert "no valid images" in one_line_error(capsys, ["fit", "--data", str(tmp_path), "--cache", "off"])


def test_missing_model_file(capsys, tmp_path):
    img = write_image(tmp_path / "x.png")
    assert "not found" in one_line_error(capsys, ["predict", "--model", str(tmp_path / "none.keras"), str(img)])


def test_corrupt_model_file(capsys, tmp_path, model_file):
    img = write_image(tmp_path / "x.png")
    bad = tmp_path / "bad.keras"
    bad.write_bytes(model_file.read_bytes()[:2000])
    one_line_error(capsys, ["predict", "--model", str(bad), str(img)])
    (tmp_path / "text.keras").write_text("hello")
    one_line_error(capsys, ["test", "--model", str(tmp_path / "text.keras"), "--data", str(tmp_path)])


def test_unreadable_image_for_predict(capsys, tmp_path, model_file):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    msg = one_line_error(capsys, ["predict", "--model", str(model_file), str(tmp_path / "broken.jpg")], code=2)
    assert "broken.jpg" in msg


def test_predict_skips_images_over_max_image_mb(capsys, tmp_path, model_file):
    small = write_image(tmp_path / "small.png", (40, 40))
    big = write_image(tmp_path / "big.png", (800, 800))  # random pixels: ~1.9 MB of PNG
    assert big.stat().st_size > 1 << 20
    rc = main(["predict", "--model", str(model_file), "--json", "--max-image-mb", "1", str(small), str(big)])
    out, err = capsys.readouterr()
    rows = json.loads(out)
    assert rc == 2 and [r["file"] for r in rows if "error" not in r] == [str(small)]
    errors = [ln for ln in err.splitlines() if ln.startswith("emotion: error")]
    assert len(errors) == 1 and "big.png" in errors[0] and "--max-image-mb" in errors[0]
    assert main(["predict", "--model", str(model_file), "--json", "--max-image-mb", "5", str(big)]) == 0


def test_predict_any_image_kind(capsys, tmp_path, model_file):
    files = [write_image(tmp_path / "gray.png", (20, 30), "L"), write_image(tmp_path / "rgba.png", (300, 100), "RGBA"),
             write_image(tmp_path / "big.jpg", (900, 700))]
    assert main(["predict", "--model", str(model_file), *map(str, files)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(("happy" in ln or "sad" in ln) and "P(sad)=" in ln for ln in lines)
    assert main(["predict", "--model", str(model_file), "--json", *map(str, files)]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["label"] in ("happy", "sad") for r in results] == [True] * 3
    assert all(abs(sum(r["probs"].values()) - 1) < 1e-6 for r in results)


def test_test_command_scores_a_folder(capsys, model_file, synth_dir):
    assert main(["test", "--model", str(model_file), "--data", str(synth_dir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 60 and 0 <= result["accuracy"] <= 1 and result["class_names"] == ["happy", "sad"]


def test_test_command_split_and_flip_tta(capsys, tmp_path, model_file, synth_dir):
    """--split picks a split of a train/ val/ test/ folder; --tta-flip scores the mean over each image and its
    mirror (checked against the model's own probabilities on the flipped images)."""
    import shutil

    import numpy as np

    from emotion.predictor import Predictor

    root = tmp_path / "presplit"
    for c in ("happy", "sad"):
        files = sorted((synth_dir / c).iterdir())
        for split, part in (("train", files[:4]), ("val", files[4:7]), ("test", files[7:9])):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for f in part:
                shutil.copy(f, root / split / c / f.name)
    counts = {}
    for split in ("train", "val", None):
        assert main(["test", "--model", str(model_file), "--data", str(root), "--json"]
                    + (["--split", split] if split else [])) == 0
        counts[split] = json.loads(capsys.readouterr().out)["n"]
    assert counts == {"train": 8, "val": 6, None: 4}

    assert main(["test", "--model", str(model_file), "--data", str(root), "--split", "val", "--tta-flip",
                 "--json"]) == 0
    tta = json.loads(capsys.readouterr().out)
    clf = Predictor.load(model_file)
    files = sorted((root / "val" / "happy").iterdir()) + sorted((root / "val" / "sad").iterdir())
    images = np.stack([clf.preprocess(f) for f in files])
    p = (clf.probabilities(images) + clf.probabilities(images[:, :, ::-1])) / 2
    y = np.array([0] * 3 + [1] * 3)
    loss = -np.mean(np.log(np.clip(p[np.arange(6), y], 1e-7, 1)))
    assert abs(tta["loss"] - loss) < 1e-4 * max(1, loss)
    one_line_error(capsys, ["test", "--model", str(model_file), "--data", str(synth_dir), "--split", "val"])


def test_test_command_skips_special_files_and_says_what_is_undefined(capsys, model_file, tmp_path):
    import os

    d = tmp_path / "d"
    for i in range(3):
        write_image(d / "happy" / f"h{i}.png", seed=i)
    (d / "sad").mkdir()
    (d / "sad" / "bad.jpg").write_text("no image")
    if hasattr(os, "mkfifo"):
        os.mkfifo(d / "sad" / "pipe.jpg")
    assert main(["test", "--model", str(model_file), "--data", str(d), "--cache", str(tmp_path / "c"), "--json",
                 "--quiet"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert result["per_class"]["sad"]["recall"] is None and result["invalid_files"] == 1 + hasattr(os, "mkfifo")
    assert "emotion: warning: test: class 'sad' has no images here" in err
    assert "bad.jpg: not an image" in err and "internal error" not in err


def test_clean_never_changes_files_without_quarantine(capsys, tmp_path):
    for c in ("happy", "sad"):
        write_image(tmp_path / "d" / c / "ok.png")
    (tmp_path / "d" / "sad" / "bad.jpg").write_text("nope")
    assert main(["clean", "--data", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "bad.jpg" in out and (tmp_path / "d" / "sad" / "bad.jpg").exists()
    assert main(["clean", "--data", str(tmp_path / "d"), "--quarantine", str(tmp_path / "q")]) == 0
    assert (tmp_path / "q" / "sad" / "bad.jpg").read_text() == "nope"
    assert not (tmp_path / "d" / "sad" / "bad.jpg").exists()


def test_bad_config_file(capsys, tmp_path):
    (tmp_path / "c.yaml").write_text("trainer: {epochz: 3}\n")
    assert "epochz" in one_line_error(capsys, ["fit", "--config", str(tmp_path / "c.yaml")])


def test_synth_refuses_a_folder_with_files(capsys, tmp_path):
    write_image(tmp_path / "happy" / "mine.png")
    one_line_error(capsys, ["synth", str(tmp_path)])
    assert (tmp_path / "happy" / "mine.png").is_file()


def test_console_entry_point_runs_in_a_fresh_process(tmp_path):
    """`python -m emotion` with --backend: the one-line error comes from a real process too."""
    proc = run_cli("fit", "--backend", BACKEND, "--data", str(tmp_path / "none"))
    assert proc.returncode == 2 and proc.stderr.strip().startswith("emotion: error: data folder not found")


def test_version(capsys):
    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("emotion 0.")


def test_a_result_no_better_than_the_majority_class_is_flagged(capsys):
    from emotion.metrics import chance_line, score

    labels = np.array([0] * 20 + [1] * 10)
    always_happy = score(np.zeros(30), labels, ["happy", "sad"])  # 0.667 = the majority share: learned nothing
    assert always_happy["vs_majority"]["majority_share"] == pytest.approx(2 / 3)
    assert not always_happy["vs_majority"]["better_than_majority"]
    assert "not better than always answering the majority class" in chance_line(always_happy)
    right = score(labels.astype(float), labels, ["happy", "sad"])
    assert right["vs_majority"]["better_than_majority"] and chance_line(right) is None
    nearly = score(np.r_[np.zeros(20), np.ones(4), np.zeros(6)], labels, ["happy", "sad"])  # 24/30 vs 20/30
    assert nearly["vs_majority"]["p_value"] == pytest.approx(0.08384, abs=1e-4)  # scipy.stats.binom.sf(23, 30, 2/3)
    assert not nearly["vs_majority"]["better_than_majority"]


def test_exit_codes_are_the_documented_ones(capsys, monkeypatch):
    from emotion import cli

    assert "0 ok; 1 a check failed" in cli.__doc__ and "3 an internal error" in cli.__doc__
    monkeypatch.delenv("EMOTION_DEBUG", raising=False)

    def crash(args):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(cli.COMMANDS["synth"], "run", crash)
    assert main(["synth", "/tmp/never-written"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["emotion: internal error (RuntimeError): boom (EMOTION_DEBUG=1 shows the traceback)"]


@pytest.mark.parametrize("argv", [["predict", "--model", "{bad}", "{img}"], ["predict", "{missing}"],
                                  ["test", "--model", "{bad}", "--data", "{dir}"], ["test", "--data", "{missing}"]])
def test_bad_paths_and_model_files_are_told_before_any_framework_loads(tmp_path, argv):
    """In a process where Keras and the frameworks cannot be imported, the error is still the right one line."""
    import subprocess
    import sys

    bad = tmp_path / "bad.keras"
    bad.write_text("not a zip")
    img = write_image(tmp_path / "a.jpg")
    for c in ("happy", "sad"):
        write_image(tmp_path / "data" / c / "x.png")
    args = [a.format(bad=bad, img=img, missing=tmp_path / "missing", dir=tmp_path / "data") for a in argv]
    code = ("import sys\nfor m in ('keras', 'tensorflow', 'jax', 'torch'): sys.modules[m] = None\n"
            f"from emotion.cli import main\nsys.exit(main({args!r}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(err) == 1 and err[0].startswith("emotion: error:"), err
    assert ("bad.keras" in err[0] or "missing" in err[0]) and "import" not in err[0], err
