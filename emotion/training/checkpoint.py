"""The checkpoint file (``checkpoints/last.npz``): the model's and the optimizer's variables, the random state,
the epoch, the history, the settings, the backend and each callback's state, written atomically at the end of
every epoch by the `Checkpoint` callback and read back by ``emotion fit --resume``.

    ckpt = read_checkpoint("runs/a/checkpoints/last.npz")
    ckpt["meta"]["epoch"], ckpt["meta"]["backend"]       # where it stopped, and under which backend
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from emotion import backends
from emotion.errors import EmotionError
from emotion.training.runfolder import atomic_path

CHECKPOINT_FILE = "checkpoints/last.npz"


def _flat_states(callbacks) -> tuple[dict, dict]:
    meta, arrays = {}, {}
    for i, cb in enumerate(callbacks):
        if not hasattr(cb, "state_dict"):
            continue
        key = f"{i}:{type(cb).__name__}"
        state = cb.state_dict()
        if state:
            meta[key] = {k: v for k, v in state.items() if not isinstance(v, np.ndarray)}
            arrays.update({f"cb/{key}/{k}": v for k, v in state.items() if isinstance(v, np.ndarray)})
    return meta, arrays


def save_checkpoint(path: str | Path, trainer, next_epoch: int) -> None:
    import keras  # here, not at the top: reading a checkpoint (`emotion fit --resume`'s checks) needs no framework

    model = trainer.module.model
    optimizer = getattr(model, "optimizer", None)
    states, arrays = _flat_states(trainer.callbacks)
    meta = {"format": 1, "epoch": next_epoch, "phase": trainer.phase, "history": trainer.history,
            "stopped": bool(getattr(model, "stop_training", False)),  # early stopping ended this phase
            "config": trainer.config, "backend": keras.backend.backend(), "callbacks": states}
    arrays.update({f"model/{i}": keras.ops.convert_to_numpy(v.value) for i, v in enumerate(model.variables)})
    rng = backends.rng_state()
    if rng is not None:
        arrays["rng"] = rng
    if optimizer is not None:
        arrays.update({f"optimizer/{i}": keras.ops.convert_to_numpy(v.value)
                       for i, v in enumerate(optimizer.variables)})
    with atomic_path(path, ".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta)), **arrays)


def read_checkpoint(path: str | Path) -> dict:
    """``{"meta": {...}, "model": [arrays], "optimizer": [arrays], "callbacks": {key: state}}``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            files = {k: z[k] for k in z.files if k != "meta"}
    except Exception as e:  # a truncated or foreign file: say which, never a traceback
        raise EmotionError(f"{path} is not a readable checkpoint ({type(e).__name__}: {str(e)[:80]})") from None

    def listed(prefix):
        keys = sorted((k for k in files if k.startswith(prefix + "/")), key=lambda k: int(k.split("/")[1]))
        return [files[k] for k in keys]

    callbacks = {}
    for key, state in meta.get("callbacks", {}).items():
        state = dict(state)
        state.update({k.split("/", 2)[2]: v for k, v in files.items() if k.startswith(f"cb/{key}/")})
        callbacks[key] = state
    return {"meta": meta, "model": listed("model"), "optimizer": listed("optimizer"), "callbacks": callbacks,
            "rng": files.get("rng")}


def read_checkpoint_meta(path: str | Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as z:
            return json.loads(str(z["meta"]))
    except Exception as e:
        raise EmotionError(f"{path} is not a readable checkpoint ({type(e).__name__}: {str(e)[:80]})") from None


def assign(variables, arrays, what: str) -> None:
    if len(variables) != len(arrays) or any(tuple(v.shape) != a.shape for v, a in zip(variables, arrays, strict=False)):
        raise EmotionError(f"the checkpoint's {what} does not fit this model ({len(arrays)} arrays for "
                           f"{len(variables)} variables): was it written by another preset, size or module?")
    for v, a in zip(variables, arrays, strict=True):
        v.assign(a)
