"""``Module``: the base of every layer and model; ``ModuleList``; the registry.

Subclass :class:`Module`, assign :class:`~gpucnn.Parameter` s, sub-modules (or lists of them)
as attributes in ``__init__`` and write ``forward``. Assignments are registered automatically,
so ``parameters()``, ``state_dict()``, ``to()``, ``train()``/``eval()`` see them. Running
statistics and other non-trained state go through :meth:`Module.register_buffer`.

A Module knows nothing of training: the Keras-style API (``compile``, ``fit``, ``evaluate``,
``predict``, ``summary``, ``save``) belongs to :class:`gpucnn.Model`, a Module subclass
(:mod:`gpucnn.model`, with ``Sequential``). Subclass ``Model`` instead of ``Module`` to get it.
This file imports only the tensor layer and the backend, never :mod:`gpucnn.model` or
:mod:`gpucnn.saving`.

Layers build lazily: their parameters are created on the first call from the input's shape
and backend (``build(input_shape)``). Shapes given to ``build``, ``output_shape`` and
``flops`` are PER SAMPLE, without the batch dim: ``(C, H, W)`` or ``(features,)``.

Serialisation: a class registered with :func:`register_module` whose ``get_config()`` returns
its ``__init__`` keyword arguments (JSON-able) can be rebuilt by :func:`deserialize`
(and so by :func:`gpucnn.load_model`)::

    @gpucnn.register_module
    class MyBlock(gpucnn.Module):
        def __init__(self, width=8, name=None):
            super().__init__(name=name)
            self.width = width
            ...
        def get_config(self):
            return {"width": self.width, "name": self.name}
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from gpucnn import backend as _backend
from gpucnn.backend.device import is_array as _backend_is_array
from gpucnn.tensor import Parameter, Tensor, no_grad

__all__ = [
    "Module",
    "ModuleList",
    "StateDictError",
    "register_module",
    "get_registered",
    "serialize",
    "deserialize",
]


class StateDictError(KeyError, ValueError):
    """A state dict does not fit a module: missing, unexpected or mis-shaped entries (the
    message names each). A ``KeyError`` and a ``ValueError``, so either ``except`` catches it."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def _value_shape(v: Any) -> tuple:
    return tuple(v.shape) if hasattr(v, "shape") else tuple(np.shape(v))


def backend_name(backend: str) -> str:
    """The canonical backend name ("numpy" or "cuda") of ``backend`` or an alias of it
    (``"cpu"``, ``"gpu"``, ``"cuda:0"``; see :func:`gpucnn.backend.canonical_name`)."""
    return _backend.canonical_name(backend, allow_auto=False, op="to()")


# ----------------------------------------------------------------------------- registry

_REGISTRY: dict[str, type] = {}
_name_counts: dict[str, int] = {}
_name_lock = threading.Lock()


def register_module(cls: type | None = None, *, name: str | None = None) -> Any:
    """Class decorator: make ``cls`` rebuildable from its config under ``name`` (default: its
    class name). Usable as ``@register_module`` or ``@register_module(name="X")``."""

    def deco(c: type) -> type:
        _REGISTRY[name or c.__name__] = c
        return c

    return deco(cls) if cls is not None else deco


def get_registered(class_name: str, custom_objects: dict | None = None) -> type:
    """The registered Module class called ``class_name`` (``custom_objects`` first)."""
    if custom_objects and class_name in custom_objects:
        return custom_objects[class_name]
    cls = _REGISTRY.get(class_name)
    if cls is None:
        raise ValueError(
            f"unknown module class {class_name!r}: register it with @gpucnn.register_module "
            f"or pass custom_objects={{{class_name!r}: cls}}; registered: "
            f"{', '.join(sorted(_REGISTRY))}"
        )
    return cls


def serialize(module: Module) -> dict:
    """``{"class_name", "config"}`` of a module (its class must be registered)."""
    cls_name = type(module).__name__
    if _REGISTRY.get(cls_name) is not type(module):
        raise ValueError(
            f"cannot serialise {cls_name}: register the class with @gpucnn.register_module and "
            "give it get_config() returning its __init__ keyword arguments"
        )
    return {"class_name": cls_name, "config": module.get_config()}


