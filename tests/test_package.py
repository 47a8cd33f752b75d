"""The package as installed: one top-level name, a lazy public API, no import cycle."""

import subprocess
import sys

import pytest
import tomllib
from conftest import REPO

pytestmark = pytest.mark.once  # touches no Keras backend


def test_import_emotion_imports_no_framework_and_the_public_names_resolve():
    code = ("import sys, emotion\n"
            "assert not [m for m in ('keras', 'tensorflow', 'jax', 'torch', 'numpy') if m in sys.modules]\n"
            "from emotion import EmotionDataModule, Predictor, load\n"
            "print(Predictor.__module__, EmotionDataModule.__module__, load.__module__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["emotion.predictor", "emotion.data.datamodule", "emotion"]


def test_every_public_name_has_a_docstring_that_ends_in_an_example():
    import emotion

    for name in ("Trainer", "EmotionClassifier", "EmotionDataModule", "Predictor", "load"):
        doc = getattr(emotion, name).__doc__.rstrip()
        last = doc.splitlines()[-1]
        assert last.startswith("        ") and last.strip(), (name, last)


def test_the_distribution_lists_every_package_folder_and_installs_only_emotion():
    """pyproject's package list (backends/ installed as emotion.backends) against the folders that hold code."""
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "emotion").rglob("__init__.py")}
    assert listed == folders | {"emotion.backends"}
    assert {name.split(".")[0] for name in listed} == {"emotion"}


def test_no_import_cycle_and_no_function_local_import_without_a_reason():
    done = subprocess.run([sys.executable, "scripts/import_graph.py"], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert done.returncode == 0, done.stdout


def test_the_cycle_finder_finds_a_cycle():
    sys.path.insert(0, str(REPO / "scripts"))
    import import_graph

    assert import_graph.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert import_graph.cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_is_over_500_lines():
    sizes = {p.relative_to(REPO): len(p.read_text().splitlines())
             for folder in ("emotion", "backends") for p in (REPO / folder).rglob("*.py")}
    assert {p: n for p, n in sizes.items() if n > 500} == {}
