"""`emotion export` under the backend of this process: every format this backend promises round-trips through
its own runtime within tolerance; everything else is refused with one line, and a failed check deletes nothing.
Over the three per-backend runs of `nox -s tests` this covers the whole backend x format matrix."""

import json

import keras
import numpy as np
import pytest
from conftest import BACKEND

from emotion import backends
from emotion.cli import main
from emotion.errors import EmotionError
from emotion.tools import export, export_matrix

FORMATS = backends.export_formats(BACKEND)
REFUSED = [f for f in export.FORMATS if f not in FORMATS]
OUT_NAME = {"tf_saved_model": "saved", "onnx": "m.onnx", "litert": "m.tflite", "openvino": "m.xml", "torch": "m.pt2"}


def missing_modules(fmt):
    return [m for m in (*FORMATS.get(fmt, ()), export.FORMATS[fmt].runtime)
            if not export._have(m) and not (m == "ai_edge_litert" and export._have("tensorflow"))]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    from emotion.models.presets import build_model

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
        pytest.skip(f"needs {missing_modules(fmt)}: pip install -e '.[export]'")
    out = tmp_path / OUT_NAME[fmt]
    report = export.export_model(model_file, fmt, out)
    assert out.exists() and report["bytes"] > 0
    assert report["images"] == export.RANDOM_IMAGES and "random" in report["checked_on"]
    assert report["max_abs_dp"] <= 1e-4, report
    assert report["ok"] and report["backend"] == BACKEND
    if fmt == "onnx":
        assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"], "one self-contained file"


def test_a_model_with_augmentation_exports_without_it(tmp_path):
    """Keras's exporters trace __call__ without training=False, and random layers then augment (or, under
    tf2onnx, do not convert): the export runs the model in inference mode, with its input's name kept."""
    if missing_modules("onnx"):
        pytest.skip(f"needs {missing_modules('onnx')}: pip install -e '.[export]'")
    import onnxruntime as ort

    from emotion.models.presets import build_model

    keras.utils.set_random_seed(2)
    model = build_model("seed-plus", (24, 24, 3), 2)  # flip, rotation, zoom, shift and contrast in training
    model(np.zeros((1, 24, 24, 3), np.float32))
    model.save(tmp_path / "aug.keras")
    report = export.export_model(tmp_path / "aug.keras", "onnx", tmp_path / "aug.onnx")
    assert report["ok"] and report["max_abs_dp"] <= 1e-4, report
    session = ort.InferenceSession(str(tmp_path / "aug.onnx"))
    assert session.get_inputs()[0].name == "rgb_0_255"


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
    # a format whose modules are here first: without them the missing model would be refused for the modules
    fmt = next(f for f in sorted(FORMATS, key=lambda f: bool(missing_modules(f))) if f != "litert")
    base = ["export", "--model", str(model_file)]
    assert "must end in .onnx" in one_line_error(capsys, base + ["--format", "onnx", "--out", str(tmp_path / "m.onx")])
    assert "litert format only" in one_line_error(
        capsys, base + ["--format", fmt, "--out", str(tmp_path / OUT_NAME[fmt]), "--quantize", "int8"])
    assert "not found" in one_line_error(
        capsys, ["export", "--model", str(tmp_path / "none.keras"), "--format", fmt,
                 "--out", str(tmp_path / OUT_NAME[fmt])])
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    assert "exists; pass --overwrite" in one_line_error(
        capsys, base + ["--format", "tf_saved_model", "--out", str(busy)])
    assert "nothing was overwritten" in one_line_error(
        capsys, base + ["--format", "tf_saved_model", "--out", str(busy), "--overwrite"])
    assert (busy / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]


def test_missing_runtime_names_the_extra(model_file, tmp_path, monkeypatch):
    fmt = sorted(FORMATS)[0]
    monkeypatch.setattr(export, "_have", lambda module: False)
    with pytest.raises(EmotionError, match=r"pip install -e '\.\[export\]'"):
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
    failed = out.with_name(f"{out.stem}.failed{out.suffix}")
    assert failed.exists() and not out.exists(), "a failed export does not take --out's place"
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name], "no temporary left"

    # over an existing file: refused without --overwrite; with it, a failed export leaves the old file as it was
    out.write_bytes(b"the old export")
    assert main(["export", "--model", str(model_file), "--format", fmt, "--out", str(out)]) == 2
    assert main(["export", "--model", str(model_file), "--format", fmt, "--out", str(out), "--overwrite"]) == 1
    assert out.read_bytes() == b"the old export"


