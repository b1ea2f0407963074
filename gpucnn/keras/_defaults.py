"""``channels_last``: a gpucnn layer class with Keras's channels-last default."""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["channels_last"]


class _KerasDefault(type):
    """Metaclass of the Keras-default stand-ins: calling one builds the gpucnn layer with the
    changed defaults (so configs, checkpoints and ``type(layer)`` are the gpucnn class's), and
    ``isinstance`` / ``issubclass`` test against that class."""

    _base: type
    _defaults: dict

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        for key, value in cls._defaults.items():
            kwargs.setdefault(key, value)
        return cls._base(*args, **kwargs)

    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, cls._base)

    def __subclasscheck__(cls, sub: type) -> bool:
        return issubclass(sub, cls._base)


def channels_last(base: type, **extra: Any) -> type:
    """A stand-in for ``base`` whose ``data_format`` defaults to ``"channels_last"`` (and
    ``extra`` keyword defaults, e.g. Concatenate's ``axis=-1``); nothing else changes."""
    defaults = {"data_format": "channels_last", **extra}
    sig = inspect.signature(base)
    params = [p.replace(default=defaults[p.name]) if p.name in defaults else p
              for p in sig.parameters.values()]
    changed = ", ".join(f"{k}={v!r}" for k, v in defaults.items())
    ns = {
        "_base": base,
        "_defaults": defaults,
        "__module__": "gpucnn.keras.layers",
        "__qualname__": base.__name__,
        "__doc__": f"gpucnn.layers.{base.__name__} with Keras's defaults ({changed}); "
                   f"it builds a gpucnn.layers.{base.__name__}.\n\n{base.__doc__ or ''}",
        "__signature__": sig.replace(parameters=params),
    }
    return _KerasDefault(base.__name__, (), ns)
