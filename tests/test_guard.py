"""`emotion.guard`: a hostile or broken `.keras` is refused in one line before Keras reads it (each attack of issue
14 in miniature), a real one passes, safe_mode stays on, and nothing beside a model decides where to read or
write."""

import io
import json
import re
import struct
import time
import types
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from conftest import write_image

from emotion import guard
from emotion.cli import main
from emotion.errors import EmotionError
from emotion.guard import Limits, check_model_file
from emotion.modelfile import SHIPPED, load_keras_model, read_meta

REPO = Path(__file__).resolve().parents[1]


def tiny_model(name="tiny"):
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3), keras.layers.Flatten(),
                             keras.layers.Dense(2, activation="softmax")], name=name)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("guard") / "tiny.keras"
    tiny_model().save(path)
    return path


def members(path: Path) -> dict:
    with zipfile.ZipFile(path) as z:
        return {i.filename: (z.read(i), i.compress_type) for i in z.infolist()}


def rezip(path: Path, out: Path, changes: dict | None = None, extra: dict | None = None,
          compress: dict | None = None) -> Path:
    """``path``'s members into ``out``: ``changes`` replaces contents, ``extra`` adds members, ``compress`` picks
    the method of some."""
    with zipfile.ZipFile(out, "w") as z:
        for name, (data, method) in {**members(path), **{k: (v, None) for k, v in (extra or {}).items()}}.items():
            data = (changes or {}).get(name, data)
            z.writestr(name, data, compress_type=(compress or {}).get(name, method or zipfile.ZIP_STORED))
    return out


def refused(path, match: str, limits: Limits | None = None) -> str:
    with pytest.raises(EmotionError, match=match) as e:
        check_model_file(path, limits)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(("refusing model file", "not a readable"))
    return msg


def h5_bytes(build) -> bytes:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as h5:
        build(h5)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ real models pass
def test_real_models_pass_and_load(model_file):
    report = check_model_file(SHIPPED["happy-sad"])
    assert set(report.members) == set(guard.KNOWN) and report.datasets > 10
    assert 0.95 < report.weights_bytes / report.members[guard.WEIGHTS] <= 1
    t0 = time.perf_counter()
    model = load_keras_model(model_file)
    assert model.count_params() == 2 * 9 + 2 + 72 * 2 + 2
    assert check_model_file(model_file).weights_bytes == 4 * model.count_params()
    assert time.perf_counter() - t0 < 10


# ------------------------------------------------------------------------------------------ the attacks
def test_a_megabytes_long_model_name_is_refused_before_keras_reads_it(model_file, tmp_path):
    config = json.loads(members(model_file)["config.json"][0])
    config["config"]["name"] = "x" * 2_000_000
    bad = rezip(model_file, tmp_path / "name.keras", {"config.json": json.dumps(config).encode()})
    t0 = time.perf_counter()
    msg = refused(bad, "string of 2000000 characters")
    assert time.perf_counter() - t0 < 2 and "MAX_STRING_CHARS" in msg
    with pytest.raises(EmotionError, match="MAX_STRING_CHARS"):
        load_keras_model(bad)
    packed = rezip(model_file, tmp_path / "packed.keras", {"config.json": json.dumps(config).encode()},
                   compress={"config.json": zipfile.ZIP_DEFLATED})  # as in the issue: a small file
    assert packed.stat().st_size < 100_000
    refused(packed, "decompression bomb")


def test_deep_nesting_is_counted_before_parsing(model_file, tmp_path):
    assert guard.json_depth('{"a": [1, {"b": "]]]{{{["}], "c": {}}') == 3
    config = json.loads(members(model_file)["config.json"][0])
    config["config"]["deep"] = json.loads("[" * 150 + "]" * 150)
    bad = rezip(model_file, tmp_path / "deep.keras", {"config.json": json.dumps(config).encode()})
    assert "MAX_JSON_DEPTH" in refused(bad, "nests 15[0-9] deep")
    very = rezip(model_file, tmp_path / "very.keras", {"config.json": b"[" * 1_000_000})  # json.loads would recurse
    refused(very, "nests 1000000 deep")
    huge = rezip(model_file, tmp_path / "huge.keras", {"config.json": b" " * (guard.MAX_CONFIG_BYTES + 1)},
                 compress={"config.json": zipfile.ZIP_DEFLATED})
    assert "MAX_CONFIG_BYTES" in refused(huge, "config.json unpacks to")


