"""The loss table: :data:`LOSSES` (the names ``compile(loss=...)`` accepts), :class:`Loss`
(a compiled loss, logits or probabilities) and :func:`check_targets` (targets against the
model output, with errors naming the loss and the fix).

Models output LOGITS: the cross-entropies apply the softmax (sigmoid) inside the loss;
``from_logits=False`` (a model ending in a softmax/sigmoid) takes the log of the clipped
probabilities instead. ``"kl_divergence"`` (``"kld"``, ``"kullback_leibler_divergence"``) is
Keras's: targets and outputs are probability distributions over the last axis, both clipped
to [1e-7, 1], ``sum(y_true * log(y_true / y_pred), axis=-1)`` averaged over the batch (on a
logits model the output's log-softmax is used). ``"huber"`` is Keras's Huber (delta 1.0), the
mean over every element.

Per-sample weights (``fit(sample_weight=..., class_weight=...)``): :meth:`Loss.weighted`
multiplies each sample's loss (its mean over the non-batch axes; for the KL divergence the
sum over the last axis, then the mean) by its weight and divides the sum by the number of
samples, as Keras.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucnn.tensor import Tensor

__all__ = ["LOSSES", "LOSS_ALIASES", "Loss", "check_targets", "host_or", "loss_ops"]

LOSSES = (
    "sparse_categorical_crossentropy",
    "categorical_crossentropy",
    "binary_crossentropy",
    "mse",
    "mean_squared_error",
    "mae",
    "mean_absolute_error",
    "huber",
    "kl_divergence",
    "kld",
    "kullback_leibler_divergence",
)
LOSS_ALIASES = {
    "mean_squared_error": "mse",
    "mean_absolute_error": "mae",
    "bce": "binary_crossentropy",
    "huber_loss": "huber",
    "kld": "kl_divergence",
    "kullback_leibler_divergence": "kl_divergence",
}

_PROB_EPS = 1e-7


def _F() -> Any:
    import gpucnn.functional as F

    return F


def loss_ops() -> Any:
    """:mod:`gpucnn.functional.loss` (its deferred target checks and the packed host read)."""
    from gpucnn.functional import loss

    return loss


class Loss:
    """A compiled loss: ``loss(output Tensor, target Tensor) -> scalar Tensor``."""

    def __init__(self, spec: Any, from_logits: bool) -> None:
        self.from_logits = from_logits
        if callable(spec):
            self.name = getattr(spec, "__name__", "custom_loss")
            self.fn = spec
            self.kind = "custom"
            return
        if not isinstance(spec, str):
            raise ValueError(
                f"compile(loss=...): expected a loss name or a callable, got {spec!r}"
            )
        key = spec.lower()
        key = LOSS_ALIASES.get(key, key)
        if key not in LOSSES:
            raise ValueError(
                f"compile(loss=...): unknown loss {spec!r}; known: {', '.join(LOSSES)} "
                "or a callable(output, target) -> scalar Tensor"
            )
        self.name = key
        self.kind = key
        self.fn = None

    @property
    def sparse(self) -> bool:
        return self.kind == "sparse_categorical_crossentropy"

    def __call__(self, out: Tensor, y: Tensor) -> Tensor:
        F = _F()
        k = self.kind
        if k == "custom":
            return self.fn(out, y)
        if k == "sparse_categorical_crossentropy":
            if self.from_logits:
                return F.cross_entropy(out, y)
            return F.nll_loss(F.log(F.clip(out, _PROB_EPS, 1.0)), y)
        if k == "categorical_crossentropy":
            if self.from_logits:
                return F.cross_entropy(out, y)
            return -(y * F.log(F.clip(out, _PROB_EPS, 1.0))).sum(axis=1).mean()
        if k == "binary_crossentropy":
            y = y.reshape(out.shape)
            if self.from_logits:
                return F.binary_cross_entropy_with_logits(out, y)
            return F.binary_cross_entropy(F.clip(out, _PROB_EPS, 1.0 - _PROB_EPS), y)
        y = y.reshape(out.shape)
        if k == "mse":
            return F.mse_loss(out, y)
        if k == "huber":
            return F.huber_loss(out, y)
        if k == "kl_divergence":
            return self._kld_terms(out, y).sum(axis=-1).mean()
        return (out - y).abs().mean()  # mae

    def _kld_terms(self, out: Tensor, y: Tensor) -> Tensor:
        """Keras's KL divergence, element-wise: ``yt * (log yt - log yp)``, both clipped."""
        F = _F()
        logp = F.log_softmax(out, axis=-1) if self.from_logits else F.log(
            F.clip(out, _PROB_EPS, 1.0))
        return F.kl_div(logp, F.clip(y, _PROB_EPS, 1.0), reduction="none")

    def per_sample(self, out: Tensor, y: Tensor) -> Tensor:
        """The loss of each sample, shape ``(N,)``, whose mean is ``self(out, y)``.

        Raises:
            ValueError: a custom loss (a callable returns one scalar, not per-sample values).
        """
        F = _F()
        k = self.kind
        if k == "custom":
            raise ValueError(
                f"fit: sample_weight / class_weight need a built-in loss (one of "
                f"{', '.join(LOSSES)}); the custom loss {self.name!r} returns one scalar, not a "
                "loss per sample"
            )
        n = int(out.shape[0])
        if k == "sparse_categorical_crossentropy":
            if self.from_logits:
                ls = F.cross_entropy(out, y, reduction="none")
            else:
                ls = F.nll_loss(F.log(F.clip(out, _PROB_EPS, 1.0)), y, reduction="none")
        elif k == "categorical_crossentropy":
            if self.from_logits:
                ls = -(y * F.log_softmax(out, axis=1)).sum(axis=1)
            else:
                ls = -(y * F.log(F.clip(out, _PROB_EPS, 1.0))).sum(axis=1)
        else:
            y = y.reshape(out.shape)
            if k == "binary_crossentropy":
                if self.from_logits:
                    ls = F.binary_cross_entropy_with_logits(out, y, reduction="none")
                else:
                    ls = F.binary_cross_entropy(F.clip(out, _PROB_EPS, 1.0 - _PROB_EPS), y,
                                                reduction="none")
            elif k == "mse":
                ls = F.mse_loss(out, y, reduction="none")
            elif k == "huber":
                ls = F.huber_loss(out, y, reduction="none")
            elif k == "kl_divergence":
                ls = self._kld_terms(out, y)
                ls = ls.sum(axis=-1) if ls.ndim > 1 else ls
            else:  # mae
                ls = (out - y).abs()
        if ls.ndim != 1:
            ls = ls.reshape((n, -1)).mean(axis=1)
        return ls

    def weighted(self, out: Tensor, y: Tensor, w: Any) -> Tensor:
        """``sum(per_sample * w) / N`` (Keras's sample-weighted batch loss); ``w`` an array
        ``(N,)`` on the output's backend."""
        ls = self.per_sample(out, y)
        return (ls * Tensor(w.astype(ls.dtype, copy=False))).mean()


