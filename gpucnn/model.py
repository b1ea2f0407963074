"""``Model``: a :class:`~gpucnn.Module` with the Keras-style training API; ``Sequential``.

``compile(optimizer, loss, metrics)``, ``fit``, ``evaluate``, ``predict``, ``train_on_batch``,
``summary``, ``save``/``save_weights``/``load_weights``. A plain ``Module`` (a layer, a block)
has none of them; subclass :class:`Model` (PyTorch style: layers in ``__init__``, a
``forward``) or use :class:`Sequential` to train with them.

Conventions:

* Models output LOGITS. ``"sparse_categorical_crossentropy"`` and
  ``"categorical_crossentropy"`` apply the softmax inside the loss, ``"binary_crossentropy"``
  the sigmoid. If the model ends in a softmax or sigmoid (a ``Softmax`` layer,
  ``Activation("softmax"/"sigmoid")`` or ``activation="softmax"/"sigmoid"`` on the last
  layer) compile detects it (``from_logits=None``) and the loss takes the log of the
  (clipped) probabilities instead; pass ``from_logits=True/False`` to override.
* Inputs are NCHW (or (N, features)). In-memory arrays are batched by a
  :class:`gpucnn.data.DataLoader` on the model's backend and cast to its dtype (float32 by
  default; integer images are cast, not scaled): pinned, prefetched uploads of host arrays on
  CUDA; device arrays (or cuda Tensors) are batched where they are, never copied to the host.
  ``fit``, ``train_on_batch``, ``evaluate`` and ``predict`` run one train step and one eval step
  (:func:`gpucnn.train.step.train_step` / :func:`gpucnn.train.step.eval_step`).
* Host reads: a training step does not synchronise with the device. The running loss and
  metric sums stay on the device and are read (all together, with the losses' deferred
  target checks, in one transfer: :func:`gpucnn.train.accumulate.host_read`) every
  ``update_freq`` steps, at the last step of each epoch and once at the end of ``evaluate``;
  ``History`` and the epoch logs get the same numbers as reading every step would.
  ``on_train_batch_end`` receives Keras' batch logs (running ``loss`` and metrics, plus
  ``batch_loss`` and ``size``) as a mapping read on first access, so a callback that reads
  them inside the hook costs one host read for that step and one that does not costs none.
* Shuffling draws a permutation per epoch from ``numpy.random.default_rng([seed, epoch])``
  (``seed``: fit's argument, else the :func:`gpucnn.manual_seed` seed), so a run resumed with
  ``initial_epoch=k`` shuffles exactly like an uninterrupted one. ``seed`` does not reseed
  the global generator (dropout masks continue the :mod:`gpucnn.random` stream, which
  :func:`gpucnn.load_model` restores).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from gpucnn import backend as _backend
from gpucnn import metrics as _metrics
from gpucnn._checks import check_bool, check_int, check_number
from gpucnn.backend.device import is_array as _is_array
from gpucnn.callbacks import Callback, CallbackList, History
from gpucnn.module import Module, backend_name, deserialize, register_module, serialize
from gpucnn.tensor import Tensor
from gpucnn.train import accumulate
from gpucnn.train import step as steps
from gpucnn.train.accumulate import DEFAULT_UPDATE_FREQ as DEFAULT_UPDATE_FREQ  # fit doc
from gpucnn.train.accumulate import BatchLogs, Running, update_every
from gpucnn.train.data import ArrayData, IterData, close_batches, iter_batches, make_data
from gpucnn.train.losses import LOSSES, Loss
from gpucnn.train.progress import Progress, line

__all__ = ["Model", "Sequential", "LOSSES", "OPTIMIZERS", "move_optimizer_state"]

# Keras default learning rates
OPTIMIZERS = {"sgd": ("SGD", 0.01), "adam": ("Adam", 1e-3), "adamw": ("AdamW", 1e-3),
              "rmsprop": ("RMSprop", 1e-3)}


# ----------------------------------------------------------------------------- optimizer


def move_optimizer_state(opt: Any, backend: str) -> None:
    """Move every array in ``opt.state`` to ``backend`` (the optimizer copies them into its
    flat buffers at its next step)."""
    be = _backend.get_backend(backend_name(backend))
    for st in getattr(opt, "state", {}).values():
        for k, v in list(st.items()):
            if _is_array(v):
                st[k] = _backend.to_backend(v, be)


# ----------------------------------------------------------------------------- Model


def _check_verbose(where: str, verbose: Any) -> None:
    if isinstance(verbose, bool) or not isinstance(verbose, (int, np.integer)) \
            or verbose not in (0, 1, 2):
        raise ValueError(f"{where}: verbose must be 0, 1 or 2, got {verbose!r}")


class Model(Module):
    """A Module that trains itself: compile / fit / evaluate / predict / summary / save.

    Subclass it as a Module (assign layers in ``__init__`` after ``super().__init__()``, write
    ``forward``), or use :class:`Sequential`.

    Args:
        name: a display name (default: snake_case class name plus a counter).
    """

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name=name)
        self.optimizer: Any = None
        self.stop_training = False
        self.history: History | None = None
        self.completed_epochs = 0
        self._loss: Loss | None = None
        self._metric_specs: list = []
        self._optimizer_factory: Callable[[list], Any] | None = None
        self._compile_config: dict | None = None

    # ------------------------------------------------------------------ compile
    def compile(
        self,
        optimizer: Any = "rmsprop",
        loss: Any = None,
        metrics: list | None = None,
        lr: float | None = None,
        from_logits: bool | None = None,
    ) -> None:
        """Configure training.

        Args:
            optimizer: ``"sgd"``, ``"adam"``, ``"adamw"``, ``"rmsprop"`` (Keras default
                learning rates 0.01, 1e-3, 1e-3, 1e-3), an :class:`gpucnn.optim.Optimizer`
                instance, or a callable ``params -> Optimizer`` (e.g. ``functools.partial(
                optim.SGD, lr=0.1, momentum=0.9)``) for models whose parameters do not exist
                yet. Named optimizers are created as soon as the model is built.
            loss: a name in :data:`LOSSES` or ``callable(output, target) -> scalar Tensor``.
            metrics: names (see :mod:`gpucnn.metrics`) or callables.
            lr: learning rate for a named optimizer.
            from_logits: whether the model outputs logits; ``None`` detects a final
                softmax/sigmoid (see the module doc).

        Raises:
            ValueError: unknown optimizer, loss or metric name (listing the valid ones).
        """
        from gpucnn import optim

        if loss is None:
            raise ValueError(
                f"compile(loss=...): a loss is required; known: {', '.join(LOSSES)} or a callable"
            )
        if from_logits is None:
            act = self._output_activation()
            from_logits = act not in ("softmax", "sigmoid")
        self._loss = Loss(loss, bool(from_logits))
        specs = list(metrics or [])
        if isinstance(metrics, str):
            specs = [metrics]
        for m in specs:  # validate names now
            _metrics.get(m, self._loss.name, self._loss.from_logits)
        self._metric_specs = specs
        opt_cfg: dict[str, Any]
        self.optimizer = None
        if isinstance(optimizer, str):
            key = optimizer.lower()
            if key not in OPTIMIZERS:
                raise ValueError(
                    f"compile(optimizer=...): unknown optimizer {optimizer!r}; known: "
                    f"{', '.join(OPTIMIZERS)}, an Optimizer instance or a callable params -> "
                    "Optimizer"
                )
            cls_name, default_lr = OPTIMIZERS[key]
            rate = default_lr if lr is None else float(lr)
            cls = getattr(optim, cls_name)
            self._optimizer_factory = lambda ps: cls(ps, lr=rate)
            opt_cfg = {"class_name": cls_name, "config": {"lr": rate}}
        elif isinstance(optimizer, optim.Optimizer):
            if lr is not None:
                optimizer.lr = float(lr)
            self._optimizer_factory = None
            self.optimizer = optimizer
            opt_cfg = {"class_name": type(optimizer).__name__, "config": {}}
        elif callable(optimizer):
            self._optimizer_factory = optimizer
            opt_cfg = {"class_name": None, "config": {}}
        else:
            raise ValueError(
                f"compile(optimizer=...): expected a name ({', '.join(OPTIMIZERS)}), an "
                f"Optimizer or a callable, got {type(optimizer).__name__}"
            )
        self._compile_config = {
            "optimizer": opt_cfg,
            "loss": self._loss.name if self._loss.kind != "custom" else None,
            "metrics": [m if isinstance(m, str) else getattr(m, "__name__", None) for m in specs],
            "from_logits": bool(from_logits),
        }
        if self.built:
            self._ensure_optimizer()

    def _output_activation(self) -> str | None:
        leaves = [m for m in self.modules() if not list(m.children())]
        for m in reversed(leaves):
            act = getattr(m, "output_activation", None)
            if act is not None:
                return act
            if type(m).__name__ in ("Dropout", "Flatten", "Reshape"):
                continue
            return None
        return None

    def _ensure_optimizer(self) -> Any:
        if self.optimizer is None:
            if self._optimizer_factory is None:
                raise RuntimeError("no optimizer: call compile() first")
            params = self.trainable_parameters()
            if not params:
                raise RuntimeError(f"{self.name}: the model has no trainable parameters")
            self.optimizer = self._optimizer_factory(params)
            cfg = self._compile_config
            if cfg is not None and cfg["optimizer"]["class_name"] is None:
                cfg["optimizer"]["class_name"] = type(self.optimizer).__name__
        return self.optimizer

    def _metric_objects(self, loss: Loss) -> list:
        """Fresh metric objects of the compiled metrics (accumulated by
        :class:`~gpucnn.train.accumulate.Running`)."""
        return [_metrics.get(m, loss.name, loss.from_logits) for m in self._metric_specs]

    def _require_compiled(self, where: str) -> Loss:
        if self._loss is None:
            raise RuntimeError(f"{where}: the model is not compiled; call compile(...) first")
        return self._loss

    def _ensure_built_for(self, xb: Any) -> None:
        if not self.built:
            shape = tuple(xb.shape[1:])
            self.check_input_shape(shape)
            self.build(shape)

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        x: Any = None,
        y: Any = None,
        batch_size: int = 32,
        epochs: int = 1,
        verbose: int = 1,
        callbacks: list[Callback] | None = None,
        validation_split: float = 0.0,
        validation_data: Any = None,
        shuffle: bool = True,
        initial_epoch: int = 0,
        seed: int | None = None,
        steps_per_epoch: int | None = None,
        update_freq: int | str | None = None,
    ) -> History:
        """Train for ``epochs - initial_epoch`` epochs (``epochs`` is the final epoch index).

        Args:
            x, y: arrays/Tensors (N, ...) and targets (N, ...); or ``x`` an iterable of
                ``(x, y)`` batches (e.g. a :class:`gpucnn.data.DataLoader`) with ``y=None``.
            batch_size: samples per step for arrays.
            verbose: 0 silent, 1 a progress bar per epoch (running loss, metrics, img/s),
                2 one line per epoch.
            callbacks: :class:`gpucnn.callbacks.Callback` instances.
            validation_split: fraction of the LAST samples of ``x``/``y`` (taken before
                shuffling, as Keras) held out for validation (arrays only).
            validation_data: ``(x_val, y_val)`` or an iterable of batches (overrides
                ``validation_split``).
            shuffle: shuffle array data each epoch (see the module doc on reproducibility).
            initial_epoch: epoch to start from (to resume training).
            seed: seed of the per-epoch shuffles.
            steps_per_epoch: cap on the batches per epoch (for endless loaders).
            update_freq: how often the running loss and metrics are read from the device
                (the only host sync of a training step, see the module doc): every that many
                steps (an int), ``"batch"`` (every step), ``"epoch"`` (only at the end of an
                epoch), or ``None``: every step on NumPy (reads are free),
                every :data:`DEFAULT_UPDATE_FREQ` steps on cuda. The last step of an epoch is
                always read. The progress bar's numbers refresh at these reads; ``History``
                and the epoch logs are the same whatever the frequency.

        Returns:
            The :class:`History` (also ``self.history``): per-epoch ``loss``, metrics and
            ``val_*``.
        """
        loss = self._require_compiled("fit")
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"fit: epochs must be a non-negative int, got {epochs!r}")
        _check_verbose("fit", verbose)
        validation_split = check_number("fit", "validation_split", validation_split, 0.0, 1.0,
                                        max_open=True)
        initial_epoch = check_int("fit", "initial_epoch", initial_epoch, 0)
        check_int("fit", "seed", seed, 0, allow_none=True)
        check_int("fit", "steps_per_epoch", steps_per_epoch, 1, allow_none=True)
        check_bool("fit", "shuffle", shuffle)
        if callbacks is not None and not isinstance(callbacks, (list, tuple)):
            raise TypeError(f"fit: callbacks must be a list of Callback objects or None, got "
                            f"{type(callbacks).__name__}")
        every = update_every(update_freq, self.backend)
        train = make_data(x, y, batch_size, "fit", steps_per_epoch)
        val = None
        if validation_data is not None:
            if isinstance(validation_data, tuple) and len(validation_data) in (2, 3):
                val = make_data(validation_data[0], validation_data[1], batch_size,
                                "fit(validation_data)")
            else:
                val = make_data(validation_data, None, batch_size, "fit(validation_data)")
        elif validation_split > 0:
            if not isinstance(train, ArrayData):
                raise ValueError(
                    "fit: validation_split needs array inputs; pass validation_data=loader "
                    "when x is a data loader"
                )
            n = len(train.x)
            split_at = int(round(n * (1.0 - float(validation_split))))
            if split_at <= 0 or split_at >= n:
                raise ValueError(
                    f"fit: validation_split={validation_split} leaves {split_at} training and "
                    f"{n - split_at} validation samples out of {n}"
                )
            train, val = train.split(split_at)
        if isinstance(train, ArrayData) and train.y is None:
            raise ValueError("fit: y is required when x is an array")
        if isinstance(train, ArrayData) and len(train.x):
            self._ensure_built_for(train.x[:1])
        if self.built:
            self._ensure_optimizer()  # so callbacks see it from on_train_begin

        base_seed = seed
        if base_seed is None:
            from gpucnn.random import generator, initial_seed

            base_seed = initial_seed()
            if base_seed is None:
                base_seed = int(generator("numpy").integers(2**31))

        history = History()
        params = {"epochs": epochs, "steps": train.num_batches(), "verbose": verbose,
                  "batch_size": batch_size}
        cbs = CallbackList([*(callbacks or []), history], self, params)  # History last
        self.history = history
        self.stop_training = False
        metric_objs = self._metric_objects(loss)
        run = Running(metric_objs)
        keys = ["loss", *(m.name for m in metric_objs)]
        cbs.on_train_begin({})
        logs: dict = {}
        for epoch in range(int(initial_epoch), int(epochs)):
            cbs.on_epoch_begin(epoch, {})
            if isinstance(train, IterData):
                train.set_epoch(epoch)
            self.train()
            run.reset()
            total = train.num_batches()
            prog = Progress(verbose, epoch, int(epochs), total)
            logs = {}
            y_all = train.host_targets(self.backend) if isinstance(train, ArrayData) else None
            batches: Any = None
            try:
                batches = iter_batches(train, self.backend, self.dtype, epoch, shuffle,
                                       int(base_seed))
                step = -1  # counted by hand: enumerate would keep the last batch alive
                for xb, yb in batches:
                    step += 1
                    cbs.on_train_batch_begin(step, {})
                    n, lv = steps.train_step(self, xb, yb, loss, run, "fit", y_all)
                    y_all = None  # checked once per epoch
                    batch_logs = BatchLogs(run, lv, n, step, keys)
                    refresh = (every is not None and (step + 1) % every == 0) or (
                        total is not None and step + 1 >= total
                    )
                    if refresh:  # the step's one host read
                        logs = {k: v for k, v in batch_logs.resolve().items() if k in keys}
                    prog.update(logs if refresh else None, run.seen)
                    cbs.on_train_batch_end(step, batch_logs)
                    batch_logs.close()
                    # Drop this step's arrays before the next upload, so the memory pool
                    # serves the next step from them (one generation of buffers, not two).
                    xb = yb = lv = batch_logs = None  # type: ignore[assignment]
                    if self.stop_training:
                        break
                if run.seen == 0:
                    raise ValueError("fit: the training data produced no batches")
                if run.dirty:  # data of unknown length, or stopped early: read the epoch's end
                    logs, _ = run.read()
            except BaseException:
                prog.abort()
                raise
            finally:
                close_batches(batches)  # stop an abandoned epoch's loader thread now
                batches = None
            if val is not None:
                vlogs = steps.eval_pass(self, val, loss, metric_objs, "fit(validation)")
                logs.update({f"val_{k}": v for k, v in vlogs.items()})
            prog.close(logs, run.seen)
            self.completed_epochs = epoch + 1
            cbs.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        cbs.on_train_end(logs)
        return history

    # ------------------------------------------------------------------ evaluate / predict
    def evaluate(
        self,
        x: Any = None,
        y: Any = None,
        batch_size: int = 32,
        verbose: int = 0,
        return_dict: bool = False,
    ) -> Any:
        """Loss and metrics on ``x``/``y`` (or a loader), in eval mode without gradients.

        Returns, as Keras: the loss (a float) when there are no metrics, else
        ``[loss, metric...]``; a dict ``{"loss": ..., name: ...}`` with ``return_dict``.
        """
        loss = self._require_compiled("evaluate")
        _check_verbose("evaluate", verbose)
        data = make_data(x, y, batch_size, "evaluate")
        if isinstance(data, ArrayData) and data.y is None:
            raise ValueError("evaluate: y is required when x is an array")
        metric_objs = self._metric_objects(loss)
        t0 = time.perf_counter()
        logs = steps.eval_pass(self, data, loss, metric_objs, "evaluate")
        if verbose:
            print(line("evaluate", time.perf_counter() - t0, logs))
        if return_dict:
            return logs
        vals = list(logs.values())
        return vals[0] if len(vals) == 1 else vals

    def predict(self, x: Any, batch_size: int = 32, verbose: int = 0) -> np.ndarray:
        """Model outputs for ``x`` (array/Tensor (N, ...) or an iterable of batches), batched,
        in eval mode without gradients; a NumPy array (N, ...). Zero samples give an empty
        ``(0, ...)`` array of the model's output shape (the model runs on the empty batch)."""
        _check_verbose("predict", verbose)
        data = make_data(x, None, batch_size, "predict")
        was = self.training
        self.eval()
        outs: list[np.ndarray] = []
        batches: Any = None
        try:
            batches = iter_batches(data, self.backend, self.dtype)
            for xb, _ in batches:
                outs.append(steps.eval_step(self, xb, None, None, None, "predict").numpy())
                if verbose:
                    print(f"predict: {sum(len(o) for o in outs)} samples", end="\r")
        finally:
            close_batches(batches)
            self.train(was)
        if not outs:
            if isinstance(data, ArrayData) and data.x.ndim >= 1:
                # No batch came (zero samples): run the model on the empty batch itself, so
                # the result has the output's shape (0, classes), as PyTorch's forward.
                self.eval()
                try:
                    empty = data.x[:0]
                    return steps.eval_step(self, empty, None, None, None, "predict").numpy()
                finally:
                    self.train(was)
            return np.zeros((0,), dtype=self.dtype)
        return np.concatenate(outs, axis=0)

    def train_on_batch(self, x: Any, y: Any) -> float:
        """One optimisation step on one batch; returns the loss."""
        loss = self._require_compiled("train_on_batch")
        self.train()
        _, lv = steps.train_step(self, x, y, loss, None, "train_on_batch")
        return accumulate.host_read([lv])[0]

    # ------------------------------------------------------------------ summary
    def summary(self, input_shape: Any = None, print_fn: Callable[[str], Any] | None = print,
                line_length: int = 92) -> str:
        """Print and return a Keras-like table: layer (type), output shape, parameters and
        forward FLOPs per sample (a multiply-add counts 2) of each top-level layer; then the
        total / trainable / non-trainable parameter counts (buffers such as batch-norm running
        statistics are not parameters; they are listed separately).

        Args:
            input_shape: per-sample input shape, needed when the model is not built and has
                no ``input_shape`` on its first layer.
        """
        shape = input_shape
        if shape is None:
            shape = getattr(self, "input_shape", None) or self.__dict__.get("_build_input_shape")
        if shape is None:
            raise ValueError(
                f"summary(): the input shape of {self.name} is unknown; pass input_shape=(C, H, "
                "W), give the first layer input_shape=..., or run a batch through it first"
            )
        shape = tuple(shape) if not (shape and isinstance(shape[0], (list, tuple))) else shape
        if not self.built:
            self.build(shape)
        rows = self._summary_rows(shape)
        total = self.count_params()
        trainable = self.count_params(True)
        n_buf = sum(b.size for b in self.buffers())
        # Columns grow to fit the longest entry (plus a space), so they never run together.
        w = [
            max(30, line_length - 62, *(len(r[0]) + 1 for r in rows)),
            max(26, *(len(r[1]) + 1 for r in rows)),
            14,
            16,
        ]
        sep = "─" * sum(w)
        lines = [f'Model: "{self.name}" ({type(self).__name__}), input (None, '
                 f'{", ".join(map(str, shape))})', sep,
                 f"{'Layer (type)':<{w[0]}}{'Output Shape':<{w[1]}}{'Param #':>{w[2]}}"
                 f"{'FLOPs':>{w[3]}}", "═" * sum(w)]
        for name, out, p, fl in rows:
            lines.append(f"{name:<{w[0]}}{out:<{w[1]}}{p:>{w[2]},}{fl:>{w[3]},}")
        lines += [
            sep,
            f"Total params: {total:,}",
            f"Trainable params: {trainable:,}",
            f"Non-trainable params: {total - trainable:,}",
            f"Buffers (not parameters, e.g. running statistics): {n_buf:,}",
            f"Forward FLOPs per sample: {sum(r[3] for r in rows):,}",
            sep,
        ]
        text = "\n".join(lines)
        if print_fn is not None:
            print_fn(text)
        return text

    def _summary_rows(self, shape: Any) -> list[tuple[str, str, int, int]]:
        """``(name (type), output shape, params, FLOPs)`` of each child, from a traced run."""
        rows: list[tuple[str, str, int, int]] = []
        table = self._trace_children(shape)
        for _, child in self.named_children():
            if id(child) in table:
                ins, out = table[id(child)]
                fl = int(child.flops(ins))
                out_s = _shape_str(out)
            else:
                fl, out_s = 0, "(not called)"
            rows.append((f"{child.name} ({type(child).__name__})", out_s,
                         child.count_params(), fl))
        own = sum(p.size for p in self._parameters.values() if p is not None)
        if own:
            rows.append(("(own parameters)", "", own, 0))
        return rows

    # ------------------------------------------------------------------ devices
    def to(self, backend: str) -> Model:
        """Move the parameters, buffers and the optimizer's state to ``backend`` (see
        :meth:`Module.to`); training continues where it stopped. Returns ``self``."""
        super().to(backend)
        if self.optimizer is not None:
            move_optimizer_state(self.optimizer, backend_name(backend))
        return self

    # ------------------------------------------------------------------ persistence
    def save(self, path: Any) -> None:
        """Save architecture, weights, optimizer state, RNG state and epoch counter to one
        ``.npz`` file, atomically (see :mod:`gpucnn.saving`)."""
        from gpucnn.saving import save_model

        save_model(self, path)

    def save_weights(self, path: Any) -> None:
        """Save only the state dict (atomically, checksummed)."""
        from gpucnn.saving import save_weights

        save_weights(self, path)

    def load_weights(self, path: Any, strict: bool = True) -> None:
        """Load a state dict saved by :meth:`save_weights` or :meth:`save`."""
        from gpucnn.saving import load_weights

        load_weights(self, path, strict=strict)