def test_weights_that_unpack_to_much_more_are_refused(model_file, tmp_path):
    # a zip member that inflates 1000x ...
    zeros = rezip(model_file, tmp_path / "zeros.keras", {"model.weights.h5": bytes(20 * guard.MIB)},
                  compress={"model.weights.h5": zipfile.ZIP_DEFLATED})
    assert zeros.stat().st_size < 100_000
    assert "MAX_RATIO" in refused(zeros, "decompression bomb")
    # ... and a small h5 whose dataset declares 64 MB of zeros it does not store (Keras would allocate them)
    declared = h5_bytes(lambda h5: h5.create_dataset("layers/dense/vars/0", shape=(1 << 24,), dtype="f4"))
    assert len(declared) < 10_000
    bomb = rezip(model_file, tmp_path / "declared.keras", {"model.weights.h5": declared})
    msg = refused(bomb, "datasets declaring more than 16.0 MB", Limits.from_mb(16))
    assert "--max-model-mb raises it" in msg
    check_model_file(bomb, Limits.from_mb(100), build=False)  # within a raised limit the file itself is fine, but
    assert "WEIGHTS_FACTOR" in refused(bomb, "variables hold 0.0 MB", Limits.from_mb(100))  # not for this model


def test_a_config_asking_for_huge_variables_is_refused_before_they_exist(model_file, tmp_path):
    config = json.loads(members(model_file)["config.json"][0])
    dense = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense")
    dense["config"]["units"] = 10**8  # (72 + 1) x 1e8 float32: 29 GB
    bad = rezip(model_file, tmp_path / "units.keras", {"config.json": json.dumps(config).encode()})
    t0 = time.perf_counter()
    assert "--max-model-mb" in refused(bad, "config builds variables of 27847.3 MB")
    assert time.perf_counter() - t0 < 5
    assert check_model_file(model_file).variable_bytes == 4 * 166
    # a config Keras cannot build is refused with Keras's reason before the real load builds (and allocates)
    # the layers in front of the one that fails
    dense["config"]["units"] = 2
    conv = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Conv2D")
    conv["config"]["kernel_size"] = [100, 100]
    broken = rezip(model_file, tmp_path / "broken.keras", {"config.json": json.dumps(config).encode()})
    with pytest.raises(EmotionError, match="^cannot load model .*broken.keras: "):
        check_model_file(broken)


def test_padding_members_and_a_big_total_are_refused(model_file, tmp_path):
    padded = rezip(model_file, tmp_path / "pad.keras", extra={"padding.bin": b"\0" * 100})
    assert "unexpected member 'padding.bin'" in refused(padded, "unexpected member")
    many = rezip(model_file, tmp_path / "many.keras", extra={f"assets/{i}": b"" for i in range(guard.MAX_MEMBERS)})
    assert "MAX_MEMBERS" in refused(many, r"\d+ archive members")
    for odd in ("assets/../config.json", "/etc/x", "model.weights.npz", "assets\\x"):
        refused(rezip(model_file, tmp_path / "odd.keras", extra={odd: b"x"}), "unexpected member")
    with_assets = rezip(model_file, tmp_path / "assets.keras", extra={"assets/vocab.txt": b"a\nb\n"})
    assert check_model_file(with_assets).members["assets/vocab.txt"] == 4
    big_assets = rezip(model_file, tmp_path / "big.keras", extra={"assets/a": bytes(guard.MAX_ASSETS_BYTES + 1)},
                       compress={"assets/a": zipfile.ZIP_DEFLATED})
    assert "MAX_ASSETS_BYTES" in refused(big_assets, "assets/ files unpack to 16.0 MB", Limits(max_ratio=10**6))
    total = check_model_file(model_file).total_bytes
    assert "--max-model-mb raises it" in refused(model_file, "unpack to|the file is", Limits(max_total_bytes=total - 1))


def test_padding_inside_the_h5_is_refused(model_file, tmp_path):
    weights = members(model_file)["model.weights.h5"][0]

    def freed(h5):  # the space of a deleted dataset stays in the file: bytes the datasets do not account for
        with h5py.File(io.BytesIO(weights), "r") as src:
            for name in src:
                src.copy(name, h5)
        h5["pad"] = np.ones(1 << 20, np.float32)
        h5["after"] = np.ones(1, np.float32)  # so the freed block is not at the end, where HDF5 would cut it
        h5.flush()
        del h5["pad"]

    bad = rezip(model_file, tmp_path / "freed.keras", {"model.weights.h5": h5_bytes(freed)})
    assert "H5_OVERHEAD" in refused(bad, "padding")

    def extra_dataset(h5):  # declared and stored, but no variable of the model reads it
        with h5py.File(io.BytesIO(weights), "r") as src:
            for name in src:
                src.copy(name, h5)
        h5["layers/unused"] = np.ones(1 << 20, np.float32)

    hidden = rezip(model_file, tmp_path / "hidden.keras", {"model.weights.h5": h5_bytes(extra_dataset)})
    refused(hidden, "weights declare 4.0 MB but the model's variables hold 0.0 MB")
    report = check_model_file(hidden, build=False)  # and after a load, where the config could not be built
    with pytest.raises(EmotionError, match="variables hold .*WEIGHTS_FACTOR"):
        guard.check_loaded(load_keras_model(model_file), report)