# ------------------------------------------------------------------------------------------ emotion export --matrix
def test_matrix_bad_requests_are_one_line(model_file, tmp_path, capsys):
    out = tmp_path / "matrix"
    base = ["export", "--model", str(model_file), "--out", str(out)]
    assert "--format is required (or --matrix" in one_line_error(capsys, base)
    assert "--format does not go with --matrix" in one_line_error(capsys, base + ["--matrix", "--format", "onnx"])
    assert "--quantize does not go with --matrix" in one_line_error(capsys, base + ["--matrix", "--quantize", "int8"])
    assert "unknown backend" in one_line_error(capsys, base + ["--matrix", "--backends", f"{BACKEND},numpy"])
    assert "model file not found" in one_line_error(
        capsys, ["export", "--matrix", "--model", str(tmp_path / "none.keras"), "--out", str(out)])
    assert "--backends goes with --matrix" in one_line_error(
        capsys, ["export", "--model", str(model_file), "--format", "onnx", "--out", str(tmp_path / "m.onnx"),
                 "--backends", BACKEND])
    assert not out.exists() and not (tmp_path / "m.onnx").exists()


def test_matrix_cells_and_the_missing_backend_rule(tmp_path, monkeypatch):
    """Each cell's verdict from its step's outcome (steps faked: no processes); a backend that is not installed
    has no cells, is named, and does not count towards ``ok``."""
    from emotion.tools import harness

    monkeypatch.setattr(backends, "installed", lambda: ["jax", "tensorflow"])
    monkeypatch.setattr(export_matrix, "MATRIX_RUNS", [("onnx", None), ("torch", None), ("tf_saved_model", None)])
    outcome = {("jax", "onnx"): {"ok": True, "max_abs_dp": 1e-7, "bytes": 10, "quantize": None},
               ("tensorflow", "onnx"): {"ok": False, "max_abs_dp": 0.1, "bytes": 10, "quantize": None},
               ("tensorflow", "tf_saved_model"): harness.StepError("x", "tensorflow", "Segfault", 1),
               ("jax", "tf_saved_model"): {"ok": True, "max_abs_dp": 0.0, "bytes": 10, "quantize": None}}
    calls = []

    def fake_step(backend, target, args, **kw):
        calls.append((backend, args["fmt"], kw["log"]))
        got = outcome.get((backend, args["fmt"]),
                          harness.StepError("x", backend, f"cannot export {args['fmt']}", 2, refused=True))
        if isinstance(got, Exception):
            raise got
        return got

    monkeypatch.setattr(harness, "run_step", fake_step)
    result = export_matrix.matrix("m.keras", tmp_path, backend_names=["jax", "torch", "tensorflow"])
    assert result["not_installed"] == ["torch"] and {c[0] for c in calls} == {"jax", "tensorflow"}
    cells = {(r["backend"], r["format"]): (r["status"], r["ok"]) for r in result["rows"]}
    assert cells == {("jax", "onnx"): ("pass", True), ("jax", "torch"): ("refused", True),
                     ("jax", "tf_saved_model"): ("pass", True),
                     ("tensorflow", "onnx"): ("FAIL: check", False), ("tensorflow", "torch"): ("refused", True),
                     ("tensorflow", "tf_saved_model"): ("crashed", False)}
    assert not result["ok"] and calls[0][2] == str(tmp_path / "jax" / "onnx.log")
    md = (tmp_path / "export.md").read_text()
    assert "| format | jax | tensorflow |" in md and "left out and not compared: torch" in md
    assert "| onnx | yes: dP 1.0e-07, 0.00 MB | **FAIL**: dP 1.0e-01, 0.00 MB |" in md
    assert "- tensorflow / tf_saved_model: Segfault" in md and "**crashed** **UNEXPECTED**" in md
    assert json.loads((tmp_path / "export.json").read_text())["not_installed"] == ["torch"]
    monkeypatch.setattr(backends, "installed", lambda: ["jax"])
    with pytest.raises(EmotionError, match="export --matrix needs at least one installed backend"):
        export_matrix.matrix("m.keras", tmp_path / "none", backend_names=["torch"])


def test_matrix_command_runs_each_cell_in_its_own_process(model_file, tmp_path, monkeypatch, capsys):
    """`emotion export --matrix` under this backend alone, on one promised and one refused format (the full
    matrix is `nox -s export`): the promised one is written and checked, the other refused in one line."""
    promised = next((f for f in sorted(FORMATS) if not missing_modules(f)), None)
    if promised is None:
        pytest.skip("no export runtime installed")
    monkeypatch.setattr(export_matrix, "MATRIX_RUNS", [(promised, None), (REFUSED[0], None)])
    out = tmp_path / "matrix"
    rc = main(["export", "--matrix", "--model", str(model_file), "--out", str(out), "--backends", BACKEND])
    captured = capsys.readouterr()
    assert rc == 0, captured
    result = json.loads((out / "export.json").read_text())
    first, second = result["rows"]
    assert first["status"] == "pass" and first["report"]["backend"] == BACKEND and first["report"]["ok"]
    assert second["status"] == "refused"
    assert f"cannot export {REFUSED[0]} under the {BACKEND} backend" in second["error"]
    assert (out / BACKEND / f"{promised}.log").is_file()
    assert captured.out == (out / "export.md").read_text() and "**PASS**" in captured.out
