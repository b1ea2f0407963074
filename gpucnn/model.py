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
* Inputs are NCHW (or (N, features)); a :class:`Sequential` of channels-last layers takes
  NHWC (``data_format``, :mod:`gpucnn.config`) and transposes once to NCHW. In-memory
  arrays are batched by a :class:`gpucnn.data.DataLoader` on the model's backend and cast
  to its dtype (float32 by default; integer images are cast, not scaled): pinned, prefetched
  uploads of host arrays on CUDA; device arrays (or cuda Tensors) are batched where they are,
  never copied to the host.
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
from gpucnn.layers.base import (
    in_native_layout,
    layout_hint,
    native_layout,
    shape_to_nchw,
    shape_to_nhwc,
    to_nchw,
    to_nhwc,
)
from gpucnn.module import Module, backend_name, deserialize, register_module, serialize
from gpucnn.tensor import Tensor
from gpucnn.train import accumulate, checks
from gpucnn.train import step as steps
from gpucnn.train.accumulate import DEFAULT_UPDATE_FREQ as DEFAULT_UPDATE_FREQ  # fit doc
from gpucnn.train.accumulate import BatchLogs, Running, update_every
from gpucnn.train.data import ArrayData, IterData, close_batches, iter_batches, make_data
from gpucnn.train.losses import LOSSES, Loss
from gpucnn.train.progress import Progress, line

__all__ = ["Model", "Sequential", "LOSSES", "OPTIMIZERS", "move_optimizer_state"]

# Keras default learning rates
OPTIMIZERS = {"sgd": ("SGD", 0.01), "adam": ("Adam", 1e-3), "adamw": ("AdamW", 1e-3),
              "rmsprop": ("RMSprop", 1e-3), "adagrad": ("Adagrad", 1e-3),
              "nadam": ("NAdam", 1e-3)}


# fractions of summary(line_length=...) per column: layer (type), output shape, params, FLOPs
_SUMMARY_COLUMNS = (0.36, 0.28, 0.16, 0.20)


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


def _amp_scaler(policy: str | None) -> Any:
    """A fresh :class:`gpucnn.amp.GradScaler` (torch's defaults) for float16, else None."""
    from gpucnn.amp import GradScaler

    return GradScaler() if policy == "float16" else None


