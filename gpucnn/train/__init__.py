"""The machinery under :class:`gpucnn.Model`'s ``fit`` / ``evaluate`` / ``predict`` /
``train_on_batch`` (the Keras-shaped API itself stays in :mod:`gpucnn.model`).

* :mod:`~gpucnn.train.step`: THE train step (forward, loss, backward, optimizer step) and THE
  eval step (forward without gradients, loss and metrics), functions of the model; one
  evaluation pass.
* :mod:`~gpucnn.train.accumulate`: the running loss and metric sums kept on the device, THE
  host read (:func:`~gpucnn.train.accumulate.host_read`), the lazily read batch logs, the
  ``update_freq`` rule.
* :mod:`~gpucnn.train.losses`: the loss table (:data:`~gpucnn.train.losses.LOSSES`,
  :class:`~gpucnn.train.losses.Loss`) and the target checks.
* :mod:`~gpucnn.train.data`: the adapters from ``x``/``y`` (arrays, device arrays, Tensors,
  iterables of batches) to ``(x, y)`` batches through :class:`gpucnn.data.DataLoader`.
* :mod:`~gpucnn.train.progress`: the progress bar and summary lines.

Nothing here imports :mod:`gpucnn.model`; these names are internal (not in ``gpucnn.__all__``).
"""

from gpucnn.train import accumulate, data, losses, progress, step
from gpucnn.train.accumulate import (
    DEFAULT_UPDATE_FREQ,
    BatchLogs,
    Running,
    host_read,
    update_every,
)
from gpucnn.train.data import ArrayData, IterData, close_batches, make_data
from gpucnn.train.losses import LOSSES, Loss, check_targets
from gpucnn.train.progress import Progress
from gpucnn.train.step import eval_pass, eval_step, train_step

__all__ = [
    "DEFAULT_UPDATE_FREQ",
    "LOSSES",
    "ArrayData",
    "BatchLogs",
    "IterData",
    "Loss",
    "Progress",
    "Running",
    "accumulate",
    "check_targets",
    "close_batches",
    "data",
    "eval_pass",
    "eval_step",
    "host_read",
    "losses",
    "make_data",
    "progress",
    "step",
    "train_step",
    "update_every",
]
