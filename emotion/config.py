"""Settings as dataclasses, loadable from YAML and overridable from the command line.

A YAML file mirrors the dataclasses (every key optional)::

    seed: 0
    data: {data: ../shared/data/web-happy-sad, image_size: 256, batch_size: 32, classes: [happy, sad]}
    model: {preset: seed, learning_rate: 0.001}
    trainer: {epochs: 20, out: models}

    cfg = load_config("configs/seed.yaml", {"trainer.epochs": 2})
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import EmotionError

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")  # Keras dtype policies a model can be built with


@dataclass
class DataConfig:
    data: str = "data"
    classes: list[str] | None = None  # None: every class folder
    image_size: int = 256
    color: str = "rgb"  # rgb | grayscale
    batch_size: int = 32
    split: list[float] = field(default_factory=lambda: [0.7, 0.2, 0.1])  # train, val, test
    cache: str | None = None  # decoded-image cache folder; None: ~/.cache/emotion; "off": no disk cache
    faces: str = "none"  # none: whole images | crop: each image's largest face | given: the images are face crops
    no_face: str = "keep"  # faces=crop, no face found: keep the whole image | skip it
    detector: str = "blazeface"  # faces=crop: blazeface | haar (emotion.faces)


@dataclass
class ModelConfig:
    preset: str = "seed"
    learning_rate: float = 1e-3
    label_smoothing: float = 0.0
    precision: str = "float32"  # float32 | mixed_bfloat16 | mixed_float16 (Keras dtype policy of the layers)
    init_from: str | None = None  # a .keras (or a shipped model's name) whose weights start the training


@dataclass
class TrainerConfig:
    epochs: int = 20
    out: str = "models"
    deterministic: bool = False
    lr_schedule: str = "constant"  # constant | cosine
    early_stopping: int = 0  # patience in epochs on val_loss; 0: off
    restore_best: bool = False  # keep the weights of the epoch with the lowest val_loss
    freeze_epochs: int = 0  # with model.init_from: train only the head for this many epochs, then everything
    tta_flip: bool = False  # save and test the mean of the model on the image and its mirror (after training)
    tensorboard: bool = True
    verbose: int = 1  # Keras progress bars: 0 silent, 1 bar, 2 one line per epoch


@dataclass
class Config:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "trainer": TrainerConfig}


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def from_dict(raw: dict) -> Config:
    raw = dict(raw or {})
    unknown = set(raw) - {"seed", *_SECTIONS}
    if unknown:
        raise EmotionError(f"unknown config key(s) {sorted(unknown)}; expected seed, data, model, trainer")
    sections = {}
    for name, cls in _SECTIONS.items():
        values = raw.get(name) or {}
        if not isinstance(values, dict):
            raise EmotionError(f"config section {name!r} must be a mapping")
        bad = set(values) - _fields(cls)
        if bad:
            raise EmotionError(f"unknown key(s) {sorted(bad)} in {name!r}; valid: {sorted(_fields(cls))}")
        sections[name] = cls(**values)
    return Config(seed=int(raw.get("seed", 0)), **sections)


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> Config:
    """Defaults, then the YAML file, then ``{"section.key": value}`` overrides (None values are ignored)."""
    raw: dict = {}
    if path:
        path = Path(path)
        if not path.is_file():
            raise EmotionError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise EmotionError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(raw, dict):
            raise EmotionError(f"config file {path} must hold a mapping")
    cfg = from_dict(raw)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key == "seed":
            cfg.seed = int(value)
            continue
        section, name = key.split(".")
        setattr(getattr(cfg, section), name, value)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    d = cfg.data
    if d.image_size < 8:
        raise EmotionError(f"image size must be at least 8, got {d.image_size}")
    if d.batch_size < 1:
        raise EmotionError(f"batch size must be positive, got {d.batch_size}")
    if d.color not in ("rgb", "grayscale"):
        raise EmotionError(f"color must be rgb or grayscale, got {d.color!r}")
    if len(d.split) != 3 or any(f < 0 for f in d.split) or abs(sum(d.split) - 1) > 1e-6:
        raise EmotionError(f"split must be three fractions summing to 1 (train,val,test), got {d.split}")
    if d.faces not in ("none", "crop", "given"):
        raise EmotionError(f"faces must be none, crop or given, got {d.faces!r}")
    if d.detector not in ("blazeface", "haar"):
        raise EmotionError(f"detector must be blazeface or haar, got {d.detector!r}")
    if d.no_face not in ("keep", "skip"):
        raise EmotionError(f"no_face must be keep or skip, got {d.no_face!r}")
    if cfg.trainer.freeze_epochs < 0 or cfg.trainer.freeze_epochs >= cfg.trainer.epochs:
        raise EmotionError(f"freeze_epochs must be in 0..epochs-1, got {cfg.trainer.freeze_epochs}")
    if cfg.trainer.freeze_epochs and not cfg.model.init_from:
        raise EmotionError("freeze_epochs needs init_from (--init-from MODEL.keras): nothing learned to freeze")
    if cfg.model.precision not in PRECISIONS:
        raise EmotionError(f"precision must be one of {', '.join(PRECISIONS)}, got {cfg.model.precision!r}")
    if cfg.trainer.epochs < 1:
        raise EmotionError(f"epochs must be positive, got {cfg.trainer.epochs}")
    if cfg.trainer.lr_schedule not in ("constant", "cosine"):
        raise EmotionError(f"lr_schedule must be constant or cosine, got {cfg.trainer.lr_schedule!r}")


# argparse types shared by every command that takes these flags (emotion fit/cv/data, emotion parity)
def parse_names(text: str) -> list[str]:
    """``"happy, sad"`` -> ``["happy", "sad"]``."""
    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated names, e.g. happy,sad")
    return names


def parse_fractions(text: str) -> list[float]:
    """``"0.7,0.2,0.1"`` -> three non-negative fractions summing to 1 (train, val, test)."""
    try:
        parts = [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError("expected three fractions, e.g. 0.7,0.2,0.1") from None
    if len(parts) != 3 or any(f < 0 for f in parts) or abs(sum(parts) - 1) > 1e-6:
        raise argparse.ArgumentTypeError("expected three fractions summing to 1, e.g. 0.7,0.2,0.1")
    return parts
