"""models: the preset networks and the LightningModule-style EmotionClassifier."""

from __future__ import annotations

import importlib.util
import os
import sys

from emotion.errors import EmotionError


def find_user_module(spec: str) -> tuple[str, str]:
    """``"package.module:Class"`` -> ``(module, class)`` once the module is known to be importable, without
    importing it (so a wrong --module fails before any data is read or Keras loads). The working folder is
    searched too, as `python -m` would, so a module file beside the user is found."""
    mod_name, _, cls_name = spec.partition(":")
    if not mod_name or not cls_name:
        raise EmotionError(f"--module must be package.module:Class, got {spec!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    try:
        found = importlib.util.find_spec(mod_name) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise EmotionError(f"cannot import {mod_name!r} for --module {spec}: no such module (run from the folder "
                           "that holds it, or install it)")
    return mod_name, cls_name
