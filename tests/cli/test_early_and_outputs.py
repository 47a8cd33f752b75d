"""Issue 27 and 29 as a user meets them: usage errors before any framework (and in under 1 s of CPU), no output
that destroys an input or is half-written, full disks told in one line, the ONNX fast path with no framework."""

import errno
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_image

from emotion import backends
from emotion.cli import main
from emotion.files import atomic_path, user_os_error

BLOCK = "import sys\nfor m in ('keras', 'tensorflow', 'jax', 'torch'): sys.modules[m] = None\n"


def blocked(argv, cwd=None):
    """`emotion ARGV` in a process where no framework can be imported; (rc, stderr lines, CPU seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, "-c", BLOCK + f"from emotion.cli import main\nsys.exit(main({argv!r}))"],
                          capture_output=True, text=True, timeout=60, cwd=cwd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return done.returncode, done.stderr.strip().splitlines(), cpu


@pytest.fixture
def places(tmp_path):
    (tmp_path / "empty").mkdir()
    finished = tmp_path / "finished"
    finished.mkdir()
    (finished / "metrics.json").write_text("{}")
    for c in ("happy", "sad"):
        write_image(tmp_path / "data" / c / "x.png")
    (tmp_path / "clip.mp4").write_bytes(b"not a video")
    return tmp_path


@pytest.mark.parametrize("argv, words", [
    (["predict", "{t}/empty"], "no image files in"),
    (["fit", "--data", "/missing"], "data folder not found: /missing"),
    (["video", "{t}/nothere.mp4"], "video not found"),
    (["fit", "--data", "{t}/data", "--out", "{t}/finished"], "holds a finished run"),
    (["fit", "--data", "{t}/data", "--lr", "nan"], "model.learning_rate must be"),
    (["fit", "--data", "{t}/data", "--image-size", "100000"], "data.image_size must be an integer from 8 to 1024"),
    (["fit", "--data", "{t}/data", "--batch-size", "1000000000"], "data.batch_size must be"),
    (["fit", "--data", "{t}/data", "--batch-size", "4000"], "GiB of input a step"),
    (["fit", "--data", "{t}/data", "--label-smoothing", "7"], "model.label_smoothing must be"),
    (["fit", "--data", "{t}/data", "--lr", "-0.001"], "model.learning_rate must be"),
    (["fit", "--resume"], "--resume needs --out"),
    (["video", "{t}/clip.mp4", "--out", "{t}/clip.mp4", "--overwrite"], "is an input"),
    (["predcit", "x.jpg"], "did you mean 'predict'?"),
    (["predict", "--backend", "tensorflw", "x.jpg"], "did you mean 'tensorflow'?"),
])
def test_usage_errors_come_before_any_framework_in_under_a_second(places, argv, words):
    rc, err, cpu = blocked([a.format(t=places) for a in argv])
    assert rc == 2 and len(err) == 1 and err[0].startswith("emotion: error:"), err
    assert words in err[0] and "import" not in err[0], err
    assert cpu < 1.0, f"{cpu:.2f} s of CPU for a usage error"  # CPU, not wall: the machine may be busy


def test_a_yaml_nan_learning_rate_is_refused_with_the_settings(places):
    (places / "nan.yaml").write_text("model: {learning_rate: .nan}\n")
    rc, err, _ = blocked(["fit", "--config", str(places / "nan.yaml"), "--data", str(places / "data")])
    assert rc == 2 and "model.learning_rate must be" in err[0], err


def test_no_framework_but_onnxruntime_runs_the_shipped_model_on_onnx(tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxruntime")
    img = write_image(tmp_path / "a.png", size=(64, 64))
    monkeypatch.setattr(backends, "installed", lambda: [])
    assert main(["predict", str(img), "--json"]) == 0
    err = capsys.readouterr().err
    assert err.count("running the shipped model's ONNX export under onnxruntime (--runtime onnx)") == 1, err


def test_a_missing_backend_names_the_onnx_runtime_first():
    """In a venv with onnxruntime and no framework, asking for a backend names --runtime onnx before the install."""
    pytest.importorskip("onnxruntime")
    code = ("import importlib.util, sys\nfrom emotion import backends\nreal = importlib.util.find_spec\n"
            "importlib.util.find_spec = lambda n, *a: None if n in backends.NAMES else real(n, *a)\n"
            "from emotion.cli import main\nsys.exit(main(['predict', '--backend', 'torch', 'README.md']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(err) == 1, err
    assert "--runtime onnx runs a shipped model" in err[0] and err[0].index("--runtime") < err[0].index("pip"), err


def test_annotate_keeps_relative_paths_and_never_overwrites(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    for sub in ("a", "b"):
        write_image(tmp_path / "in" / sub / "x.jpg", size=(64, 64), fmt="JPEG")
    out = tmp_path / "ann"
    assert main(["predict", "--runtime", "onnx", str(tmp_path / "in"), "--annotate", str(out)]) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == ["a/x.jpg", "b/x.jpg"]
    assert main(["predict", "--runtime", "onnx", str(tmp_path / "in"), "--annotate", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    # annotating into the input folder itself: the copy would be the input
    assert main(["predict", "--runtime", "onnx", str(tmp_path / "in"), "--annotate", str(tmp_path / "in"),
                 "--overwrite"]) == 2
    assert "is an input" in capsys.readouterr().err


def test_annotated_text_scales_with_the_image_and_each_class_has_its_colour():
    from emotion.faces.video import COLORS, class_color, draw

    names = ["angry", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    assert len({class_color(names, n) for n in names}) == 8
    assert class_color(["happy", "sad"], "happy") != class_color(["happy", "sad"], "sad")
    inked = []
    for side in (400, 4000):
        img = np.zeros((side, side, 3), np.uint8)
        draw(img, (side // 4, side // 4, side // 2, side // 2), "happy 0.99", COLORS[0])
        rows = np.flatnonzero((img == COLORS[0]).all(-1).any(1))
        inked.append(rows[rows < side // 4].size)  # height of the label band above the box
    assert inked[1] > 4 * inked[0], inked


def test_video_that_yields_no_frame_is_an_error_and_writes_nothing(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    bad = tmp_path / "random.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    rc = main(["video", str(bad), "--runtime", "onnx", "--out", str(tmp_path / "out.mp4"),
               "--csv", str(tmp_path / "f.csv")])
    err = capsys.readouterr().err
    assert rc == 2 and "wrote" not in err, err
    assert not (tmp_path / "out.mp4").exists() and not (tmp_path / "f.csv").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["random.mp4"], "no temporary left behind"


def test_the_output_of_an_export_is_refused_before_loading_if_it_exists(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"old")
    rc, err, _ = blocked(["export", "--model", "happy-sad", "--format", "onnx", "--out", str(tmp_path / "m.onnx")])
    assert rc == 2 and "exists; pass --overwrite" in err[0], err
    assert (tmp_path / "m.onnx").read_bytes() == b"old"


def test_atomic_path_leaves_the_old_file_on_error(tmp_path):
    target = tmp_path / "model.tflite"
    target.write_bytes(b"old model")
    with pytest.raises(OSError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
    assert target.read_bytes() == b"old model" and [p.name for p in tmp_path.iterdir()] == ["model.tflite"]
    line = user_os_error(OSError(errno.ENOSPC, "No space left on device", str(target)))
    assert line == f"cannot write {target}: no space left on the device: free some space, or write somewhere else"
    assert user_os_error(OSError(errno.ENOENT, "gone")) is None  # not the user's condition: a bug, told as such


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MB tmpfs (root only; skipped elsewhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    if subprocess.run(["umount", str(mount)], capture_output=True).returncode:  # busy: detach it now, freed later
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_under_a_run_folder_is_one_line_exit_2(tiny_disk, synth_dir, capsys):
    (tiny_disk / "filler").write_bytes(b"\0" * 900_000)  # what is left cannot hold a checkpoint
    out = tiny_disk / "run"
    rc = main(["fit", "--data", str(synth_dir), "--out", str(out), "--epochs", "2", "--image-size", "32",
               "--batch-size", "16", "--cache", "off", "--quiet", "--no-tensorboard"])
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("emotion:")]
    assert rc == 2 and err[-1].startswith(f"emotion: error: cannot write {out}/"), err
    assert "no space left on the device" in err[-1] and "internal error" not in err[-1]
    left = [p.name for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert not [n for n in left if ".tmp" in n], f"temporaries left: {left}"


@pytest.mark.skipif(backends.current() != "tensorflow", reason="the LiteRT export runs under TensorFlow (once)")
def test_an_export_over_an_existing_file_on_a_full_disk_keeps_the_old_file(tiny_disk):
    """Issue 29: `export --out model.tflite --overwrite` on a full disk left 3 MB of zeros where the old model was."""
    target = tiny_disk / "model.tflite"
    target.write_bytes(b"old model " * 1000)
    (tiny_disk / "filler").write_bytes(b"\0" * 600_000)  # a 5 MB model cannot fit in what is left
    done = subprocess.run([sys.executable, "-m", "emotion", "export", "--backend", "tensorflow", "--model", "happy-sad",
                           "--format", "litert", "--out", str(target), "--overwrite"],
                          capture_output=True, text=True, timeout=600)
    err = [line for line in done.stderr.strip().splitlines() if line.startswith("emotion:")]
    assert done.returncode == 2 and err and "no space left on the device" in err[-1], done.stderr[-2000:]
    assert target.read_bytes() == b"old model " * 1000
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler", "model.tflite"], "no temporaries left"


def test_predict_to_a_full_stdout_is_one_line_exit_2(tmp_path):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    pytest.importorskip("onnxruntime")
    img = write_image(tmp_path / "a.png", size=(64, 64))
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "emotion", "predict", "--runtime", "onnx", "--csv", str(img)],
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(err) == 1, err
    assert err[0].startswith("emotion: error: cannot write the output") and "no space left" in err[0], err
