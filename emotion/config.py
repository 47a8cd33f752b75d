"""Settings as dataclasses, declared once: each field carries its flag, help, choices and check, and the
`emotion fit`/`cv` flags are made from them (`add_arguments`), the way LightningCLI makes its parser from
signatures. A YAML file mirrors the dataclasses (every key optional)::

    seed: 0
    data: {data: ../shared/data/web-happy-sad, image_size: 256, batch_size: 32, classes: [happy, sad]}
    model: {preset: seed, learning_rate: 0.001}
    trainer: {epochs: 20, out: runs/seed}

    cfg = load_config("configs/seed.yaml", {"trainer.epochs": 2})
    print(to_yaml(cfg))          # what `emotion fit --print-config` prints; `--config` takes it back
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from emotion.errors import EmotionError
from emotion.faces.base import margin_ok

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")  # Keras dtype policies a model can be built with


# ------------------------------------------------------------------------------------------ argparse types
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
    if not _fractions_ok(parts):
        raise argparse.ArgumentTypeError("expected three fractions summing to 1, e.g. 0.7,0.2,0.1")
    return parts


def parse_mapping(text: str) -> dict:
    """``'{dropout: 0.3}'`` (YAML/JSON) -> a dict."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a mapping, e.g. '{dropout: 0.3}'")
    return value


def parse_devices(text: str) -> int | str:
    """``"all"`` or a positive count."""
    if text == "all":
        return text
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError("expected a positive count or 'all'")
    return n


def _devices_ok(v) -> bool:
    return v == "all" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1)


_devices_ok.__doc__ = "a positive count or 'all'"


def parse_address(text: str) -> str:
    """``"HOST:PORT"`` (``"[::1]:PORT"`` for an IPv6 address), checked; returned as given."""
    if not _address_ok(text):
        raise argparse.ArgumentTypeError("expected HOST:PORT with a port in 1..65535, e.g. 10.0.0.1:1234")
    return text


def _address_ok(v) -> bool:
    if not isinstance(v, str) or any(c.isspace() for c in v):
        return False
    host, sep, port = v.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        return False
    if host.startswith("[") or host.endswith("]"):
        return host.startswith("[") and host.endswith("]") and len(host) > 2 and "]" not in host[1:-1]
    return ":" not in host and "/" not in host


_address_ok.__doc__ = "HOST:PORT with a port in 1..65535 (an IPv6 host in brackets: [::1]:1234)"


def _fractions_ok(parts) -> bool:
    return len(parts) == 3 and all(isinstance(f, int | float) and f >= 0 for f in parts) and abs(sum(parts) - 1) < 1e-6


def _at_least(n: int):
    def check(v):
        return isinstance(v, int) and not isinstance(v, bool) and v >= n
    check.__doc__ = f"an integer >= {n}"
    return check


def _fraction_below_one(value) -> bool:
    """a number in [0, 1)"""
    return 0 <= value < 1


def _fraction(value) -> bool:
    """a number in [0, 1]"""
    return 0 <= value <= 1


def _between(lo: int, hi: int):
    def check(v):
        return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi
    check.__doc__ = f"an integer from {lo} to {hi}"
    return check


def _learning_rate_ok(v) -> bool:
    """a number from 0 to 10 (not NaN; 0 trains nothing, which tests use)"""
    return 0 <= v <= 10  # NaN fails both comparisons


# the largest float32 input batch (image_size^2 * channels * batch_size * 4 bytes): 170 RGB images of 1024 px, 2730
# of 256 px. Past it a fit would be killed for memory minutes later, after every image had been decoded.
MAX_BATCH_BYTES = 2 << 30


def default_out(kind: str = "fit", root: str | Path = "models") -> str:
    """A run's folder with no --out: ``models/fit-20260101-120000`` (``-2``... if taken), never ``models/`` itself."""
    base = Path(root) / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, k = base, 2
    while path.exists():
        path, k = Path(f"{base}-{k}"), k + 1
    return str(path)