def host_or(raw: Any, prepared: Any) -> Any:
    """The host copy of targets when there is one (checks need no device sync)."""
    if isinstance(raw, np.ndarray) and raw.dtype.kind in "iub":
        return raw.reshape(-1) if raw.ndim == 2 and raw.shape[1] == 1 else raw
    return prepared


def check_targets(loss: Loss, y: Any, out_shape: tuple, where: str) -> None:
    """Validate targets against the model output for the built-in losses."""
    n = out_shape[0]
    if int(y.shape[0]) != n:
        raise ValueError(f"{where}: got {n} outputs but {int(y.shape[0])} targets")
    if loss.sparse:
        if y.ndim > 1 and not (y.ndim == 2 and y.shape[1] == 1):
            raise ValueError(
                f"{where}: loss 'sparse_categorical_crossentropy' expects integer class ids of "
                f"shape (N,), got targets of shape {tuple(y.shape)}; use "
                "'categorical_crossentropy' for one-hot targets"
            )
        if len(out_shape) < 2:
            raise ValueError(
                f"{where}: loss 'sparse_categorical_crossentropy' needs outputs (N, classes), "
                f"got {out_shape}"
            )
        c = out_shape[1]
        # Host labels are checked here for free. Device labels are left to the loss op, which
        # checks the range on the device and reports at the next host read (no sync here).
        if y.size and isinstance(y, np.ndarray) and not loss_ops().defers(y):
            lo, hi = int(y.min()), int(y.max())
            if lo < 0 or hi >= c:
                raise ValueError(
                    f"{where}: labels must be in [0, {c}) for loss "
                    f"'sparse_categorical_crossentropy' with {c} outputs, got labels in "
                    f"[{lo}, {hi}]"
                )
    elif loss.kind == "categorical_crossentropy":
        if tuple(y.shape) != tuple(out_shape):
            raise ValueError(
                f"{where}: loss 'categorical_crossentropy' expects one-hot/probability targets "
                f"of shape {tuple(out_shape)}, got {tuple(y.shape)}; use "
                "'sparse_categorical_crossentropy' for integer labels"
            )
    elif loss.kind == "kl_divergence":
        if tuple(y.shape) != tuple(out_shape):
            raise ValueError(
                f"{where}: loss 'kl_divergence' expects probability targets of the output's "
                f"shape {tuple(out_shape)}, got {tuple(y.shape)}"
            )
    elif loss.kind in ("binary_crossentropy", "mse", "mae", "huber"):
        if int(np.prod(y.shape)) != int(np.prod(out_shape)):
            raise ValueError(
                f"{where}: loss {loss.kind!r} expects targets with the output's shape "
                f"{tuple(out_shape)}, got {tuple(y.shape)}"
            )
