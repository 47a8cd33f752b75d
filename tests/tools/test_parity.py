"""`emotion parity`: the comparison logic (no framework needed), the batch order Keras fit really consumes under
this process's backend, and (cross_backend) a real parity run on the synthetic set, plus a perturbed one that must
be caught. The cross-load of every installed backend's trained `.keras` under every other is part of that run;
tests/tools/test_cross_backend.py does the same for an untrained float32 model."""

import json

import numpy as np
import pytest
from conftest import BACKEND, run_cli

from emotion import backends
from emotion.errors import EmotionError
from emotion.tools import parity, parity_report

INSTALLED = backends.installed()


def fake_result(loss=(0.7, 0.6), acc=(0.5, 0.6), test_acc=0.8, batches=(("a", "b"), ("c", "d"))):
    return {"history": {"loss": list(loss), "accuracy": list(acc), "val_loss": [x + 0.05 for x in loss],
                        "val_accuracy": list(acc)},
            "test": {"loss": 0.55, "accuracy": test_acc, "precision": 0.8, "recall": 0.8, "f1": 0.8},
            "batches": [list(b) for b in batches], "backend": "x", "learning_rate": 1e-3, "seconds": {"fit": 1.0}}


def full_report(results, crossload, tol=None):
    report = parity_report.compare(results, crossload, tol or parity_report.Tolerances())
    report.update(spec=vars(parity.ParitySpec()), tolerances=vars(tol or parity_report.Tolerances()),
                  backends={"compared": list(results), "not_installed": ["torch"]}, split={"train": 2})
    return report


def agreeing_crossload(names, delta=1e-7):
    return {loader: {saver: (0.0 if saver == loader else delta) for saver in names} for loader in names}


def test_agreeing_backends_pass_and_render_every_table():
    results = {"jax": fake_result(), "tensorflow": fake_result(loss=(0.7001, 0.6003))}
    report = full_report(results, agreeing_crossload(results))
    assert report["ok"] and not report["failures"]
    md = parity_report.render(report)
    for heading in ("## Per epoch", "## Test split", "## Batches", "## Cross-load", "**Result: PASS**"):
        assert heading in md
    assert "| torch | **not installed: not compared** |" in md
    assert md.count("| 2 | ") == 4  # epoch 2: loss, accuracy, val_loss, val_accuracy rows


@pytest.mark.parametrize("other, expected", [
    (fake_result(loss=(0.7, 0.62)), "epoch 2 loss: spread 3.33% > 2.00% (--loss-rtol)"),
    (fake_result(acc=(0.5, 0.62)), "epoch 2 accuracy: spread 2.00 points > 1 (--acc-tol)"),
    (fake_result(test_acc=0.7), "test accuracy: spread 10.00 points > 1 (--test-tol)"),
    (fake_result(batches=(("a", "b"), ("d", "c"))), "same batches in the same order: no"),
])
def test_each_broken_tolerance_is_named(other, expected):
    report = full_report({"jax": fake_result(), "torch": other}, agreeing_crossload(["jax", "torch"]))
    assert not report["ok"]
    assert any(f.startswith(expected) for f in report["failures"]), report["failures"]
    assert "**Result: FAIL**" in parity_report.render(report)


def test_crossload_beyond_tolerance_or_missing_fails():
    names = ["jax", "torch"]
    report = full_report({b: fake_result() for b in names}, agreeing_crossload(names, delta=3e-5))
    assert report["failures"] == ["cross-load max |dP| = 3e-05 > 1e-05 (--crossload-tol)"]
    report = full_report({b: fake_result() for b in names}, {"jax": {"jax": 0.0, "torch": 0.0}})  # torch never loaded
    assert not report["ok"] and report["crossload"]["jax"]["torch"] == float("inf")
    loose = parity_report.Tolerances(crossload=1e-4)
    assert full_report({b: fake_result() for b in names}, agreeing_crossload(names, 3e-5), loose)["ok"]


def test_a_backend_that_is_not_installed_is_never_compared(monkeypatch, tmp_path, capsys):
    """parity follows `harness.plan`: a missing backend is named and left out; fewer than two left is an error
    before anything runs or is written."""
    monkeypatch.setattr(backends, "installed", lambda: ["jax", "torch"])
    out = tmp_path / "out"
    cfg = parity.default_config(**{"trainer.out": str(out)})
    with pytest.raises(EmotionError, match="parity needs at least two installed backends; installed: jax, torch; "
                                           "not installed: tensorflow"):
        parity.run_parity(parity.ParitySpec(config=cfg, backends=["jax", "tensorflow"]))
    with pytest.raises(EmotionError, match="unknown backend"):
        parity.run_parity(parity.ParitySpec(config=cfg, backends=["jax", "numpy"]))
    with pytest.raises(EmotionError, match=r"--perturb names backend\(s\) \['tensorflow'\] that are not compared"):
        parity.run_parity(parity.ParitySpec(config=cfg, perturb={"tensorflow": 0.1}))
    assert "parity: backend tensorflow is not installed: left out, not compared" in capsys.readouterr().err
    assert not out.exists()


