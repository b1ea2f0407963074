"""Keras's ``metrics`` module:
re-exports :mod:`gpucnn.metrics` (the metrics ``compile`` takes).
A name is looked up there on first use, so everything it defines is available here."""

from __future__ import annotations

import importlib
from typing import Any

_TARGETS = ('gpucnn.metrics',)


def _modules() -> list[Any]:
    found = []
    for name in _TARGETS:
        try:
            found.append(importlib.import_module(name))
        except ImportError:  # (an optional module not present in this version)
            continue
    return found


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    for mod in _modules():
        if hasattr(mod, name):
            return getattr(mod, name)
    raise AttributeError(
        f"gpucnn.keras.metrics has no {name!r} (it re-exports {', '.join(_TARGETS)})"
    )


def __dir__() -> list[str]:
    names: set[str] = set()
    for mod in _modules():
        names.update(getattr(mod, "__all__", [n for n in vars(mod) if not n.startswith("_")]))
    return sorted(names)
