"""`emotion export` under the backend of this process: every format this backend promises round-trips through
its own runtime within tolerance; everything else is refused with one line, and a failed check deletes nothing.
Over the three per-backend runs of `nox -s tests` this covers the whole backend x format matrix."""

import json

import keras
import numpy as np
import pytest
from conftest import BACKEND

import backends
from emotion import export
from emotion.cli import main
from emotion.errors import EmotionError

FORMATS = backends.export_formats(BACKEND)
REFUSED = [f for f in export.FORMATS if f not in FORMATS]
OUT_NAME = {"tf_saved_model": "saved", "onnx": "m.onnx", "litert": "m.tflite", "openvino": "m.xml", "torch": "m.pt2"}


def missing_modules(fmt):
    return [m for m in (*FORMATS.get(fmt, ()), export.FORMATS[fmt].runtime)
            if not export._have(m) and not (m == "ai_edge_litert" and export._have("tensorflow"))]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    from emotion.model import build_model

    keras.utils.set_random_seed(1)
    model = build_model("seed", (32, 32, 3), 2)
    model(np.zeros((1, 32, 32, 3), np.float32))
    path = tmp_path_factory.mktemp(f"export-{BACKEND}") / "model.keras"
    model.save(path)
    return path


def one_line_error(capsys, argv):
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("emotion: error:"), (rc, err)
    return err[0]


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_promised_format_round_trips(fmt, model_file, tmp_path):
    if missing_modules(fmt):
        pytest.skip(f"needs {missing_modules(fmt)}: pip install 'emotion[export]'")
    out = tmp_path / OUT_NAME[fmt]
    report = export.export_model(model_file, fmt, out)
    assert out.exists() and report["bytes"] > 0
    assert report["images"] == export.RANDOM_IMAGES and "random" in report["checked_on"]
    assert report["max_abs_dp"] <= 1e-4, report
    assert report["ok"] and report["backend"] == BACKEND
    if fmt == "onnx":
        assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"], "one self-contained file"


@pytest.mark.skipif("litert" not in FORMATS or not hasattr(backends._module(BACKEND), "litert_quantization"),
                    reason="LiteRT quantization is a TensorFlow-backend export")
def test_quantized_litert_is_smaller_and_checked_by_accuracy(model_file, synth_dir, tmp_path, capsys):
    if missing_modules("litert"):
        pytest.skip("needs the LiteRT interpreter")
    float_report = export.export_model(model_file, "litert", tmp_path / "f.tflite", data=str(synth_dir))
    assert float_report["ok"] and "test images of" in float_report["checked_on"]
    for mode in ("dynamic", "int8"):
        rc = main(["export", "--model", str(model_file), "--format", "litert", "--quantize", mode,
                   "--out", str(tmp_path / f"{mode}.tflite"), "--data", str(synth_dir), "--json"])
        report = json.loads(capsys.readouterr().out)
        assert report["quantize"] == mode and report["images"] == 6  # synth_dir's test split
        assert report["bytes"] < 0.4 * float_report["bytes"], (mode, report["bytes"], float_report["bytes"])
        assert report["max_abs_dp"] < 0.05, report  # quantized, not broken
        assert report["ok"] == (abs(report["accuracy_change_points"]) <= 1.0)
        assert rc == (0 if report["ok"] else 1)


@pytest.mark.parametrize("fmt", REFUSED)
def test_unsupported_combination_is_refused_in_one_line(fmt, model_file, tmp_path, capsys):
    out = tmp_path / OUT_NAME[fmt]
    msg = one_line_error(capsys, ["export", "--model", str(model_file), "--format", fmt, "--out", str(out)])
    assert f"cannot export {fmt} under the {BACKEND} backend" in msg
    assert not out.exists()


def test_bad_requests_are_refused_before_anything_is_written(model_file, tmp_path, capsys):
    fmt = next(f for f in sorted(FORMATS) if f != "litert")
    base = ["export", "--model", str(model_file)]
    assert "must end in .onnx" in one_line_error(capsys, base + ["--format", "onnx", "--out", str(tmp_path / "m.onx")])
    assert "litert format only" in one_line_error(
        capsys, base + ["--format", fmt, "--out", str(tmp_path / OUT_NAME[fmt]), "--quantize", "int8"])
    assert "not found" in one_line_error(
        capsys, ["export", "--model", str(tmp_path / "none.keras"), "--format", fmt, "--out", str(tmp_path / OUT_NAME[fmt])])
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    assert "nothing was overwritten" in one_line_error(
        capsys, base + ["--format", "tf_saved_model", "--out", str(busy)])
    assert (busy / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]


def test_missing_runtime_names_the_extra(model_file, tmp_path, monkeypatch):
    fmt = sorted(FORMATS)[0]
    monkeypatch.setattr(export, "_have", lambda module: False)
    with pytest.raises(EmotionError, match=r"pip install 'emotion\[export\]'"):
        export.check_request(fmt, tmp_path / OUT_NAME[fmt], None, BACKEND)


def test_failed_check_exits_nonzero_and_keeps_the_file(model_file, tmp_path, monkeypatch, capsys):
    fmt = sorted(FORMATS)[0]
    if missing_modules(fmt):
        pytest.skip(f"needs {missing_modules(fmt)}")
    real = export.RUNTIMES[fmt]

    def off_by_a_little(path):
        run = real(path)
        return lambda x: run(x) + 1e-3  # an export that drifted

    monkeypatch.setitem(export.RUNTIMES, fmt, off_by_a_little)
    out = tmp_path / OUT_NAME[fmt]
    rc = main(["export", "--model", str(model_file), "--format", fmt, "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 1, captured
    assert "FAIL" in captured.out and "kept for inspection" in captured.err
    assert out.exists()