def opt(default=None, help: str = "", *, flag: str | None = None, choices=None, parse=None, check=None,
        metavar: str | None = None, const=None, factory=None):
    """A setting: its default, and what the command line needs to offer it. ``flag``: the option's name (default
    ``--field-name``); ``parse``: argparse type; ``check``: predicate a value from YAML or flags must satisfy
    (its docstring says what is expected); ``const``: the flag takes no value and stores this one."""
    meta = {"help": help, "flag": flag, "choices": choices, "parse": parse, "check": check, "metavar": metavar,
            "const": const}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# ------------------------------------------------------------------------------------------ the settings
@dataclass
class DataConfig:
    data: str = opt("data", "folder of class subfolders, or of train/ val/ test/")
    classes: list[str] | None = opt(None, "comma-separated subset of class folders (default: all)", parse=parse_names)
    image_size: int = opt(256, "side of the square the images are resized to", check=_between(8, 1024))
    color: str = opt("rgb", "colour of the model's input", choices=("rgb", "grayscale"))
    batch_size: int = opt(32, "images per training step", check=_between(1, 65536))
    split: list[float] = opt(help="train,val,test fractions of a folder that is not split already",
                             parse=parse_fractions, factory=lambda: [0.7, 0.2, 0.1])
    cache: str | None = opt(None, "decoded-image cache folder, or 'off' (default: $EMOTION_CACHE, "
                            "$XDG_CACHE_HOME/emotion, ~/.cache/emotion)")
    max_image_mb: int = opt(50, "image files larger than this many MB are reported and skipped, never read",
                            check=_at_least(1), metavar="MB")
    faces: str = opt("none", "train on whole images (none), on each image's largest face (crop), or on images that "
                     "are face crops already (given); a face model crops faces in predict/test/video/serve",
                     choices=("none", "crop", "given"))
    no_face: str = opt("keep", "with --faces crop, an image where no face is found: keep it whole or skip it",
                       choices=("keep", "skip"))
    detector: str = opt("blazeface", "face detector for --faces crop (docs/faces.md)", choices=("blazeface", "haar"))
    margin: float | None = opt(None, "with --faces crop: each side of the face box grows by this share of its side "
                               "before the square is cut (default: the detector's, FER2013's framing; docs/faces.md)",
                               check=margin_ok, metavar="M")
    votes: str | None = opt(None, "a CSV of each face's votes (FER+'s votes.csv: split, file, one column a class): "
                            "train on the vote distribution instead of the folder's label (validation and test "
                            "keep the folders' labels)", metavar="CSV")
    mix_in: str | None = opt(None, "a second folder of class subfolders (its train/ where pre-split) whose images join "
                             "the training split only, never val or test: e.g. the data the --init-from model "
                             "learned, so that fine-tuning keeps it (rehearsal)", metavar="DIR")
    mix_in_max: int = opt(0, "with --mix-in: at most this many of its images, drawn once per class in proportion "
                          "(0: all)", check=_at_least(0), metavar="N")
    mix_in_faces: str | None = opt(None, "with --mix-in: how its images are cut, as --faces (default: as --faces)",
                                   choices=("none", "crop", "given"))


@dataclass
class ModelConfig:
    module: str = opt("emotion.models.module:EmotionClassifier",
                      "the LightningModule-style class that owns network, loss, optimizer and hooks, as "
                      "package.module:Class (a subclass of emotion.models.module.EmotionClassifier)",
                      metavar="MOD:CLASS")
    preset: str = opt("seed", "network preset (emotion.models.presets.PRESETS)")
    preset_args: dict = opt(help="keyword arguments of the preset, e.g. '{dropout: 0.3}'", parse=parse_mapping,
                            metavar="MAPPING", factory=dict)
    learning_rate: float = opt(1e-3, "Adam's learning rate", flag="--lr", check=_learning_rate_ok)
    lr_schedule: str = opt("constant", "learning-rate schedule", choices=("constant", "cosine"))
    label_smoothing: float = opt(0.0, "label smoothing of the cross-entropy loss", check=_fraction_below_one)
    init_from: str | None = opt(None, "start from this .keras's weights (same preset and input size), or "
                                "a shipped model's name (happy-sad, fer2013-happy-sad)", metavar="MODEL")
    keep_init: float = opt(0.0, "with --init-from: the share of the starting weights kept after training (the "
                           "model saved is keep*start + (1-keep)*trained, WiSE-FT weight-space ensembling: keeps "
                           "more of what the starting model knew); 0: off", check=_fraction_below_one)


