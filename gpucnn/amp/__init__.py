"""Mixed precision: dynamic loss scaling for custom training loops.

:class:`GradScaler` (``torch.amp.GradScaler``'s semantics and defaults: initial scale 2**16,
growth 2 after 2000 clean steps, backoff 0.5, the optimizer step skipped on inf/NaN
gradients). ``autocast`` and ``Model.compile(mixed_precision=...)`` are not there yet.
"""

from gpucnn.amp.scaler import GradScaler, OptState

__all__ = ["GradScaler", "OptState"]
