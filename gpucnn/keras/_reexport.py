"""The one mechanism behind ``gpucnn.keras.{callbacks,losses,metrics,optimizers}``: each is
Keras's module name for gpucnn modules that already exist, so it re-exports their public
names (their ``__all__``) and names what it re-exports when a name is missing."""

from __future__ import annotations

import importlib
from typing import Any


def reexport(namespace: dict[str, Any], *targets: str) -> None:
    """Copy the ``__all__`` names of the modules ``targets`` into ``namespace`` (a module's
    ``globals()``), set its ``__all__``, and a ``__getattr__`` whose error lists ``targets``."""
    names: list[str] = []
    for target in targets:
        mod = importlib.import_module(target)
        for name in mod.__all__:
            if name not in namespace:
                namespace[name] = getattr(mod, name)
                names.append(name)
    namespace["__all__"] = names
    here = namespace["__name__"]

    def __getattr__(name: str) -> Any:  # noqa: N807 - the module hook's name
        raise AttributeError(f"{here} has no {name!r} (it re-exports {', '.join(targets)})")

    namespace["__getattr__"] = __getattr__
