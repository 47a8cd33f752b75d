"""The main job, end to end: `emotion fit` is this function.

    metrics = fit_run(load_config("configs/seed.yaml", {"data.data": "../shared/data/web-happy-sad"}))
    metrics = fit_run(cfg, resume=True)      # continue the run a kill interrupted (its last checkpoint)
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
from pathlib import Path

from emotion import backends
from emotion.config import Config, TrainerConfig, default_out, flatten, from_dict, validate
from emotion.data.datamodule import EmotionDataModule
from emotion.errors import EmotionError
from emotion.guard import Limits, check_model_file
from emotion.modelfile import find_model, load_keras_model
from emotion.models import find_user_module
from emotion.training.checkpoint import CHECKPOINT_FILE, read_checkpoint_meta
from emotion.training.runfolder import MODEL_FILE, RunLock, clean_temporaries


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def report_data(dm: EmotionDataModule) -> None:
    for path, reason in dm.invalid:
        log(f"skipped invalid file: {path}: {reason}")
    log(f"data {dm.root}: classes {dm.class_names}; split {dm.split_sizes()}"
        + (f"; {len(dm.invalid)} invalid file(s) skipped, none changed" if dm.invalid else ""))
    for split in ("val", "test"):
        part = getattr(dm, split)
        absent = [c for c, n in part.counts().items() if n == 0] if part is not None and len(part) else []
        if absent:
            log(f"warning: class(es) {absent} have no images in the {split} split (too few files): their {split} "
                "recall is undefined and is reported as null")
    if dm.mixed_in:
        log(f"mix-in {dm.cfg.mix_in}: {dm.mixed_in} image(s) added to the training split")
    faces = dm.face_counts()
    if faces:
        for path in dm.skipped:
            log(f"no face found, skipped: {path}")
        log(f"faces: {faces['cropped']} image(s) cropped to their largest face, {faces['kept_whole']} kept whole "
            f"and {faces['skipped']} skipped (no face found)")


def decode_progress(cfg: Config) -> bool | None:
    """A progress line while decoding: where stderr is a terminal (None), never with --quiet."""
    return None if cfg.trainer.verbose == 1 else False


PROCESS_SETTINGS = ("num_processes", "process_id", "coordinator")
IGNORED_ON_RESUME = {"trainer.verbose", "trainer.tensorboard", "trainer.out", "trainer.devices",
                     *(f"trainer.{k}" for k in PROCESS_SETTINGS)}


def checkpoint_config(out: Path) -> dict:
    """The config a run folder's checkpoint was trained with."""
    path = out / CHECKPOINT_FILE
    if not path.is_file():
        raise EmotionError(f"nothing to resume in {out}: no checkpoint"
                           + ("; the run there is finished (--overwrite trains it again)"
                              if (out / "metrics.json").exists() else ""))
    return read_checkpoint_meta(path).get("config") or {}


def check_out(out: Path, resume: bool, overwrite: bool) -> None:
    """What a fit into ``out`` may do with what is there: refused in one line before any data is read (and told
    again under the lock, where it is decided)."""
    ckpt = out / CHECKPOINT_FILE
    finished = (out / "metrics.json").exists() or (out / MODEL_FILE).exists()
    if out.exists() and not out.is_dir():
        raise EmotionError(f"--out {out} is a file; a run folder is a folder")
    if resume and not ckpt.is_file():
        raise EmotionError(f"nothing to resume in {out}: no checkpoint"
                           + ("; the run there is finished (--overwrite trains it again)" if finished else ""))
    if not resume and not overwrite:
        if ckpt.is_file():
            raise EmotionError(f"{out} holds an interrupted run: --resume continues it, --overwrite starts "
                               "again, or pick another --out")
        if finished:
            raise EmotionError(f"{out} holds a finished run: --overwrite replaces it, or pick another --out")


def check_resume_backend(out: Path, backend: str) -> None:
    """A run continues under the backend it was trained under, or is refused: another backend draws other random
    numbers and rounds otherwise, so the resumed run would not be the interrupted one."""
    was = read_checkpoint_meta(out / CHECKPOINT_FILE).get("backend")
    if was and was != backend:
        raise EmotionError(f"cannot resume {out} under {backend}: it was trained under {was} (its checkpoint); "
                           f"resume with --backend {was}")


