"""The GPU extras pin the same framework versions as the CPU extras, and each pinned package exists on the index."""

import re
import socket
import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.once  # touches no Keras backend: `nox -s tests` runs it once

tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml")

GPU = {"jax-cuda12": "jax", "tensorflow-gpu": "tensorflow", "torch-cuda": "torch"}


def extras() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def version(spec: str) -> str:
    return spec.split("==", 1)[1]


def test_gpu_extras_pin_the_cpu_versions():
    found = extras()
    for gpu, cpu in GPU.items():
        spec, cpu_spec = found[gpu][0], found[cpu][0]  # the framework first, then what it needs
        assert version(spec) == version(cpu_spec), (gpu, spec, cpu_spec)
        assert found[gpu][1:] == found[cpu][1:], (gpu, found[gpu], found[cpu])
    assert found["jax-cuda12"] == ["jax[cuda12]==0.10.2", "filelock==4.3.2"]
    assert found["tensorflow-gpu"] == ["tensorflow[and-cuda]==2.21.0"]


def _index_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=3).close()
        return True
    except OSError:
        return False


@pytest.mark.cross_backend
def test_gpu_extras_resolve_on_the_index():
    if not _index_reachable():
        pytest.skip("pypi.org is not reachable from here: the GPU extras' packages cannot be looked up")
    specs = [spec for gpu in GPU for spec in extras()[gpu]]
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--isolated", "--dry-run", "--no-deps",
                           "--ignore-installed", "--index-url", "https://pypi.org/simple", *specs],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    would = re.search(r"Would install (.*)", proc.stdout).group(1).split()
    for spec in specs:
        name = re.sub(r"\[.*\]", "", spec).replace("==", "-")
        assert name in would, (name, would)  # PyPI's own torch build: no "+cpu" local version


# What each extra's documented behaviour needs besides its framework, checked in pyproject (a venv made from each
# extra alone, pip-installed and run, takes minutes a backend here: too slow for the suite).
NEEDS = {
    # JAX's persistent compilation cache (README, docs/coldstart.md) bounds its size with filelock; without it
    # JAX warns "Please install the `filelock` package" and the cache stays empty
    "jax": ["filelock"], "jax-cuda12": ["filelock"], "all": ["filelock"],
    "onnx": ["onnxruntime"], "serve": ["litserve", "python-multipart", "onnxruntime"],
}


def test_each_extra_carries_what_its_documented_behaviour_needs():
    found = extras()
    for extra, needed in NEEDS.items():
        names = {re.split(r"[\[=<>]", spec, maxsplit=1)[0] for spec in found[extra]}
        missing = [n for n in needed if n not in names]
        assert not missing, f".[{extra}] lacks {missing}: {found[extra]}"