@register_module
class Sequential(Model):
    """A linear stack of layers (a :class:`Model`): ``forward`` calls them in order.

    Args:
        layers: initial layers (Modules).
        name: display name.

    If the first layer was given ``input_shape=(C, H, W)``, every added layer is built at once
    (so :meth:`summary` works before any data) and inputs are checked against that shape.
    """

    def __init__(self, layers: Iterable[Module] | None = None, name: str | None = None) -> None:
        super().__init__(name=name)
        object.__setattr__(self, "_input_shape", None)
        object.__setattr__(self, "_out_shape", None)
        for layer in layers or ():
            self.add(layer)

    @property
    def layers(self) -> list[Module]:
        return list(self._modules.values())

    @property
    def input_shape(self) -> tuple | None:
        """Per-sample input shape, when known (from ``input_shape=`` or the first build)."""
        return self._input_shape

    def add(self, layer: Module) -> Sequential:
        """Append ``layer`` (built at once when the input shape is known)."""
        if not isinstance(layer, Module):
            raise TypeError(
                f"Sequential.add: expected a layer (Module), got {type(layer).__name__}"
            )
        first = not self._modules
        self._modules[str(len(self._modules))] = layer
        if first and getattr(layer, "_input_shape_arg", None) is not None:
            object.__setattr__(self, "_input_shape", tuple(layer._input_shape_arg))
            object.__setattr__(self, "_out_shape", self._input_shape)
        if self._out_shape is not None:
            try:
                if not layer.built:
                    layer.check_input_shape(self._out_shape)
                    layer.build(self._out_shape, backend=self._backend_name)
                else:
                    layer.check_input_shape(self._out_shape)
                object.__setattr__(self, "_out_shape", tuple(layer.output_shape(self._out_shape)))
            except Exception:
                self._modules.pop(str(len(self._modules) - 1))
                raise
        return self

    def pop(self) -> Module:
        """Remove and return the last layer."""
        if not self._modules:
            raise IndexError("Sequential.pop: no layers")
        layer = self._modules.pop(str(len(self._modules) - 1))
        if self._input_shape is not None:
            shape: Any = self._input_shape
            for m in self.layers:
                shape = tuple(m.output_shape(shape))
            object.__setattr__(self, "_out_shape", shape)
        return layer

    def __getitem__(self, idx: int | slice) -> Any:
        layers = self.layers
        if isinstance(idx, slice):
            return Sequential(layers[idx])
        return layers[idx]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self.layers)

    def build(self, input_shape: Any, backend: str | None = None) -> None:
        shape = tuple(input_shape)
        if self._input_shape is None:
            object.__setattr__(self, "_input_shape", shape)
        be = backend or self._backend_name
        for layer in self.layers:
            layer.check_input_shape(shape)
            if not layer.built:
                layer.build(shape, backend=be)
            shape = tuple(layer.output_shape(shape))
        object.__setattr__(self, "_out_shape", shape)

    def check_input_shape(self, shape: Any) -> None:
        exp = self._input_shape
        if exp is not None and tuple(shape) != tuple(exp):
            raise ValueError(
                f"{self.name} (Sequential): input shape mismatch: expected (None, "
                f"{', '.join(map(str, exp))}), received (N, {', '.join(map(str, shape))})"
            )
        if exp is None and self.layers:
            self.layers[0].check_input_shape(shape)

    def _build_from_inputs(self, args: tuple) -> None:
        first = args[0] if args else None
        if not isinstance(first, Tensor):
            raise TypeError(f"{self.name}: expected a Tensor input, got {type(first).__name__}")
        self.check_input_shape(tuple(first.shape[1:]))
        # layers build themselves lazily in forward (on the input's backend)

    def forward(self, x: Any) -> Any:
        for layer in self.layers:
            x = layer(x)
        return x

    def output_shape(self, input_shape: Any) -> Any:
        shape = tuple(input_shape)
        for layer in self.layers:
            shape = tuple(layer.output_shape(shape))
        return shape

    def flops(self, input_shape: Any) -> int:
        total, shape = 0, tuple(input_shape)
        for layer in self.layers:
            total += layer.flops(shape)
            shape = tuple(layer.output_shape(shape))
        return total

    def _summary_rows(self, shape: Any) -> list[tuple[str, str, int, int]]:
        rows: list[tuple[str, str, int, int]] = []
        s = shape
        for layer in self.layers:
            out = tuple(layer.output_shape(s))
            rows.append((f"{layer.name} ({type(layer).__name__})", _shape_str(out),
                         layer.count_params(), int(layer.flops(s))))
            s = out
        return rows

    def get_config(self) -> dict:
        return {"layers": [serialize(m) for m in self.layers], "name": self.name}

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> Module:
        layers = [deserialize(s, custom_objects) for s in config.get("layers", [])]
        return cls(layers, name=config.get("name"))


def _shape_str(shape: Any) -> str:
    if isinstance(shape, list):
        return ", ".join(_shape_str(s) for s in shape)
    return "(None, " + ", ".join(str(s) for s in shape) + ")" if shape else "(None,)"