class Model(Module):
    """A Module that trains itself: compile / fit / evaluate / predict / summary / save.

    Subclass it as a Module (assign layers in ``__init__`` after ``super().__init__()``, write
    ``forward``), or use :class:`Sequential`.

    Args:
        name: a display name (default: snake_case class name plus a counter).
    """

    def __init__(self, *args: Any, name: str | None = None, **kwargs: Any) -> None:
        if len(args) == 1 and isinstance(args[0], str) and name is None:
            name, args = args[0], ()
        if args or kwargs:
            given = ", ".join([type(a).__name__ for a in args] + [f"{k}=" for k in kwargs])
            raise TypeError(
                f"Model({given}): gpucnn has no functional API (Model(inputs, outputs)); use "
                "Sequential([Input(shape=...), layer, ...]) or subclass Model (layers in "
                "__init__, a forward method); Model takes only name="
            )
        super().__init__(name=name)
        self.optimizer: Any = None
        self.stop_training = False
        self.history: History | None = None
        self.completed_epochs = 0
        self._loss: Loss | None = None
        self._metric_specs: list = []
        self._optimizer_factory: Callable[[list], Any] | None = None
        self._compile_config: dict | None = None
        self.mixed_precision: str | None = None  # compile(mixed_precision=...)'s dtype
        self.loss_scaler: Any = None  # its GradScaler (float16)

    # ------------------------------------------------------------------ compile
    def compile(
        self,
        optimizer: Any = "rmsprop",
        loss: Any = None,
        metrics: list | None = None,
        lr: float | None = None,
        from_logits: bool | None = None,
        *,
        learning_rate: float | None = None,
        mixed_precision: str | None = None,
    ) -> None:
        """Configure training.

        Args:
            optimizer: ``"sgd"``, ``"adam"``, ``"adamw"``, ``"rmsprop"``, ``"adagrad"``,
                ``"nadam"`` (Keras default learning rates 0.01, then 1e-3 for the others), an
                :class:`gpucnn.optim.Optimizer` instance (one built without parameters,
                Keras style ``optim.Adam(learning_rate=1e-3)``, is bound to the model's
                trainable parameters once the model is built), or a callable
                ``params -> Optimizer`` (e.g. ``functools.partial(optim.SGD, lr=0.1,
                momentum=0.9)``). Named optimizers are created as soon as the model is built.
            loss: a name in :data:`LOSSES` or ``callable(output, target) -> scalar Tensor``.
            metrics: names (see :mod:`gpucnn.metrics`), metric objects
                (``metrics.Precision()``, ``metrics.TopKCategoricalAccuracy(k=3)``) or
                callables.
            lr: learning rate for a named optimizer (or to set on an optimizer instance).
            from_logits: whether the model outputs logits; ``None`` detects a final
                softmax/sigmoid (see the module doc).
            learning_rate: Keras' name for ``lr`` (give one of them; different values are a
                ValueError).
            mixed_precision: ``None`` (or ``"float32"``): full float32; ``"bfloat16"`` /
                ``"float16"`` (or Keras's ``"mixed_bfloat16"`` / ``"mixed_float16"``): the
                forward of fit/evaluate/predict/train_on_batch runs under
                :class:`gpucnn.amp.autocast` with FP32 master weights and the loss in float32;
                float16 also scales the loss with a :class:`gpucnn.amp.GradScaler` (torch's
                defaults), exposed as ``model.loss_scaler`` (None otherwise; assign another
                ``GradScaler`` after compile to change its settings) and saved in checkpoints.
                ``model.mixed_precision`` is the autocast dtype (or None); the compile config
                (saved with the model) records it. On the cuda backend the device's compute
                capability is checked here.

        Raises:
            ValueError: unknown optimizer, loss, metric name or mixed precision policy
                (listing the valid ones); a mixed precision policy on a CUDA device without
                its tensor cores (float16 needs compute capability 7.0, bfloat16 8.0).
        """
        from gpucnn import optim
        from gpucnn.amp import autocast_mode as _amp

        lr = optim.optimizers.resolve_lr("compile", lr, learning_rate, None)
        policy = _amp.resolve_policy(mixed_precision)
        if policy is not None and self.backend == "cuda":
            _amp.check_mixed_precision_supported(policy, _amp.device_capability(),
                                                 "compile(mixed_precision=...)")

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
            if optimizer.bound:
                self._optimizer_factory = None
                self.optimizer = optimizer
            else:  # Keras style: bound to the model's parameters once it is built
                self._optimizer_factory = optimizer.bind
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
            "metrics": [m if isinstance(m, str) else getattr(m, "__name__", None)
                        or _metrics.config_name(m) for m in specs],
            "from_logits": bool(from_logits),
        }
        if policy is not None:
            self._compile_config["mixed_precision"] = policy
        self.mixed_precision = policy
        self.loss_scaler = _amp_scaler(policy)
        if self.built and self.trainable_parameters():  # nothing to train: fit says so
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
                raise ValueError(checks.no_trainable_message(self))
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
        class_weight: dict | None = None,
        sample_weight: Any = None,
        cuda_graph: bool = False,
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
            validation_data: ``(x_val, y_val)``, ``(x_val, y_val, val_sample_weight)`` or an
                iterable of batches (overrides ``validation_split``).
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
            class_weight: ``{class id: weight}`` (Keras): each training sample's loss is
                multiplied by the weight of its class (the label; the argmax of one-hot
                targets; the rounded binary target), 1.0 for classes not named. Not applied
                to validation, as Keras.
            sample_weight: per-sample weights ``(N,)`` for array ``x`` (Keras): each sample's
                loss times its weight, the batch loss their sum divided by the batch size.
                ``validation_split`` splits them too (the held-out samples keep theirs, as
                Keras). A loader may yield ``(x, y, w)`` batches
                instead. Not together with ``class_weight``.
            cuda_graph: on the cuda backend, capture the training step (forward, loss,
                backward, optimizer update) as one CUDA graph after 3 eager warm-up steps and
                replay it for every full batch; the last partial batch and validation run
                eagerly (:mod:`gpucnn.train.graphed`, :mod:`gpucnn.cuda_graph`). Every op runs
                our own kernels then. Not with dropout/noise layers, sample or class weights,
                distributed training or a float16 loss scaler (a clear error says which).

        Warnings (:class:`gpucnn.train.checks.TrainingWarning`, once per call each): NaN or
        Inf in array ``x``/``y`` or in the loss; ``uint8`` images in 0-255 (not scaled).

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
        cw_table = None
        if class_weight is not None:
            if sample_weight is not None:
                raise ValueError("fit: give class_weight or sample_weight, not both (fold the "
                                 "class weights into sample_weight)")
            cw_table = checks.class_weight_table(checks.check_class_weight("fit", class_weight))
            # uploaded once here, not once per step inside the weighted loss
            cw_table = _backend.to_backend(cw_table.astype(self.dtype), self.backend)
        if (class_weight is not None or sample_weight is not None) and loss.kind == "custom":
            raise ValueError(
                f"fit: sample_weight / class_weight need a built-in loss; the custom loss "
                f"{loss.name!r} returns one scalar, not a loss per sample"
            )
        train = make_data(x, y, batch_size, "fit", steps_per_epoch)
        if sample_weight is not None:
            if not isinstance(train, ArrayData):
                raise ValueError(
                    "fit: sample_weight needs array x and y; a data loader yields "
                    "(x, y, sample_weight) batches instead"
                )
            train.w = checks.check_sample_weight("fit", sample_weight, len(train.x))
        if isinstance(train, ArrayData):
            checks.warn_suspicious_inputs(train.x, train.y, "fit", self.dtype)
        val = None
        if validation_data is not None:
            if isinstance(validation_data, tuple) and len(validation_data) in (2, 3):
                val = make_data(validation_data[0], validation_data[1], batch_size,
                                "fit(validation_data)")
                if len(validation_data) == 3 and validation_data[2] is not None:
                    val.w = checks.check_sample_weight("fit(validation_data)",
                                                       validation_data[2], len(val.x))
                checks.warn_suspicious_inputs(val.x, val.y, "fit(validation_data)",
                                              self.dtype)
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
            if not self.trainable_parameters():
                raise ValueError(checks.no_trainable_message(self))
            self._ensure_optimizer()  # so callbacks see it from on_train_begin
        from gpucnn.distributed.fit import fit_setup  # no-op unless init() found >1 rank

        ddp, train, callbacks, verbose = fit_setup(self, train, callbacks, verbose)
        check_bool("fit", "cuda_graph", cuda_graph)
        graphed = None
        if cuda_graph:
            from gpucnn.train.graphed import GraphedTrainStep, check_graph_fit

            check_graph_fit(self, ddp, sample_weight, class_weight)

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
        watch = checks.LossWatch("fit")  # warns once if a loss read is NaN/Inf
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
                                       int(base_seed), triples=True)
                step = -1  # counted by hand: enumerate would keep the last batch alive
                for xb, yb, wb in batches:
                    step += 1
                    cbs.on_train_batch_begin(step, {})
                    if cuda_graph:
                        if graphed is None:
                            graphed = GraphedTrainStep(self, loss)
                        n, lv = graphed(xb, yb, run, "fit", y_all)
                    else:
                        n, lv = steps.train_step(self, xb, yb, loss, run, "fit", y_all, wb,
                                                 cw_table)
                    y_all = None  # checked once per epoch
                    batch_logs = BatchLogs(run, lv, n, step, keys)
                    refresh = (every is not None and (step + 1) % every == 0) or (
                        total is not None and step + 1 >= total
                    )
                    if refresh:  # the step's one host read
                        logs = {k: v for k, v in batch_logs.resolve().items() if k in keys}
                        watch.check(logs)
                    prog.update(logs if refresh else None, run.seen)
                    cbs.on_train_batch_end(step, batch_logs)
                    if not refresh and batch_logs.resolved:  # a callback read them: current
                        logs = {k: v for k, v in batch_logs.resolve().items() if k in keys}
                        watch.check(logs)
                    batch_logs.close()
                    # Drop this step's arrays before the next upload, so the memory pool
                    # serves the next step from them (one generation of buffers, not two).
                    xb = yb = wb = lv = batch_logs = None  # type: ignore[assignment]
                    if ddp is not None:  # one rank stopping stops every rank at this step
                        self.stop_training = ddp.agree_stop(self.stop_training)
                    if self.stop_training:
                        break
                if run.seen == 0:
                    raise ValueError("fit: the training data produced no batches")
                if run.dirty:  # data of unknown length, or stopped early: read the epoch's end
                    logs, _ = run.read()
                watch.check(logs)
            except BaseException:
                prog.abort()
                raise
            finally:
                close_batches(batches)  # stop an abandoned epoch's loader thread now
                batches = None
            if val is not None:
                vlogs = steps.eval_pass(self, val, loss, metric_objs, "fit(validation)")
                logs.update({f"val_{k}": v for k, v in vlogs.items()})
            if ddp is not None:  # the epoch logs averaged over the ranks
                logs = ddp.average_logs(logs)
            prog.close(logs, run.seen)
            self.completed_epochs = epoch + 1
            cbs.on_epoch_end(epoch, logs)
            if ddp is not None:
                self.stop_training = ddp.agree_stop(self.stop_training)
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
        sample_weight: Any = None,
    ) -> Any:
        """Loss and metrics on ``x``/``y`` (or a loader), in eval mode without gradients.

        ``sample_weight``: per-sample weights ``(N,)`` of the loss (Keras semantics, see
        :meth:`fit`). Warns (once) about NaN/Inf in array ``x``/``y`` and unscaled ``uint8``
        images.

        Returns, as Keras: the loss (a float) when there are no metrics, else
        ``[loss, metric...]``; a dict ``{"loss": ..., name: ...}`` with ``return_dict``.
        """
        loss = self._require_compiled("evaluate")
        _check_verbose("evaluate", verbose)
        data = make_data(x, y, batch_size, "evaluate")
        if isinstance(data, ArrayData) and data.y is None:
            raise ValueError("evaluate: y is required when x is an array")
        if sample_weight is not None:
            if not isinstance(data, ArrayData):
                raise ValueError(
                    "evaluate: sample_weight needs array x and y; a data loader yields "
                    "(x, y, sample_weight) batches instead"
                )
            if loss.kind == "custom":
                raise ValueError(
                    f"evaluate: sample_weight needs a built-in loss; the custom loss "
                    f"{loss.name!r} returns one scalar, not a loss per sample"
                )
            data.w = checks.check_sample_weight("evaluate", sample_weight, len(data.x))
        if isinstance(data, ArrayData):
            checks.warn_suspicious_inputs(data.x, data.y, "evaluate", self.dtype)
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

    def predict_on_batch(self, x: Any) -> np.ndarray:
        """Model outputs for one batch ``x`` (array or Tensor (N, ...)), in eval mode without
        gradients, as a NumPy array (Keras ``predict_on_batch``: no batching, no callbacks)."""
        if isinstance(x, (list, tuple)) or not (isinstance(x, Tensor) or _is_array(x)
                                                 or isinstance(x, np.ndarray)):
            x = np.asarray(x)
        was = self.training
        self.eval()
        try:
            return steps.eval_step(self, x, None, None, None, "predict_on_batch").numpy()
        finally:
            self.train(was)

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
        total / trainable / non-trainable parameter counts, as Keras counts them: the
        non-trainable ones are the frozen parameters plus the persistent state (batch-norm
        moving mean and variance), so ``Total params`` is ``count_params()`` (parameters only,
        PyTorch's count) plus that state, and ``Trainable params`` is
        ``count_params(trainable=True)``.

        Args:
            input_shape: per-sample input shape (in the model's data format), needed when the
                model is not built and has no ``input_shape`` on its first layer.
            print_fn: called with the whole text (``None``: only return it).
            line_length: total width; the four columns take 36/28/16/20 % of it (Keras
                scales its columns the same way), each widened to fit its longest entry.
        """
        line_length = check_int("summary", "line_length", line_length, 1)
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
        trainable = self.count_params(True)
        total = self.count_params() + _state_count(self)
        # Columns are fractions of line_length, grown to fit the longest entry (plus a space)
        # so they never run together.
        cells = [("Layer (type)", [r[0] for r in rows]), ("Output Shape", [r[1] for r in rows]),
                 ("Param #", [f"{r[2]:,}" for r in rows]), ("FLOPs", [f"{r[3]:,}" for r in rows])]
        ends = [round(line_length * sum(_SUMMARY_COLUMNS[:i + 1])) for i in range(4)]
        w = [max(end - start, len(head) + 1, *(len(c) + 1 for c in col))
             for start, end, (head, col) in zip([0, *ends[:3]], ends, cells)]
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
                         _keras_count(child), fl))
        own = sum(int(p.data.size) for p in self._parameters.values() if p is not None)
        own += sum(int(b.data.size) for k, b in self._buffers.items()
                   if b is not None and k not in self._non_persistent)
        if own:
            rows.append(("(own parameters)", "", own, 0))
        return rows

    # ------------------------------------------------------------------ introspection
    def _top_layers(self) -> list[Module]:
        """The layers :meth:`get_layer` indexes: the direct sub-modules, in order."""
        return list(self.children())

    def get_layer(self, name: str | None = None, index: int | None = None) -> Module:
        """A top-level layer by ``name`` or by ``index`` (Keras semantics: give exactly one;
        ``index`` counts the layers in order, negative from the end).

        Raises:
            ValueError: both or neither given, no layer of that name (the message lists
                them), or the index is out of range.
        """
        if name is not None and index is not None:
            raise ValueError(f"get_layer: provide only a layer name or a layer index, got "
                             f"name={name!r} and index={index!r}")
        layers = self._top_layers()
        if index is not None:
            if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
                raise TypeError(f"get_layer: index must be an int, got {type(index).__name__}")
            if not -len(layers) <= index < len(layers):
                raise ValueError(f"get_layer: asked for the layer at index {index} but "
                                 f"{self.name} has only {len(layers)} layers")
            return layers[int(index)]
        if name is not None:
            if not isinstance(name, str):
                raise TypeError(f"get_layer: name must be a str, got {type(name).__name__}")
            for layer in layers:
                if layer.name == name:
                    return layer
            raise ValueError(f"get_layer: no such layer: {name!r}; the layers of {self.name} "
                             f"are {[m.name for m in layers]}")
        raise ValueError("get_layer: provide either a layer name or a layer index")

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
        layers: initial layers (Modules); the first may be an :class:`~gpucnn.layers.Input`
            / ``InputLayer`` (it sets the input shape and is not one of ``layers``).
        name: display name.

    If the first layer was given ``input_shape=`` (or an ``Input`` comes first), every added
    layer is built at once (so :meth:`summary` works before any data) and inputs are checked
    against that shape.

    Data format: the model's is the ``data_format`` of its image layers (they must agree;
    none: channels-first). A channels-last model takes NHWC inputs, reads ``input_shape`` as
    (H, W, C) and reports shapes (``input_shape``, :meth:`output_shape`, :meth:`summary`) in
    that layout; it transposes the input once to NCHW for its layers and a 4-D output back
    once (autograd transposes, so gradients flow).
    """

    def __init__(self, layers: Iterable[Module] | None = None, name: str | None = None) -> None:
        super().__init__(name=name)
        object.__setattr__(self, "_input_shape", None)  # per sample, in the model's layout
        object.__setattr__(self, "_out_shape", None)  # per sample, NCHW (native)
        object.__setattr__(self, "_data_format", None)  # set by the first image layer
        object.__setattr__(self, "_format_from", None)
        object.__setattr__(self, "_input_layer", None)
        for layer in layers or ():
            self.add(layer)

    @property
    def layers(self) -> list[Module]:
        return list(self._modules.values())

    @property
    def data_format(self) -> str:
        """``"channels_last"`` or ``"channels_first"`` (also when no layer has a format)."""
        return self._data_format or "channels_first"

    @property
    def input_shape(self) -> tuple | None:
        """Per-sample input shape in the model's layout, when known (from ``input_shape=``,
        an ``Input`` or the first build or call)."""
        if self._input_shape is None and "_build_input_shape" in self.__dict__:
            shape = self.__dict__["_build_input_shape"]
            return tuple(shape) if shape is not None and not _is_multi_shape(shape) else None
        return self._input_shape

    # ------------------------------------------------------------------ layouts
    def _converts(self) -> bool:
        """Whether this model translates between NHWC and its layers' NCHW (a channels-last
        model not itself running inside another model or layer)."""
        return self._data_format == "channels_last" and not in_native_layout()

    def _to_native(self, shape: Any) -> Any:
        return shape_to_nchw(shape) if self._converts() else tuple(shape)

    def _to_user(self, shape: Any) -> Any:
        return shape_to_nhwc(shape) if self._converts() else tuple(shape)

    def _adopt_format(self, layer: Module) -> None:
        """Take ``layer``'s data format as the model's, or refuse a different one."""
        fmt = _format_of(layer)
        if fmt is None:
            return
        if self._data_format is None:
            object.__setattr__(self, "_data_format", fmt)
            object.__setattr__(self, "_format_from", layer.name)
            return
        if fmt != self._data_format:
            raise ValueError(
                f"{self.name} (Sequential): layer {layer.name!r} ({type(layer).__name__}) has "
                f"data_format={fmt!r} but the model is {self._data_format!r} (from layer "
                f"{self._format_from!r}); one model cannot mix formats: give every image layer "
                f"data_format={self._data_format!r}, or call gpucnn.config."
                f"set_image_data_format({self._data_format!r}) before creating the layers"
            )

    def _native_shape_through(self, upto: int | None = None) -> Any:
        """The NCHW per-sample shape after the first ``upto`` layers (all: None)."""
        shape: Any = shape_to_nchw(self._input_shape) \
            if self._data_format == "channels_last" else tuple(self._input_shape)
        with native_layout():
            for layer in self.layers[:upto]:
                shape = tuple(layer.output_shape(shape))
        return shape

    # ------------------------------------------------------------------ building
    def add(self, layer: Module) -> Sequential:
        """Append ``layer`` (built at once when the input shape is known)."""
        if not isinstance(layer, Module):
            raise TypeError(
                f"Sequential.add: expected a layer (Module), got {type(layer).__name__}"
            )
        from gpucnn.layers.core import InputLayer

        if isinstance(layer, InputLayer):
            if self._modules or self._input_layer is not None:
                raise ValueError(
                    f"{self.name} (Sequential): an InputLayer / Input must be the first "
                    f"element (the model already has {len(self._modules)} layers"
                    + (" and an input" if self._input_layer is not None else "") + ")"
                )
            object.__setattr__(self, "_input_layer", layer)
            object.__setattr__(self, "_input_shape", layer.shape)
            return self
        first = not self._modules
        had_format = self._data_format is not None
        self._adopt_format(layer)
        self._modules[str(len(self._modules))] = layer
        try:
            if first and self._input_shape is None \
                    and getattr(layer, "_input_shape_arg", None) is not None:
                object.__setattr__(self, "_input_shape", tuple(layer._input_shape_arg))
            if self._input_shape is not None:
                # the format may have just been fixed: recompute the shapes from the input
                shape = self._native_shape_through(len(self._modules) - 1) \
                    if not had_format or self._out_shape is None else self._out_shape
                with native_layout():
                    layer.check_input_shape(shape)
                    if not layer.built:
                        layer.build(shape, backend=self._backend_name)
                    object.__setattr__(self, "_out_shape", tuple(layer.output_shape(shape)))
        except Exception:
            self._modules.pop(str(len(self._modules) - 1))
            if not had_format:
                object.__setattr__(self, "_data_format", None)
                object.__setattr__(self, "_format_from", None)
            raise
        return self

    def pop(self) -> Module:
        """Remove and return the last layer."""
        if not self._modules:
            raise IndexError("Sequential.pop: no layers")
        layer = self._modules.pop(str(len(self._modules) - 1))
        if not any(_format_of(m) for m in self.layers):
            object.__setattr__(self, "_data_format", None)
            object.__setattr__(self, "_format_from", None)
        if self._input_shape is not None:
            object.__setattr__(self, "_out_shape", self._native_shape_through())
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
        """Build every layer for per-sample ``input_shape`` (in the model's layout)."""
        user = tuple(input_shape)
        shape = self._to_native(user)
        if self._input_shape is None:
            object.__setattr__(self, "_input_shape",
                               shape_to_nhwc(shape) if self._data_format == "channels_last"
                               else shape)
        be = backend or self._backend_name
        with native_layout():
            for layer in self.layers:
                layer.check_input_shape(shape)
                if not layer.built:
                    layer.build(shape, backend=be)
                shape = tuple(layer.output_shape(shape))
        object.__setattr__(self, "_out_shape", shape)

    def check_input_shape(self, shape: Any) -> None:
        exp = self._input_shape if in_native_layout() else self.input_shape
        if exp is not None and in_native_layout() and self._data_format == "channels_last":
            exp = shape_to_nchw(exp)
        if exp is not None and tuple(shape) != tuple(exp):
            fmt = "channels_first" if in_native_layout() else self.data_format
            hint = layout_hint(tuple(shape), None, fmt, expected=exp)
            raise ValueError(
                f"{self.name} (Sequential): input shape mismatch: expected (None, "
                f"{', '.join(map(str, exp))}), received (N, {', '.join(map(str, shape))})"
                + (f" ({hint})" if hint else "")
            )
        if exp is None and self.layers:
            native = self._to_native(shape)
            if self._converts() and len(tuple(shape)) != 3:
                raise ValueError(
                    f"{self.name} (Sequential, channels_last): expected 4-D (N, H, W, C) "
                    f"inputs, received (N, {', '.join(map(str, shape))})"
                    + (f" ({layout_hint(tuple(shape))})" if len(tuple(shape)) == 2 else "")
                )
            with native_layout():
                self.layers[0].check_input_shape(native)

    def _build_from_inputs(self, args: tuple) -> None:
        first = args[0] if args else None
        if not isinstance(first, Tensor):
            raise TypeError(f"{self.name}: expected a Tensor input, got {type(first).__name__}")
        self.check_input_shape(tuple(first.shape[1:]))
        # layers build themselves lazily in forward (on the input's backend)

    def forward(self, x: Any) -> Any:
        convert = self._converts() and isinstance(x, Tensor) and x.ndim == 4
        if convert:
            x = to_nchw(x)
        with native_layout():
            for layer in self.layers:
                x = layer(x)
        return to_nhwc(x) if convert else x

    def output_shape(self, input_shape: Any) -> Any:
        """Per-sample output shape for per-sample ``input_shape`` (in the model's layout)."""
        shape = self._to_native(input_shape)
        with native_layout():
            for layer in self.layers:
                shape = tuple(layer.output_shape(shape))
        return self._to_user(shape)

    def flops(self, input_shape: Any) -> int:
        total, shape = 0, self._to_native(input_shape)
        with native_layout():
            for layer in self.layers:
                total += layer.flops(shape)
                shape = tuple(layer.output_shape(shape))
        return total

    def _summary_rows(self, shape: Any) -> list[tuple[str, str, int, int]]:
        rows: list[tuple[str, str, int, int]] = []
        s, convert = self._to_native(shape), self._converts()
        with native_layout():
            for layer in self.layers:
                out = tuple(layer.output_shape(s))
                rows.append((f"{layer.name} ({type(layer).__name__})",
                             _shape_str(shape_to_nhwc(out) if convert else out),
                             _keras_count(layer), int(layer.flops(s))))
                s = out
        return rows

    def _top_layers(self) -> list[Module]:
        return self.layers

    def get_config(self) -> dict:
        specs = [serialize(m) for m in self.layers]
        if self._input_layer is not None:
            specs.insert(0, serialize(self._input_layer))
        return {"layers": specs, "name": self.name}

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> Module:
        layers = [deserialize(s, custom_objects) for s in config.get("layers", [])]
        return cls(layers, name=config.get("name"))


def _is_multi_shape(shape: Any) -> bool:
    return bool(shape) and isinstance(shape[0], (list, tuple))


def _format_of(m: Module) -> str | None:
    """The data format ``m`` declares (an image layer's, a Sequential's own), else None."""
    if isinstance(m, Sequential):
        return m._data_format
    fmt = m.__dict__.get("data_format")
    return fmt if isinstance(fmt, str) else None


def _keras_count(m: Module) -> int:
    """Keras's parameter count of ``m``: its parameters plus its persistent state (batch-norm
    moving mean and variance), which Keras counts as non-trainable weights."""
    return m.count_params() + _state_count(m)


def _state_count(m: Module) -> int:
    """Elements of ``m``'s persistent buffers (saved state that is not trained)."""
    return sum(int(b.data.size) for mod in m.modules() for k, b in mod._buffers.items()
               if b is not None and k not in mod._non_persistent)


def _shape_str(shape: Any) -> str:
    if isinstance(shape, list):
        return ", ".join(_shape_str(s) for s in shape)
    return "(None, " + ", ".join(str(s) for s in shape) + ")" if shape else "(None,)"
