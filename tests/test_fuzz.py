"""Fuzzing the two places a user's file meets the package: a `.keras` through the guard and the load (random
bytes, byte-level mutations of a real model, archives rebuilt from odd members, configs with odd values) gives
a loaded model or one EmotionError, never another exception and never a hang; any YAML through `load_config`
gives a Config or one EmotionError.

A few examples each, derandomized, by default (seconds); ``EMOTION_FUZZ_EXAMPLES=N`` (``nox -s fuzz``) runs N
random examples per test, with hypothesis's example database in .hypothesis/ so a failure replays."""

import dataclasses
import io
import json
import os
import time
import zipfile

import keras
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from emotion.config import SECTIONS, Config, load_config
from emotion.errors import EmotionError
from emotion.guard import KNOWN, Limits
from emotion.modelfile import load_keras_model

FUZZ = int(os.environ.get("EMOTION_FUZZ_EXAMPLES", "0") or 0)
LIMITS = Limits.from_mb(4)  # the tiny model is 2 KB: a mutation that asks for more is refused, not allocated
SECONDS = 30  # "never a hang": one example's load, at most


def fuzz(examples: int):
    """``examples`` derandomized examples (no database written), or EMOTION_FUZZ_EXAMPLES random ones."""
    if FUZZ:
        return settings(max_examples=FUZZ, deadline=None, suppress_health_check=list(HealthCheck))
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny real `.keras`: its bytes, its members, and a scratch path for the examples."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(2, 3), keras.layers.Flatten(),
                              keras.layers.Dense(2, activation="softmax")], name="tiny")
    folder = tmp_path_factory.mktemp("fuzz")
    model.save(folder / "base.keras")
    data = (folder / "base.keras").read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    return {"bytes": data, "members": members, "path": folder / "example.keras"}


def load_or_refuse(path) -> str:
    t0 = time.perf_counter()
    try:
        model = load_keras_model(path, LIMITS)
    except EmotionError as e:
        assert "\n" not in str(e), str(e)
        outcome = "refused"
    else:
        assert isinstance(model, keras.Model)
        outcome = "loaded"
    assert time.perf_counter() - t0 < SECONDS, "a load that takes this long is a hang"
    if currently_in_test_context():
        event(outcome)
    return outcome