def test_h5_links_to_other_files_are_refused(model_file, tmp_path):
    def external(h5):
        h5["layers/x"] = h5py.ExternalLink(str(tmp_path / "other.h5"), "/data")

    refused(rezip(model_file, tmp_path / "ext.keras", {"model.weights.h5": h5_bytes(external)}), "external link")

    def raw_file(h5):
        h5.create_dataset("layers/x", shape=(4,), dtype="f4", external=[(str(tmp_path / "secret"), 0, 16)])

    refused(rezip(model_file, tmp_path / "raw.keras", {"model.weights.h5": h5_bytes(raw_file)}), "another file")

    def strings(h5):
        h5["layers/x"] = ["a" * 10, "b"]

    refused(rezip(model_file, tmp_path / "str.keras", {"model.weights.h5": h5_bytes(strings)}), "not numbers")


def test_a_lying_size_in_the_zip_directory_does_not_get_past(model_file, tmp_path):
    data = bytearray(model_file.read_bytes())
    config_len = len(members(model_file)["config.json"][0])
    entry = data.find(b"PK\x01\x02")
    while data[entry + 46:entry + 46 + 11] != b"config.json":
        entry = data.find(b"PK\x01\x02", entry + 4)
    assert struct.unpack("<I", data[entry + 24:entry + 28])[0] == config_len
    data[entry + 24:entry + 28] = struct.pack("<I", 10)  # the directory says 10 bytes; 10 bytes is all anyone reads
    bad = tmp_path / "lying.keras"
    bad.write_bytes(bytes(data))
    with pytest.raises(EmotionError, match="CRC|not valid JSON"):
        check_model_file(bad)


def test_foreign_and_damaged_files(model_file, tmp_path):
    (tmp_path / "text.keras").write_text("hello")
    refused(tmp_path / "text.keras", "not a readable")
    (tmp_path / "empty.keras").write_bytes(b"")
    refused(tmp_path / "empty.keras", "not a readable")
    (tmp_path / "cut.keras").write_bytes(model_file.read_bytes()[:-30])
    refused(tmp_path / "cut.keras", "not a readable")
    with zipfile.ZipFile(tmp_path / "twice.keras", "w") as z:
        for name, (data, _) in members(model_file).items():
            z.writestr(name, data)
        with pytest.warns(UserWarning, match="Duplicate"):
            z.writestr("config.json", b"{}")
    refused(tmp_path / "twice.keras", "appears twice")
    no_weights = tmp_path / "noweights.keras"
    with zipfile.ZipFile(no_weights, "w") as z:
        z.writestr("config.json", members(model_file)["config.json"][0])
    refused(no_weights, "no model.weights.h5")
    with pytest.raises(EmotionError, match="positive number"):
        Limits.from_mb(0)


def test_the_cli_names_the_flag_and_the_flag_raises_the_limit(model_file, tmp_path, capsys):
    image = write_image(tmp_path / "a.png", size=(8, 8))
    argv = ["predict", str(image), "--model", str(model_file), "--faces", "none"]
    assert main([*argv, "--max-model-mb", "0.001"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("emotion: error: refusing model file") and "--max-model-mb" in err[0]
    assert main([*argv, "--max-model-mb", "1"]) == 0
    assert "a.png" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ safe_mode
def test_safe_mode_stays_on(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Lambda(lambda x: x * 2)])
    path = tmp_path / "lambda.keras"
    model.save(path)
    check_model_file(path, build=False)  # a well-formed file: the refusal is Keras's safe_mode (in the guard's
    for load in (check_model_file, load_keras_model):  # shape-only build, which keeps safe_mode on, too)
        with pytest.raises(EmotionError, match="(?i)lambda.*safe_mode|safe_mode.*lambda"):
            load(path)
    for source in (REPO / "emotion").rglob("*.py"):
        text = source.read_text()
        assert not re.search(r"safe_mode\s*=\s*False|enable_unsafe_deserialization", text), source
        if source.name not in ("modelfile.py", "guard.py"):  # every other load goes through load_keras_model
            assert not re.search(r"\bload_model\(|load_model\b(?!`)", text), source


# ------------------------------------------------------------------------------------------ beside the model
def test_nothing_beside_a_model_names_a_path(model_file, tmp_path):
    from emotion.tools import export

    run = tmp_path / "run"
    run.mkdir()
    model = run / "imageclassifier.keras"
    model.write_bytes(model_file.read_bytes())
    elsewhere = tmp_path / "elsewhere"
    (run / "metrics.json").write_text(json.dumps({
        "class_names": ["a", "b"], "seed": 3,
        "config": {"data": {"data": str(tmp_path / "data"), "cache": str(elsewhere / "cache"), "split": [0.5, 0.5]}}}))
    write_image(tmp_path / "data" / "a" / "1.png", size=(8, 8))
    fake = types.SimpleNamespace(input_shape=(None, 8, 8, 1))
    checks = export.check_data(model, fake, None)
    assert checks.labels is None and "random" in checks.source and not elsewhere.exists()
    assert export.run_settings(model) == {"class_names": ["a", "b"], "seed": 3, "split": [0.5, 0.5]}
    (run / "metrics.json").write_text(json.dumps({"class_names": "ab", "seed": "x", "config": [1]}))
    assert export.run_settings(model) == {} and read_meta(model).get("class_names") is None