@dataclass
class TrainerConfig:
    epochs: int = opt(20, "epochs to train (Lightning's max_epochs)", check=_between(1, 100000))
    out: str | None = opt(None, "run folder (default: a new folder models/fit-YYYYMMDD-HHMMSS)")
    precision: str = opt("float32", "Keras dtype policy the network is built with; mixed_bfloat16 uses AMX/bf16 "
                         "units where the CPU has them", choices=PRECISIONS)
    deterministic: bool = opt(False, "the backend's determinism switches")
    early_stopping: int = opt(0, "stop after this many epochs without a lower val_loss (0: off)",
                              check=_at_least(0), metavar="PATIENCE")
    restore_best: bool = opt(False, "keep the weights of the epoch with the lowest val_loss")
    freeze_epochs: int = opt(0, "with --init-from: train only the head for the first N epochs",
                             check=_at_least(0), metavar="N")
    tta_flip: bool = opt(False, "after training, save and test the mean of the model on each image and its mirror")
    logit_adjust: float = opt(0.0, "after training, subtract this share of the log class prior (training images per "
                              "class) from the logits (logit adjustment): 0 off, 1 aims at the best balanced "
                              "accuracy; rare classes are answered more often", check=_fraction, metavar="TAU")
    checkpoint: bool = opt(True, "write a checkpoint at the end of every epoch (what --resume continues from)")
    tensorboard: bool = opt(True, "TensorBoard scalars in the run folder's logs/")
    devices: int | str = opt(1, "devices each training batch is split over (data parallel, JAX): a count or 'all'; "
                             "the batch size must be a multiple of it", parse=parse_devices, check=_devices_ok,
                             metavar="N|all")
    num_processes: int = opt(1, "processes that train together, each on its own devices, typically one per host "
                             "(data parallel, JAX); process 0 alone writes the run folder", check=_at_least(1),
                             metavar="P")
    process_id: int = opt(0, "this process's number among --num-processes, 0 to P-1", check=_at_least(0),
                          metavar="I")
    coordinator: str | None = opt(None, "HOST:PORT where process 0 listens for the others (with --num-processes "
                                  "above 1); every process is given the same", parse=parse_address,
                                  check=_address_ok, metavar="HOST:PORT")
    verbose: int = opt(1, "one line per epoch instead of progress bars", flag="--quiet", const=2,
                       choices=(0, 1, 2))


@dataclass
class Config:
    seed: int = opt(0, "seed of the split, the data order, the weights and augmentation", check=_at_least(0))
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SECTIONS = {"data": DataConfig, "model": ModelConfig, "trainer": TrainerConfig}


def settings() -> list[tuple[str, dataclasses.Field]]:
    """Every setting as ``("section.name", field)`` (``"seed"`` for the top-level one)."""
    out = [("seed", next(f for f in dataclasses.fields(Config) if f.name == "seed"))]
    for section, cls in SECTIONS.items():
        out += [(f"{section}.{f.name}", f) for f in dataclasses.fields(cls)]
    return out