def test_epoch_fingerprints_skip_keras_peeks():
    # TensorFlow peeks at two batches for the signature and ends a pseudo-epoch; JAX/PyTorch peek inside one.
    tf_like = [("batch", 0, "p"), ("batch", 1, "q"), ("end",), ("begin",), ("batch", 0, "a"), ("batch", 1, "b"),
               ("end",), ("begin",), ("batch", 0, "c"), ("batch", 1, "d"), ("end",)]
    jax_like = [("begin",), ("batch", 0, "p"), ("end",)] + tf_like[3:]
    assert parity.epoch_fingerprints(tf_like, 2) == parity.epoch_fingerprints(jax_like, 2) == [["a", "b"], ["c", "d"]]


def test_fit_consumes_the_data_modules_batches_in_order(synth_dir):
    """Under this backend, Keras fit takes batch 0..n-1 of each epoch's seeded permutation, epoch after epoch."""
    from emotion.config import DataConfig
    from emotion.data.datamodule import EmotionDataModule
    from emotion.models.module import EmotionClassifier
    from emotion.training.trainer import Trainer, seed_everything

    seed_everything(0)
    events = []

    class Recording(EmotionDataModule):
        def train_dataloader(self):
            return parity._recording(super().train_dataloader(), events)

    cfg = DataConfig(data=str(synth_dir), image_size=24, batch_size=8, cache="off")
    dm = Recording(cfg, seed=3).setup()
    Trainer(max_epochs=3, verbose=0).fit(EmotionClassifier("seed", (24, 24, 3), 2), dm)
    seen = parity.epoch_fingerprints(events, 3)

    loader = EmotionDataModule(cfg, seed=3).setup().train_dataloader()
    expected = []
    for _ in range(5):
        expected.append([parity._digest(loader[i][0]) + parity._digest(loader[i][1])[:4] for i in range(len(loader))])
        loader.on_epoch_end()
    assert len(seen) == 3 and all(len(e) == len(loader) for e in seen)
    start = expected.index(seen[0])  # Keras may advance the epoch once before training, on every backend alike
    assert seen == expected[start:start + 3], f"{BACKEND} fit reordered the batches"


# ------------------------------------------------------------------------------------------ one process each
@pytest.mark.cross_backend
@pytest.mark.skipif(len(INSTALLED) < 2, reason="needs two installed backends")
def test_parity_passes_on_the_synthetic_set_and_catches_a_perturbed_run(synth_dir, tmp_path):
    common = ["--data", str(synth_dir), "--epochs", "2", "--image-size", "64", "--batch-size", "8", "--cache", "off"]
    proc = run_cli("parity", *common, "--out", str(tmp_path / "same"), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "same" / "parity.json").read_text())
    assert report["ok"] and report["backends"]["compared"] == INSTALLED
    assert report["batches"]["identical"] and report["batches"]["per_epoch"] == [6, 6]  # 42 images, batch 8
    assert len(report["per_epoch"]) == 2
    assert {c["check"] for c in report["checks"]} >= {"epoch 2 val_accuracy", "test f1", "cross-load max |dP|"}
    matrix = report["crossload"]
    assert set(matrix) == set(INSTALLED) and all(set(row) == set(INSTALLED) for row in matrix.values())
    assert max(v for row in matrix.values() for v in row.values()) <= 1e-5
    assert "## Cross-load" in proc.stdout and "**Result: PASS**" in proc.stdout
    assert (tmp_path / "same" / "parity.md").read_text().startswith("# Backend parity")

    # One backend trained at 10x the learning rate (a shorter, smaller run): parity must fail and say why.
    pair = INSTALLED[:2]
    proc = run_cli("parity", *common, "--epochs", "1", "--image-size", "32", "--out", str(tmp_path / "perturbed"),
                   "--backends", ",".join(pair), "--perturb", f"{pair[1]}=0.01", timeout=900)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "emotion: parity failed: epoch" in proc.stderr and "(--loss-rtol)" in proc.stderr
    report = json.loads((tmp_path / "perturbed" / "parity.json").read_text())
    assert not report["ok"] and report["runs"][pair[1]]["learning_rate"] == 0.01
    assert report["batches"]["identical"]  # same data; only the optimizer differed
    assert np.isfinite(report["per_epoch"][-1]["loss_spread"])


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    from emotion.cli import main

    out = tmp_path / "out"
    for argv, words in [(["--data", str(tmp_path / "missing")], "not found"),
                        (["--backends", "jax,numpy"], "unknown backend"),
                        (["--perturb", "torch:0.1"], "BACKEND=LEARNING_RATE")]:
        assert main(["parity", "--out", str(out), *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("emotion: error:") and words in err[0], err
    assert not out.exists()