def deserialize(spec: dict, custom_objects: dict | None = None) -> Module:
    """Rebuild a module from :func:`serialize` output."""
    cls = get_registered(spec["class_name"], custom_objects)
    return cls.from_config(dict(spec.get("config", {})), custom_objects=custom_objects)


def _auto_name(cls: type) -> str:
    # Keras style: MaxPooling2D -> max_pooling2d, BatchNormalization -> batch_normalization
    base = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", cls.__name__)
    base = re.sub(r"([a-z])([A-Z])", r"\1_\2", base).lower()
    with _name_lock:
        n = _name_counts.get(base, 0)
        _name_counts[base] = n + 1
    return base if n == 0 else f"{base}_{n}"


# ----------------------------------------------------------------------------- call recorder

_rec = threading.local()


@contextlib.contextmanager
def _record_calls(targets: Sequence[Module]) -> Iterator[dict]:
    """Record (input shapes, output shape) of the first call of each module in ``targets``."""
    prev = getattr(_rec, "active", None)
    table: dict[int, tuple] = {}
    _rec.active = ({id(m) for m in targets}, table)
    try:
        yield table
    finally:
        _rec.active = prev


def _shape_of(a: Any) -> Any:
    if isinstance(a, (list, tuple)):
        return [_shape_of(v) for v in a]
    return tuple(a.shape) if hasattr(a, "shape") else None


# ----------------------------------------------------------------------------- Module


