"""`emotion.tools.harness`: a step in a fresh process under a backend (its JSON result, its one-line error, its
timeout), the one rule for a backend that is not installed, and the markdown table writer. The steps here are
plain library functions, so no framework is imported and each process takes about a second."""

import pytest
from conftest import BACKEND

from emotion import backends
from emotion.errors import EmotionError
from emotion.tools import harness


def test_a_step_runs_under_the_backend_and_returns_its_json():
    assert harness.run_step(BACKEND, "os:getenv", {"key": "KERAS_BACKEND"}) == BACKEND
    # this checkout first on PYTHONPATH: the child imports the same emotion package as this process
    assert harness.run_step(BACKEND, "os:getenv", ["PYTHONPATH"]).split(":")[0] == str(harness.REPO)
    assert harness.run_step(BACKEND, "json:loads", {"s": '{"a": [1, 2.5]}'}) == {"a": [1, 2.5]}


def test_a_refusal_is_one_line_naming_the_backend(tmp_path):
    with pytest.raises(harness.StepError) as info:
        harness.run_step(BACKEND, "emotion.data.datamodule:class_folders", [str(tmp_path / "nope")], what="the step")
    e = info.value
    assert e.refused and e.returncode == 2 and not e.timed_out and e.backend == BACKEND
    assert str(e).startswith(f"the step under {BACKEND} failed (exit 2): ") and "not found" in e.line
    assert "\n" not in str(e) and "emotion: error" not in str(e)


def test_a_crash_gives_its_last_line_and_the_log_file(tmp_path):
    log = tmp_path / "logs" / "step.log"
    with pytest.raises(harness.StepError) as info:
        harness.run_step(BACKEND, "json:loads", {"s": "{"}, what="decode", log=log)
    e = info.value
    assert not e.refused and e.returncode == 1 and e.log == log
    assert e.line.startswith("json.decoder.JSONDecodeError") and "\n" not in str(e)
    assert str(e).endswith(f"(full log: {log})") and f"under {BACKEND}" in str(e)
    assert "Traceback" in log.read_text()  # the whole story stays in the log


def test_a_step_that_runs_too_long_is_stopped_and_reported():
    with pytest.raises(harness.StepError) as info:
        harness.run_step(BACKEND, "time:sleep", [60], what="sleeping", timeout=3)
    assert info.value.timed_out and not info.value.refused
    assert str(info.value) == f"sleeping under {BACKEND} took longer than 3 s"


def test_an_unknown_backend_is_refused_by_the_worker():
    with pytest.raises(harness.StepError) as info:
        harness.run_step("numpy", "os:getcwd")
    assert info.value.refused and "unknown backend 'numpy'" in info.value.line


def test_last_line_prefers_the_error_line():
    text = "loading\nemotion: error: no images in data\nTF: some shutdown chatter\n\n"
    assert harness.last_line(text) == "no images in data"
    assert harness.last_line("a\nValueError: bad\n  \n") == "ValueError: bad"
    assert harness.last_line("") == "no output"
    assert len(harness.last_line("x" * 500)) == 200


def test_a_missing_backend_is_named_left_out_and_never_compared(monkeypatch):
    monkeypatch.setattr(backends, "installed", lambda: ["jax", "torch"])
    said = []
    assert harness.plan(None, log=said.append) == (["jax", "torch"], ["tensorflow"])
    assert said == ["this: backend tensorflow is not installed: left out, not compared "
                    "(pip install -e '.[tensorflow]')"]
    assert harness.plan(["torch", "tensorflow", "jax", "torch"], need=2, log=said.append) == (
        ["torch", "jax"], ["tensorflow"])
    assert harness.plan("torch,jax") == (["torch", "jax"], [])
    with pytest.raises(EmotionError, match="parity needs at least two installed backends; installed: jax, torch; "
                                           "not installed: tensorflow"):
        harness.plan(["jax", "tensorflow"], need=2, what="parity", log=said.append)
    with pytest.raises(EmotionError, match="unknown backend"):
        harness.plan(["jax", "numpy"])
    with pytest.raises(EmotionError, match="unknown backend"):
        harness.check_names(" , ")
    assert "tensorflow" in harness.missing_note(["tensorflow"]) and harness.missing_note([]) == ""


def test_table():
    text = harness.table(["backend", "step s"], [["jax", 0.5], ["a|b", "two\nlines"]])
    assert text == "| backend | step s |\n|---|---|\n| jax | 0.5 |\n| a\\|b | two lines |"
    assert harness.table(["a"], []) == "| a |\n|---|"
    with pytest.raises(ValueError, match="2 cells for 1 headers"):
        harness.table(["a"], [[1, 2]])
