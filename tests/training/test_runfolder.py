"""The run folder: checkpoints and resume, atomic writes, the lock, no silent overwrite (under this backend)."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import BACKEND, REPO

from emotion.cli import main
from emotion.training.runfolder import RunLock, write_atomic

FIT = ["--epochs", "3", "--image-size", "24", "--batch-size", "8", "--cache", "off", "--quiet", "--preset",
       "seed-plus", "--deterministic"]  # seed-plus: augmentation and dropout draw random numbers every step


def _fit_killed(data, out, kill_at: str, extra=(), epochs: int = 3, preset: str = "seed-plus", more=()):
    """`fit_run` in a fresh process that SIGKILLs itself: at global training step N (``"step:N"``), or while the
    run folder's model is written (``"save"``)."""
    code = textwrap.dedent(f"""
        import os, signal, sys
        from emotion import backends
        backends.select()
        import keras
        from emotion.training.callbacks import Callback
        from emotion.config import add_arguments, config_from_args
        from emotion.training.run import fit_run
        import argparse

        class Kill(Callback):
            step = 0
            def on_train_batch_end(self, batch, logs=None):
                Kill.step += 1
                if {kill_at!r}.startswith("step:") and Kill.step == int({kill_at!r}[5:]):
                    os.kill(os.getpid(), signal.SIGKILL)
            def on_epoch_end(self, epoch, logs=None):
                if {kill_at!r} == "stopped" and self.model.stop_training:  # after the checkpoint was written
                    os.kill(os.getpid(), signal.SIGKILL)
            def on_model_written(self, trainer, module, path):
                if {kill_at!r} == "save":
                    os.kill(os.getpid(), signal.SIGKILL)

        p = argparse.ArgumentParser()
        add_arguments(p)
        args = p.parse_args({["--data", str(data), "--out", str(out), *FIT, "--epochs", str(epochs),
                              "--preset", preset, *more]!r})
        fit_run(config_from_args(args), overwrite={"--overwrite" in extra}, callbacks=[Kill()])
    """)
    env = dict(os.environ, KERAS_BACKEND=BACKEND)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=600)


def test_killed_run_resumes_to_the_uninterrupted_result(synth_dir, tmp_path, capsys):
    """kill -9 at a random step of a later epoch, then `emotion fit --resume`: the same history and test metrics
    as a run that was never interrupted (exactly: every random draw is restored)."""
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert main(["fit", "--data", str(synth_dir), "--out", str(full), *FIT]) == 0
    steps = 6  # 42 training images, batch 8
    at = int(np.random.default_rng().integers(steps + 1, 3 * steps))  # a random step of epoch 2 or 3
    proc = _fit_killed(synth_dir, killed, f"step:{at}")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (killed / "checkpoints" / "last.npz").is_file() and not (killed / "metrics.json").exists()

    assert main(["fit", "--data", str(synth_dir), "--out", str(killed), *FIT]) == 2
    assert "--resume continues it" in capsys.readouterr().err
    assert main(["fit", "--data", str(synth_dir), "--out", str(killed), *FIT, "--lr", "0.01", "--resume"]) == 2
    assert "model.learning_rate 0.01 (checkpoint: 0.001)" in capsys.readouterr().err, "other settings are refused"
    assert main(["fit", "--out", str(killed), "--resume", "--quiet"]) == 0  # the checkpoint knows the settings
    assert "resuming" in capsys.readouterr().err

    a = json.loads((full / "metrics.json").read_text())
    b = json.loads((killed / "metrics.json").read_text())
    assert len(b["history"]["loss"]) == 3
    assert b["history"] == a["history"], f"killed at step {at}"
    assert b["test"] == a["test"] and b["val"] == a["val"]
    assert not (killed / "checkpoints").exists(), "a finished run drops its checkpoint"


def test_a_run_killed_after_early_stopping_resumes_to_the_same_end(synth_dir, tmp_path):
    """Early stopping ended the run (lr 0: val_loss never improves, patience 1: it stops after epoch 2) and the
    process died before the run folder was written: the resumed run ends there too, with the best weights."""
    stop = ["--lr", "0", "--early-stopping", "1", "--restore-best"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert main(["fit", "--data", str(synth_dir), "--out", str(full), *FIT, "--epochs", "4", "--preset", "seed",
                 *stop]) == 0
    proc = _fit_killed(synth_dir, killed, "stopped", epochs=4, preset="seed", more=stop)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert main(["fit", "--out", str(killed), "--resume", "--quiet"]) == 0
    a = json.loads((full / "metrics.json").read_text())
    b = json.loads((killed / "metrics.json").read_text())
    assert len(a["history"]["loss"]) == 2 and b["history"] == a["history"] and b["test"] == a["test"]


def test_a_kill_while_saving_leaves_the_previous_run_intact(synth_dir, tmp_path):
    out = tmp_path / "run"
    assert main(["fit", "--data", str(synth_dir), "--out", str(out), *FIT, "--epochs", "1", "--preset", "seed"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"}
    proc = _fit_killed(synth_dir, out, "save", extra=["--overwrite"], epochs=1, preset="seed")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"
             and not p.name.startswith(".")}
    assert after == before, "the old model, metrics.json and plots are untouched"
    import keras

    keras.saving.load_model(out / "imageclassifier.keras")  # and it still loads


def test_a_second_fit_into_a_locked_folder_refuses(synth_dir, tmp_path, capsys):
    out = tmp_path / "busy"
    with RunLock(out):
        rc = main(["fit", "--data", str(synth_dir), "--out", str(out), "--epochs", "1", "--image-size", "24"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "in use by another fit" in err and str(os.getpid()) in err and len(err.strip().splitlines()) == 1
    assert not (out / "metrics.json").exists()
    with RunLock(out):  # released by the first holder
        pass


def test_finished_runs_are_not_overwritten_without_a_word(synth_dir, tmp_path, capsys):
    out = tmp_path / "done"
    args = ["fit", "--data", str(synth_dir), "--out", str(out), "--epochs", "1", "--image-size", "24", "--quiet",
            "--cache", "off", "--no-tensorboard"]
    assert main(args) == 0
    first = json.loads((out / "metrics.json").read_text())["run_id"]
    capsys.readouterr()
    assert main(args) == 2 and "holds a finished run" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 2 and "nothing to resume" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    second = json.loads((out / "metrics.json").read_text())
    assert second["run_id"] != first
    from emotion.modelfile import read_meta

    assert read_meta(out / "imageclassifier.keras")["run_id"] == second["run_id"], "model and metrics together"


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "f.json"
    write_atomic(target, "old")
    with pytest.raises(RuntimeError):
        from emotion.training.runfolder import atomic_path

        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.json"]
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    m = os.umask(0)
    os.umask(m)
    return m


def test_cv_resume_reads_finished_folds_back(synth_dir, tmp_path, capsys):
    args = ["cv", "--data", str(synth_dir), "--out", str(tmp_path / "cv"), "--folds", "2", "--epochs", "1",
            "--image-size", "24", "--quiet", "--cache", "off", "--no-tensorboard"]
    assert main(args) == 0
    first = json.loads((tmp_path / "cv" / "cv.json").read_text())
    capsys.readouterr()
    assert main(args) == 2 and "holds a finished run" in capsys.readouterr().err
    mtime = (tmp_path / "cv" / "fold-0" / "imageclassifier.keras").stat().st_mtime_ns
    assert main([*args, "--resume"]) == 0  # nothing left to train: both folds are read back
    again = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert again["summary"] == first["summary"]
    assert (tmp_path / "cv" / "fold-0" / "imageclassifier.keras").stat().st_mtime_ns == mtime