class Module:
    """Base class of layers and models: PyTorch-style registration of parameters, buffers and
    sub-modules; modes, state dicts, devices, lazy building. No training API (see ``Model``).

    Args:
        name: a display name (default: snake_case class name plus a counter, as Keras).

    Attributes:
        training: ``True`` in training mode (dropout active, batch-norm batch statistics).
    """

    def __init__(self, name: str | None = None) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_built", True)
        object.__setattr__(self, "_backend_name", None)
        object.__setattr__(self, "name", name or _auto_name(type(self)))

    # ------------------------------------------------------------------ registration
    def __setattr__(self, key: str, value: Any) -> None:
        params = self.__dict__.get("_parameters")
        if params is None:
            raise AttributeError(
                f"cannot assign {key!r} before Module.__init__(): call super().__init__() first"
            )
        buffers, modules = self._buffers, self._modules
        if isinstance(value, (list, tuple)) and value and all(
            isinstance(v, Module) for v in value
        ):
            value = ModuleList(value)
        if isinstance(value, Parameter):
            self._discard(key)
            params[key] = value
        elif isinstance(value, Module):
            self._discard(key)
            modules[key] = value
        elif key in params:
            if value is not None:
                raise TypeError(
                    f"{type(self).__name__}.{key} is a parameter: assign a Parameter or None, "
                    f"got {type(value).__name__}"
                )
            params[key] = None
        elif key in buffers:
            if value is not None and not isinstance(value, Tensor):
                value = Tensor(value)
            buffers[key] = value
        elif key in modules:
            if value is not None:
                raise TypeError(f"{type(self).__name__}.{key} is a sub-module: assign a Module")
            modules[key] = None
        else:
            object.__setattr__(self, key, value)

    def _discard(self, key: str) -> None:
        for d in (self._parameters, self._buffers, self._modules):
            d.pop(key, None)
        self.__dict__.pop(key, None)

    def __getattr__(self, key: str) -> Any:
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            s = d.get(store)
            if s is not None and key in s:
                return s[key]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {key!r}")

    def __delattr__(self, key: str) -> None:
        for store in (self._parameters, self._buffers, self._modules):
            if key in store:
                del store[key]
                return
        object.__delattr__(self, key)

    def register_buffer(self, name: str, value: Any, persistent: bool = True) -> None:
        """Register non-trained state (e.g. running statistics) saved in ``state_dict``.

        ``value``: a Tensor, an array, or ``None``. ``persistent=False`` keeps it out of the
        state dict.
        """
        if "." in name or not name:
            raise KeyError(f"register_buffer: invalid buffer name {name!r}")
        if name in self._parameters or name in self._modules:
            raise KeyError(f"register_buffer: {name!r} is already a parameter or sub-module")
        if value is not None and not isinstance(value, Tensor):
            value = Tensor(value)
        self.__dict__.pop(name, None)
        self._buffers[name] = value
        if persistent:
            self._non_persistent.discard(name)
        else:
            self._non_persistent.add(name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Register ``param`` under ``name`` (same as assigning the attribute)."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter: expected a Parameter, got {type(param).__name__}")
        self._discard(name)
        self._parameters[name] = param

    def add_module(self, name: str, module: Module | None) -> None:
        """Register ``module`` as a child under ``name``."""
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module: expected a Module, got {type(module).__name__}")
        self._discard(name)
        self._modules[name] = module

    # ------------------------------------------------------------------ traversal
    def children(self) -> Iterator[Module]:
        """Direct sub-modules."""
        for _, m in self.named_children():
            yield m

    def named_children(self) -> Iterator[tuple[str, Module]]:
        seen: set[int] = set()
        for name, m in self._modules.items():
            if m is not None and id(m) not in seen:
                seen.add(id(m))
                yield name, m

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """``(dotted name, module)`` for this module and all descendants, each once."""
        seen: set[int] = set()
        stack: list[tuple[str, Module]] = [(prefix, self)]
        out: list[tuple[str, Module]] = []
        while stack:
            name, m = stack.pop(0)
            if id(m) in seen:
                continue
            seen.add(id(m))
            out.append((name, m))
            kids = [(f"{name}.{k}" if name else k, c) for k, c in m._modules.items() if c]
            stack[0:0] = kids
        yield from out

    def modules(self) -> Iterator[Module]:
        """This module and all descendants (pre-order), each once."""
        for _, m in self.named_modules():
            yield m

    def named_parameters(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple]:
        """``(dotted name, Parameter)``, each parameter once (shared ones under the first name)."""
        seen: set[int] = set()
        mods = self.named_modules(prefix) if recurse else iter([(prefix, self)])
        for mname, m in mods:
            for k, p in m._parameters.items():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mname}.{k}" if mname else k), p

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        """All parameters (each once), in registration order."""
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def trainable_parameters(self) -> list[Parameter]:
        """Parameters with ``requires_grad`` (what an optimizer should update)."""
        return [p for p in self.parameters() if p.requires_grad]

    def named_buffers(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple]:
        seen: set[int] = set()
        mods = self.named_modules(prefix) if recurse else iter([(prefix, self)])
        for mname, m in mods:
            for k, b in m._buffers.items():
                if b is None or id(b) in seen:
                    continue
                seen.add(id(b))
                yield (f"{mname}.{k}" if mname else k), b

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    # ------------------------------------------------------------------ modes and grads
    def train(self, mode: bool = True) -> Module:
        """Set training mode on this module and every descendant; returns ``self``."""
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> Module:
        """Evaluation mode (``train(False)``)."""
        return self.train(False)

    def zero_grad(self) -> None:
        """Drop the gradients of every parameter."""
        for p in self.parameters():
            p.grad = None

    @property
    def trainable(self) -> bool:
        """Whether any parameter is trained; setting it freezes/unfreezes all (Keras)."""
        ps = list(self.parameters())
        return not ps or any(p.requires_grad for p in ps)

    @trainable.setter
    def trainable(self, value: bool) -> None:
        for p in self.parameters():
            p.requires_grad = bool(value)
        object.__setattr__(self, "_trainable_flag", bool(value))

    def count_params(self, trainable: bool | None = None) -> int:
        """Number of parameter elements (all, or only (non-)trainable ones)."""
        return sum(
            p.numel() for p in self.parameters()
            if trainable is None or p.requires_grad == trainable
        )

    # ------------------------------------------------------------------ state dict
    def state_dict(self) -> OrderedDict:
        """``name -> NumPy copy`` of every parameter and persistent buffer."""
        out: OrderedDict = OrderedDict()
        for mname, m in self.named_modules():
            for k, p in m._parameters.items():
                if p is not None:
                    out[f"{mname}.{k}" if mname else k] = np.array(p.numpy(), copy=True)
            for k, b in m._buffers.items():
                if b is not None and k not in m._non_persistent:
                    out[f"{mname}.{k}" if mname else k] = np.array(b.numpy(), copy=True)
        return out

    def _state_tensors(self) -> OrderedDict:
        out: OrderedDict = OrderedDict()
        for mname, m in self.named_modules():
            for store, persistent in ((m._parameters, None), (m._buffers, m._non_persistent)):
                for k, t in store.items():
                    if t is not None and (persistent is None or k not in persistent):
                        out[f"{mname}.{k}" if mname else k] = t
        return out

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> dict:
        """Copy values from ``state`` (name -> array or Tensor) into the parameters/buffers, in
        place (nothing is copied when anything is wrong).

        ``strict=False`` skips missing and unexpected keys (as PyTorch); a value of the wrong
        shape is an error either way. Returns ``{"missing_keys": [...],
        "unexpected_keys": [...]}``.

        Raises:
            TypeError: ``state`` is not a mapping.
            StateDictError: (a ``KeyError`` and a ``ValueError``) missing or unexpected keys
                when ``strict``, or mis-shaped values; one message names every such key with
                the shape in the model and in ``state``.
        """
        where = f"load_state_dict for {type(self).__name__} {self.name!r}"
        if not isinstance(state, Mapping):
            raise TypeError(f"{where}: expected a dict of name -> array, got "
                            f"{type(state).__name__}")
        own = self._state_tensors()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        wrong = []
        for k, t in own.items():
            if k in state:
                shape = _value_shape(state[k])
                if shape != t.shape:
                    wrong.append(f"{k!r} has shape {shape} in the state dict but {t.shape} in "
                                 "the model")
        problems = []
        if strict and (missing or unexpected):
            exp = ", ".join(f"{k} {own[k].shape}" for k in missing)
            got = ", ".join(f"{k} {_value_shape(state[k])}" for k in unexpected)
            problems.append(
                f"missing keys {missing}{f' (model shapes: {exp})' if missing else ''}, "
                f"unexpected keys {unexpected}{f' (state dict shapes: {got})' if got else ''}"
            )
        if wrong:
            problems.append("shape mismatch: " + "; ".join(wrong))
        if problems:
            hint = ""
            if not self.built:
                hint = (
                    f" ({self.name} is not built yet: call build(input_shape) or run one batch "
                    "through it first)"
                )
            raise StateDictError(f"{where}: {'; '.join(problems)}{hint}")
        for k, t in own.items():
            if k in state:
                v = state[k]
                v = v.data if isinstance(v, Tensor) else v
                if not _backend_is_array(v):
                    v = np.asarray(v)
                t.data[...] = _backend.to_backend(v.astype(t.dtype, copy=False), t.backend)
        return {"missing_keys": missing, "unexpected_keys": unexpected}

    def get_weights(self) -> list[np.ndarray]:
        """Copies of the state-dict values, in order (Keras ``get_weights``)."""
        return list(self.state_dict().values())

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Inverse of :meth:`get_weights`."""
        keys = list(self._state_tensors())
        if len(weights) != len(keys):
            raise ValueError(f"set_weights: expected {len(keys)} arrays, got {len(weights)}")
        self.load_state_dict(dict(zip(keys, weights)))

    # ------------------------------------------------------------------ devices
    def to(self, backend: str) -> Module:
        """Move every parameter and buffer to ``backend`` ("numpy"/"cpu" or "cuda"/"gpu").

        The Parameter objects are kept (their ``.data`` is replaced), so optimizers that
        hold them stay valid (``Model.to`` also moves its optimizer's state). Layers built later
        are created on ``backend``. Returns ``self``.
        """
        name = backend_name(backend)
        be = _backend.get_backend(name)
        for m in self.modules():
            object.__setattr__(m, "_backend_name", name)
            for t in list(m._parameters.values()) + list(m._buffers.values()):
                if t is None:
                    continue
                t.data = _backend.to_backend(t.data, be)
                if t.grad is not None:
                    t.grad = Tensor(_backend.to_backend(t.grad.data, be))
        return self

    @property
    def backend(self) -> str:
        """Where this module's parameters live (or will be created)."""
        for p in self.parameters():
            return p.backend
        for b in self.buffers():
            return b.backend
        return self._backend_name or _backend.current()

    @property
    def dtype(self) -> Any:
        for p in self.parameters():
            return p.dtype
        return np.dtype(np.float32)

    # ------------------------------------------------------------------ build / shapes
    @property
    def built(self) -> bool:
        """Whether this module and all sub-modules have their parameters."""
        return self._built and all(m.built for m in self.children())

    def build(self, input_shape: Any, backend: str | None = None) -> None:
        """Create parameters for inputs of per-sample ``input_shape``.

        The default runs one zero sample through ``forward`` (eval mode, no grad), which
        builds every lazily built layer inside. Layers override it to create their own.
        """
        if self.built:
            return
        be = backend_name(backend) if backend else (self._backend_name or _backend.current())
        x = _dummy_input(input_shape, be, self.dtype)
        was = self.training
        self.eval()
        try:
            with no_grad():
                self(x)
        finally:
            self.train(was)
        object.__setattr__(self, "_build_input_shape", _to_json_shape(input_shape))

    def output_shape(self, input_shape: Any) -> Any:
        """Per-sample output shape for per-sample ``input_shape`` (default: a dummy run)."""
        if not self.built:
            self.build(input_shape)
        be = self.backend
        x = _dummy_input(input_shape, be, self.dtype)
        was = self.training
        self.eval()
        try:
            with no_grad():
                y = self(x)
        finally:
            self.train(was)
        return _strip_batch(_shape_of(y))

    def flops(self, input_shape: Any) -> int:
        """Forward FLOPs per sample (multiply-add = 2); default: the sum over the children,
        measured by a recorded dummy run."""
        kids = list(self.children())
        if not kids:
            return 0
        table = self._trace_children(input_shape)
        total = 0
        for k in kids:
            if id(k) in table:
                total += k.flops(table[id(k)][0])
        return total

    def _trace_children(self, input_shape: Any) -> dict:
        if not self.built:
            self.build(input_shape)
        x = _dummy_input(input_shape, self.backend, self.dtype)
        was = self.training
        self.eval()
        try:
            with no_grad(), _record_calls(list(self.children())) as table:
                self(x)
        finally:
            self.train(was)
        return table

    def check_input_shape(self, shape: Any) -> None:
        """Raise ``ValueError`` naming this layer when per-sample ``shape`` cannot be taken."""

    # ------------------------------------------------------------------ call
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if "_build_input_shape" not in self.__dict__ and args:
            shp = _shape_of(args[0])
            if shp is not None:
                object.__setattr__(self, "_build_input_shape", _strip_batch(shp))
        if not self._built:
            self._build_from_inputs(args)
        elif args:
            self._check_inputs(args)
        try:
            out = self.forward(*args, **kwargs)
        except Exception as e:
            _name_layer_in_capture(self, e)
            raise
        active = getattr(_rec, "active", None)
        if active is not None and id(self) in active[0] and id(self) not in active[1]:
            ins = args[0] if len(args) == 1 else list(args)
            active[1][id(self)] = (
                _strip_batch(_shape_of(ins)),
                _strip_batch(_shape_of(out)),
            )
        return out

    def _build_from_inputs(self, args: tuple) -> None:
        first = args[0] if args else None
        if isinstance(first, (list, tuple)):
            shape = [tuple(t.shape[1:]) for t in first]
            be = first[0].backend if first and isinstance(first[0], Tensor) else None
        elif isinstance(first, Tensor):
            shape = tuple(first.shape[1:])
            be = first.backend
        else:
            raise TypeError(f"{self.name}: expected a Tensor input, got {type(first).__name__}")
        self.check_input_shape(shape)
        self.build(shape, backend=be)

    def _check_inputs(self, args: tuple) -> None:
        first = args[0]
        if isinstance(first, Tensor):
            self.check_input_shape(tuple(first.shape[1:]))
        elif isinstance(first, (list, tuple)) and all(isinstance(t, Tensor) for t in first):
            self.check_input_shape([tuple(t.shape[1:]) for t in first])

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict:
        """JSON-able ``__init__`` keyword arguments (override in serialisable modules)."""
        raise NotImplementedError(
            f"{type(self).__name__} has no get_config(): define it (returning the __init__ "
            "keyword arguments) and register the class with @gpucnn.register_module to save "
            "the architecture, or use save_weights()/load_weights()"
        )

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> Module:
        """Build an instance from :meth:`get_config` output."""
        return cls(**config)

    # ------------------------------------------------------------------ repr
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        head = f"{type(self).__name__}({self.extra_repr()}"
        kids = list(self.named_children())
        if not kids:
            return head + ")"
        lines = [head]
        for k, m in kids:
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({k}): {sub}")
        return "\n".join(lines) + "\n)"


def _to_json_shape(shape: Any) -> Any:
    if isinstance(shape, (list, tuple)) and shape and isinstance(shape[0], (list, tuple)):
        return [list(s) for s in shape]
    return list(shape)


def _strip_batch(shape: Any) -> Any:
    if isinstance(shape, list):
        return [_strip_batch(s) for s in shape]
    return None if shape is None else tuple(shape[1:])


def _dummy_input(shape: Any, backend: str, dtype: Any) -> Any:
    xp = _backend.get_backend(backend).xp
    if isinstance(shape, (list, tuple)) and shape and isinstance(shape[0], (list, tuple)):
        return [Tensor(xp.zeros((2, *s), dtype=dtype)) for s in shape]
    # batch of 2: batch-norm in training needs more than one value per channel
    return Tensor(xp.zeros((2, *tuple(shape)), dtype=dtype))


# ----------------------------------------------------------------------------- containers


@register_module
class ModuleList(Module):
    """A list of sub-modules, registered as children ``"0"``, ``"1"``, ...

    Indexing, ``len``, iteration, ``append``, ``extend``, ``insert``.
    """

    def __init__(self, modules: Iterable[Module] | None = None, name: str | None = None) -> None:
        super().__init__(name=name)
        for m in modules or ():
            self.append(m)

    def _items(self) -> list[Module]:
        return list(self._modules.values())

    def _reindex(self, items: list[Module]) -> None:
        self._modules.clear()
        for i, m in enumerate(items):
            self._modules[str(i)] = m

    def append(self, module: Module) -> ModuleList:
        if not isinstance(module, Module):
            raise TypeError(
                f"{type(self).__name__}: expected a Module, got {type(module).__name__}"
            )
        self._modules[str(len(self._modules))] = module
        return self

    def extend(self, modules: Iterable[Module]) -> ModuleList:
        for m in modules:
            self.append(m)
        return self

    def insert(self, index: int, module: Module) -> None:
        items = self._items()
        items.insert(index, module)
        self._reindex(items)

    def __getitem__(self, idx: int | slice) -> Any:
        items = self._items()
        if isinstance(idx, slice):
            return ModuleList(items[idx])
        return items[idx]

    def __setitem__(self, idx: int, module: Module) -> None:
        items = self._items()
        items[idx] = module
        self._reindex(items)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._items())

    def get_config(self) -> dict:
        return {"modules": [serialize(m) for m in self], "name": self.name}

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> Module:
        mods = [deserialize(s, custom_objects) for s in config.get("modules", [])]
        return cls(mods, name=config.get("name"))


def apply_to_tensors(fn: Callable[[Tensor], Tensor], value: Any) -> Any:
    """Apply ``fn`` to every Tensor inside nested lists/tuples (helper for multi-input layers)."""
    if isinstance(value, (list, tuple)):
        return type(value)(apply_to_tensors(fn, v) for v in value)
    return fn(value) if isinstance(value, Tensor) else value


def _name_layer_in_capture(layer: Module, e: Exception) -> None:
    """Inside a CUDA-graph capture, raise ``e`` again as a ``CudaGraphError`` that names the
    innermost layer it came from (outer layers pass it on unchanged)."""
    from gpucnn import cuda_graph

    if not cuda_graph.is_capturing() or getattr(e, "gpucnn_layer", None) is not None:
        return
    err = cuda_graph.CudaGraphError(
        f"cuda_graph: layer {layer.name!r} ({type(layer).__name__}) cannot run inside a "
        f"captured CUDA graph: {e}"
    )
    err.gpucnn_layer = layer.name  # type: ignore[attr-defined]
    raise err from e