def resolve_resume(given: dict, out: Path) -> Config:
    """The config of the checkpoint in ``out``, checked against the settings given for the resumed run
    (``{"section.key": value}``): a resumed run must be the run that was interrupted. Output-only settings
    (progress bars, TensorBoard) may differ."""
    saved = from_dict(checkpoint_config(out))
    was = flatten(saved)
    diffs = [f"{k} {v!r} (checkpoint: {was[k]!r})" for k, v in given.items()
             if k not in IGNORED_ON_RESUME and k in was and was[k] != v]
    if diffs:
        raise EmotionError(f"cannot resume {out} with other settings: {'; '.join(diffs)}")
    for key in IGNORED_ON_RESUME & set(given):
        setattr(saved.trainer, key.split(".")[1], given[key])
    for key in PROCESS_SETTINGS:  # as given now, else one process: never the checkpoint's
        setattr(saved.trainer, key, given.get(f"trainer.{key}", getattr(TrainerConfig(), key)))
    saved.trainer.out = str(out)
    validate(saved)
    return saved


class Processes:
    """The processes that train one model together (``trainer.num_processes``, ``process_id``, ``coordinator``):
    one, this process alone, unless told otherwise. Process 0 writes the run folder; the others write nothing.

    Every process meets the others twice: at `join` (the framework's distributed start) and once the data is
    read (`agree`, or `stop` for a process that cannot go on), so that all of them start training, or none."""

    def __init__(self, t):
        self.count, self.index, self.coordinator = t.num_processes, t.process_id, t.coordinator
        self.met = False

    @property
    def writer(self) -> bool:
        return self.index == 0

    def join(self) -> Processes:
        if self.count > 1:
            log(f"process {self.index} of {self.count}: joining the others at {self.coordinator}")
            try:
                backends.initialize_processes(self.count, self.index, self.coordinator)
            except backends.BackendError as e:
                raise EmotionError(str(e)) from None
        return self

    def stop(self, reason: str) -> None:
        """This process cannot train (``reason``): tell the others, which then stop too. Nothing once met."""
        if self.count > 1 and not self.met:
            self.met = True
            backends.exchange("!" + reason)

    def agree(self, cfg: Config, dm: EmotionDataModule) -> None:
        """Every process has the same settings and the same data (by content), or every process stops."""
        if self.count == 1:
            return

        self.met = True
        told = backends.exchange("=" + fingerprint(cfg, dm))
        said = [json.loads(t[1:]) if t.startswith("=") else t[1:] for t in told]
        for k, t in enumerate(said):
            if isinstance(t, str):
                raise EmotionError(f"process {k} of {self.count} stopped: {t}")
        for k, t in enumerate(said[1:], 1):
            for what in ("settings", "data"):
                if t[what] != said[0][what]:
                    raise EmotionError(f"process {k} has other {what} than process 0 ({what} {t[what]} vs "
                                       f"{said[0][what]}): every process must be given the same")


# settings each process may have its own of (paths on its host, what it shows); every other one must be the same
PER_PROCESS = {"data.data", "data.mix_in", "data.cache", "trainer.out", "trainer.verbose", "trainer.tensorboard",
               "trainer.checkpoint", "trainer.process_id", "trainer.coordinator"}


def fingerprint(cfg: Config, dm: EmotionDataModule) -> str:
    """``{"settings": hash, "data": "hash (train n, val n, test n)"}`` as JSON: what must be the same on every
    process. The data by content (each image file's digest and label, split by split), not by path."""
    settings = {k: v for k, v in flatten(cfg).items() if k not in PER_PROCESS}
    data = hashlib.sha256(json.dumps(dm.class_names).encode())
    for split in ("train", "val", "test"):
        part = getattr(dm, split)
        data.update(json.dumps([split, list(part.digests), part.labels.tolist()]).encode())
    if dm.train_targets is not None:  # data.votes: the targets trained on, by content
        data.update(dm.train_targets.tobytes())
    sizes = ", ".join(f"{k} {v}" for k, v in dm.split_sizes().items())
    return json.dumps({"settings": hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
                       .hexdigest()[:12], "data": f"{data.hexdigest()[:12]} ({sizes})"})