def flag_of(key: str, f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def dest_of(key: str) -> str:
    return "cfg__" + key.replace(".", "__")


# ------------------------------------------------------------------------------------------ command line
def add_arguments(parser: argparse.ArgumentParser, only: list[str] | None = None,
                  defaults: dict | None = None) -> None:
    """One flag per setting (default None: keep the config's value), plus ``--config``. A command that uses
    only some settings (`emotion bench`, `emotion parity`) names them in ``only`` (dotted keys) and may give its
    own ``defaults`` (shown in the help; `config_from_args` applies them under the flags)."""
    if only is None:
        parser.add_argument("--config", help="YAML settings file (flags override it; --print-config writes one)")
    defaults = defaults or {}
    for key, f in settings():
        if only is not None and key not in only:
            continue
        m = f.metadata
        default = defaults.get(key, f.default if f.default is not dataclasses.MISSING else f.default_factory())
        shown = default if m.get("const") is None else None
        hidden = shown is None or shown is False or shown in ("", [], {})
        text = m["help"] + ("" if hidden else f" (default: {_show(shown)})")
        kwargs = {"dest": dest_of(key), "default": None, "help": text}
        if m.get("const") is not None:
            kwargs.update(action="store_const", const=m["const"])
        elif f.type in ("bool", bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = m.get("parse") or _scalar_type(f)
            if m.get("choices"):
                kwargs["choices"] = m["choices"]
            if not m.get("choices"):
                kwargs["metavar"] = m.get("metavar") or f.name.upper()
        parser.add_argument(flag_of(key, f), **kwargs)


def _show(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _scalar_type(f: dataclasses.Field):
    text = str(f.type)
    return int if text.startswith("int") else float if text.startswith("float") else str


def overrides_from_args(args: argparse.Namespace) -> dict:
    return {key: getattr(args, dest_of(key), None) for key, _ in settings()}


def config_from_args(args: argparse.Namespace, defaults: dict | None = None) -> Config:
    """The defaults, a command's own ``defaults``, the ``--config`` file, then the flags; validated."""
    overrides = {k: v for k, v in overrides_from_args(args).items() if v is not None}
    path = getattr(args, "config", None)
    if defaults and path:  # the file beats the command's defaults
        base = flatten(load_config(path))
        defaults = {k: v for k, v in defaults.items() if base[k] == flatten(Config())[k]}
    return load_config(path, {**(defaults or {}), **overrides})


# ------------------------------------------------------------------------------------------ YAML
def _suggest(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _home_of(key: str) -> str | None:
    """The section a setting's name belongs to, for a key found in the wrong place."""
    for name, cls in SECTIONS.items():
        if key in {f.name for f in dataclasses.fields(cls)}:
            return name
    return None


def _misplaced(key: str, where: str, options) -> str:
    home = _home_of(key)
    if home and home != where:
        return f"unknown key {key!r} in {where}: it belongs in the {home!r} section"
    return f"unknown key {key!r} in {where}{_suggest(key, options)}; valid: {', '.join(sorted(options))}"


def _text_keys(mapping: dict, where: str) -> None:
    for key in mapping:
        if not isinstance(key, str):
            raise EmotionError(f"config: the key {key!r} in {where} is not a name")


def from_dict(raw: dict) -> Config:
    raw = dict(raw or {})
    _text_keys(raw, "the top level")
    for key in raw:
        if key not in {"seed", *SECTIONS}:
            raise EmotionError("config: " + _misplaced(key, "the top level", ["seed", *SECTIONS]))
    sections = {}
    for name, cls in SECTIONS.items():
        values = raw.get(name) or {}
        if not isinstance(values, dict):
            raise EmotionError(f"config section {name!r} must be a mapping")
        _text_keys(values, f"section {name!r}")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in names:
                raise EmotionError("config: " + _misplaced(key, f"section {name!r}", names))
        sections[name] = cls(**values)
    return Config(seed=raw.get("seed", 0), **sections)


MAX_CONFIG_FILE_BYTES = 1 << 20


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> Config:
    """Defaults, then the YAML file, then ``{"section.key": value}`` overrides (None values are ignored)."""
    raw: dict = {}
    if path:
        path = Path(path)
        if not path.is_file():
            raise EmotionError(f"config file not found: {path}")
        if path.stat().st_size > MAX_CONFIG_FILE_BYTES:
            raise EmotionError(f"config file {path} is {path.stat().st_size} bytes; a config is a few KB "
                               f"(limit {MAX_CONFIG_FILE_BYTES})")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise EmotionError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
        except RecursionError:
            raise EmotionError(f"config file {path} nests too deep to read") from None
        if not isinstance(raw, dict):
            raise EmotionError(f"config file {path} must hold a mapping")
    cfg = from_dict(raw)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key == "seed":
            cfg.seed = value
            continue
        section, name = key.split(".")
        setattr(getattr(cfg, section), name, value)
    validate(cfg)
    return cfg


def flatten(cfg: Config) -> dict:
    """``{"seed": 0, "data.data": "data", ...}``: every setting by its dotted key."""
    out = {}
    for key, _ in settings():
        section, _, name = key.rpartition(".")
        out[key] = getattr(getattr(cfg, section) if section else cfg, name)
    return out


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))


def to_yaml(cfg: Config) -> str:
    return yaml.dump(cfg.to_dict(), Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def _type_ok(f: dataclasses.Field, value) -> bool:
    text = str(f.type)
    if value is None:
        return "None" in text
    if text == "int | str":
        return isinstance(value, int | str) and not isinstance(value, bool)
    if text.startswith("bool"):
        return isinstance(value, bool)
    if text.startswith("int"):
        return isinstance(value, int) and not isinstance(value, bool)
    if text.startswith("float"):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if text.startswith("str"):
        return isinstance(value, str)
    if text.startswith("list[str]"):
        return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)
    if text.startswith("list[float]"):
        return isinstance(value, list)
    if text.startswith("dict"):
        return isinstance(value, dict)
    return True


def validate(cfg: Config) -> None:
    """Each setting against its declaration (type, choices, check), then the rules that join settings."""
    for key, f in settings():
        section, _, name = key.rpartition(".")
        value = getattr(getattr(cfg, section) if section else cfg, name)
        m = f.metadata
        if not _type_ok(f, value):
            raise EmotionError(f"{key} must be {str(f.type).replace(' | None', ' or null')}, got {value!r}")
        if value is not None and m.get("choices") and value not in m["choices"]:
            raise EmotionError(f"{key} must be one of {', '.join(map(str, m['choices']))}, got {value!r}")
        if value is not None and m.get("check") and not m["check"](value):
            raise EmotionError(f"{key} must be {m['check'].__doc__}, got {value!r}")
    d = cfg.data
    if d.margin is not None and "crop" not in (d.faces, d.mix_in_faces):
        raise EmotionError(f"data.margin applies to faces: crop (the square cut around each face found), "
                           f"not faces: {d.faces}")
    batch_bytes = d.image_size ** 2 * (3 if d.color == "rgb" else 1) * d.batch_size * 4
    if batch_bytes > MAX_BATCH_BYTES:
        raise EmotionError(f"data.batch_size {d.batch_size} of {d.image_size}-px images is {batch_bytes / 2**30:.1f} "
                           f"GiB of input a step, over the limit of {MAX_BATCH_BYTES / 2**30:.0f} GiB: lower "
                           "batch_size or image_size")
    if not _fractions_ok(cfg.data.split):
        raise EmotionError(f"split must be three fractions summing to 1 (train,val,test), got {cfg.data.split}")
    if ":" not in cfg.model.module:
        raise EmotionError(f"model.module must be package.module:Class, got {cfg.model.module!r}")
    t = cfg.trainer
    if cfg.model.keep_init and not cfg.model.init_from:
        raise EmotionError("keep_init needs init_from (--init-from MODEL.keras): no starting weights to keep")
    if t.freeze_epochs >= t.epochs:
        raise EmotionError(f"freeze_epochs must be in 0..epochs-1, got {t.freeze_epochs}")
    if t.process_id >= t.num_processes:
        raise EmotionError(f"trainer.process_id must be in 0..{t.num_processes - 1} (one number per process of "
                           f"num_processes {t.num_processes}), got {t.process_id}")
    if t.num_processes > 1 and not t.coordinator:
        raise EmotionError(f"num_processes {t.num_processes} needs coordinator (--coordinator HOST:PORT): the "
                           "address of process 0, the same for every process")
    if t.freeze_epochs and not cfg.model.init_from:
        raise EmotionError("freeze_epochs needs init_from (--init-from MODEL.keras): nothing learned to freeze")