def zip_bytes(members: list[tuple[str, bytes, int]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data, method in members:
            z.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    return buf.getvalue()


def test_the_base_model_loads(base):
    base["path"].write_bytes(base["bytes"])
    assert load_or_refuse(base["path"]) == "loaded"


@fuzz(25)
@given(st.one_of(st.binary(max_size=3000),
                 st.binary(max_size=3000).map(lambda b: b"PK\x03\x04" + b),
                 st.binary(max_size=200).map(lambda b: b + b"PK\x05\x06" + bytes(18))))
def test_random_bytes(base, data):
    base["path"].write_bytes(data)
    assert load_or_refuse(base["path"]) == "refused"


MUTATION = st.one_of(
    st.tuples(st.just("set"), st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
    st.tuples(st.just("cut"), st.floats(0, 1, exclude_max=True), st.just(0)),
    st.tuples(st.just("insert"), st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=64)),
)


def mutate(data: bytes, mutations) -> bytes:
    data = bytearray(data)
    for op, where, arg in mutations:
        i = int(where * len(data)) if data else 0
        if op == "set" and data:
            data[i] = arg
        elif op == "cut":
            del data[i:]
        elif op == "insert":
            data[i:i] = arg
    return bytes(data)


@fuzz(25)
@given(st.lists(MUTATION, min_size=1, max_size=6))
def test_mutated_archives(base, mutations):
    base["path"].write_bytes(mutate(base["bytes"], mutations))
    load_or_refuse(base["path"])


@fuzz(20)
@given(st.sampled_from(["model.weights.h5", "config.json"]), st.lists(MUTATION, min_size=1, max_size=4))
def test_mutated_members_in_a_sound_zip(base, name, mutations):
    """A member's bytes mutated and the zip rebuilt around them (right CRC): h5py and Keras meet the damage."""
    members = dict(base["members"])
    members[name] = mutate(members[name], mutations)
    base["path"].write_bytes(zip_bytes([(n, b, zipfile.ZIP_STORED) for n, b in members.items()]))
    load_or_refuse(base["path"])


@fuzz(25)
@given(st.data())
def test_archives_rebuilt_from_odd_members(base, data):
    real = base["members"]
    names = st.one_of(st.sampled_from([*KNOWN, "assets/a.txt", "assets/", "../x", "x", "model.weights.npz"]),
                      st.text(min_size=1, max_size=20))
    contents = st.one_of(st.sampled_from(list(real.values())), st.binary(max_size=500),
                         st.sampled_from(list(real.values())).flatmap(
                             lambda b: st.integers(0, len(b)).map(lambda n: b[:n])))
    method = st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
    drawn = data.draw(st.lists(st.tuples(names, contents, method), max_size=6), label="extra members")
    keep = data.draw(st.lists(st.sampled_from(sorted(real)), unique=True), label="real members kept")
    members = [(n, real[n], zipfile.ZIP_STORED) for n in keep] + drawn
    try:
        archive = zip_bytes(members)
    except (ValueError, UnicodeEncodeError):  # a name zipfile itself will not write
        return
    base["path"].write_bytes(archive)
    load_or_refuse(base["path"])


JSON = st.recursive(st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=10),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=10)


def _paths(node, prefix=()):
    yield prefix
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        yield from _paths(v, (*prefix, k))


@fuzz(25)
@given(st.data())
def test_configs_with_odd_values(base, data):
    """A real config.json with values swapped for odd ones: Keras meets them under safe_mode, behind the guard."""
    config = json.loads(base["members"]["config.json"])
    paths = [p for p in _paths(config) if p]
    for _ in range(data.draw(st.integers(1, 3), label="changes")):
        where = data.draw(st.sampled_from(paths), label="where")
        node = config
        try:
            for k in where[:-1]:
                node = node[k]
            node[where[-1]] = data.draw(JSON, label="value")
        except (KeyError, IndexError, TypeError):  # an earlier change replaced the path
            continue
    members = dict(base["members"])
    members["config.json"] = json.dumps(config).encode()
    base["path"].write_bytes(zip_bytes([(n, b, zipfile.ZIP_STORED) for n, b in members.items()]))
    load_or_refuse(base["path"])


# ------------------------------------------------------------------------------------------ YAML configs
FIELDS = sorted({f.name for cls in SECTIONS.values() for f in dataclasses.fields(cls)})
KEYS = st.one_of(st.sampled_from(["seed", *SECTIONS, *FIELDS]), st.text(max_size=6), st.integers(), st.none())
YAML_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4), max_leaves=12)


def config_or_error(tmp_path, text: str | bytes) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    try:
        assert isinstance(load_config(path), Config)
    except EmotionError as e:
        assert "\n" not in str(e), str(e)


@fuzz(40)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200),
                 st.dictionaries(st.sampled_from(["seed", *SECTIONS]), YAML_VALUE, max_size=4).map(
                     lambda d: yaml.safe_dump(d, allow_unicode=True)),
                 st.fixed_dictionaries({}, optional={s: st.dictionaries(KEYS, YAML_VALUE, max_size=5)
                                                     for s in SECTIONS}).map(
                     lambda d: yaml.safe_dump(d, allow_unicode=True))))
def test_any_yaml_gives_a_config_or_one_error(tmp_path_factory, text):
    config_or_error(tmp_path_factory.getbasetemp(), text)


@pytest.mark.parametrize("text", [
    "[" * 1200 + "]" * 1200,  # deeper than the YAML parser's recursion
    "a: &a [1, 2]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n",
    "data: {split: [.nan, .inf, -1]}", "trainer: {epochs: .inf}", "seed: !!python/object:os.system ls",
    "data:\n0:",  # found by the fuzz test above
    "? [a, b]\n: c\n", "data:\n  1: 2\n", "model: {null: 1}", "\ufeffseed: 1\n", "seed: 1\n" * 3,
])
def test_yaml_regressions(tmp_path, text):
    config_or_error(tmp_path, text)