def fit_run(cfg: Config, dm: EmotionDataModule | None = None, out: str | Path | None = None,
            resume: bool = False, overwrite: bool = False, callbacks: list | None = None,
            limits: Limits | None = None) -> dict:
    """Set up the data (unless given), train, test and write the run folder (``out``, default the config's).

    The folder is locked for the whole run (a second fit into it refuses). A finished run there is replaced only
    with ``overwrite``; an interrupted one is continued with ``resume`` (or replaced with ``overwrite``).
    ``callbacks`` are added to `emotion.training.callbacks.default_callbacks`. ``limits`` (`emotion.guard`,
    ``--max-model-mb``) apply to the ``model.init_from`` file, which is checked before any data is read.

    With ``trainer.num_processes`` above 1, this is one of the processes that train together (`Processes`):
    process 0 does all of the above; the others neither lock nor write the folder (with ``resume`` they read its
    checkpoint, so it must be on a file system they see), and return the same metrics."""
    out = Path(out or cfg.trainer.out or default_out())
    find_user_module(cfg.model.module)  # a wrong --module fails before any data is read
    if cfg.model.init_from:  # so does a missing, foreign, damaged or oversized --init-from file

        check_model_file(find_model(cfg.model.init_from), limits, build=False)  # Keras reads it later
    group = Processes(cfg.trainer).join()
    try:
        if not group.writer:
            return _follow(cfg, dm, out, resume, callbacks, group, limits)
        created = not out.exists()
        try:
            with RunLock(out):
                return _locked(cfg, dm, out, resume, overwrite, callbacks, group, limits)
        except BaseException:
            if created and out.is_dir() and not any(out.iterdir()):  # nothing written: leave no trace
                out.rmdir()
            raise
    except Exception as e:  # before the processes met: the others are told, and stop too
        group.stop(" ".join(str(e).split()) or type(e).__name__)
        raise


def _follow(cfg: Config, dm, out: Path, resume: bool, callbacks, group: Processes, limits) -> dict:
    """A process other than process 0: the same training, silent, writing nothing."""
    cfg = copy.deepcopy(cfg)
    cfg.trainer.verbose = 0  # process 0 shows the progress
    ckpt = out / CHECKPOINT_FILE if resume else None
    if ckpt is not None and not ckpt.is_file():
        raise EmotionError(f"nothing to resume in {out} as process {group.index} sees it: no checkpoint (every "
                           "process reads it: the run folder must be on a file system they share)")
    dm = _setup(cfg, dm)
    group.agree(cfg, dm)
    return _fit(cfg, dm, out, ckpt, callbacks, limits, write=False)


def _locked(cfg: Config, dm, out: Path, resume: bool, overwrite: bool, callbacks, group: Processes,
            limits) -> dict:
    ckpt = out / CHECKPOINT_FILE
    check_out(out, resume, overwrite)
    if resume:
        check_resume_backend(out, os.environ.get("KERAS_BACKEND") or backends.default())
    if overwrite and not resume and ckpt.is_file():
        ckpt.unlink()
    clean_temporaries(out)
    if ckpt.parent.is_dir():
        clean_temporaries(ckpt.parent)
    dm = _setup(cfg, dm)
    group.agree(cfg, dm)
    return _fit(cfg, dm, out, ckpt if resume else None, callbacks, limits)


def _setup(cfg: Config, dm) -> EmotionDataModule:
    # data errors surface before Keras loads
    return dm or EmotionDataModule(cfg.data, seed=cfg.seed, progress=decode_progress(cfg)).setup()


def _fit(cfg: Config, dm, out: Path, ckpt_path, extra, limits, write: bool = True) -> dict:
    report_data(dm)
    from emotion.models.module import load_module_class  # here, so that the framework loads only when needed

    # here, so that the framework loads only when needed
    from emotion.training.callbacks import RunFolder, default_callbacks
    from emotion.training.trainer import (  # here, so that the framework loads only when needed
        Trainer,
        seed_everything,
    )  # here, so that the framework loads only when needed

    seed_everything(cfg.seed, cfg.trainer.deterministic)
    module = load_module_class(cfg.model.module).from_config(cfg.model, dm.input_shape, dm.num_classes)
    callbacks = default_callbacks(cfg, out, write=write, limits=limits) + list(extra or [])
    trainer = Trainer.from_config(cfg, callbacks)
    if cfg.model.init_from and ckpt_path is None:
        from emotion.models.surgery import (
            transfer_weights,  # here, so that the framework loads only when needed
        )  # here, so that the framework loads only when needed

        copied = transfer_weights(load_keras_model(cfg.model.init_from, limits), trainer.build(module))
        log(f"started from {cfg.model.init_from}: weights of {copied} layer(s)")
    if ckpt_path is not None:
        log(f"resuming {out} from its checkpoint")
    trainer.fit(module, dm, ckpt_path=ckpt_path)
    return next(cb for cb in callbacks if isinstance(cb, RunFolder)).metrics
