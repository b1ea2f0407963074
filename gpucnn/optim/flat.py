"""The optimizers' flat-buffer fast path: one update call per bucket of parameters, not per tensor.

What it does
    The parameters of a group are split into *buckets* by (array type, dtype). A bucket owns
    flat 1-D buffers, and every tensor it describes becomes a reshaped view of its slice:

    * the parameters: each ``p.data`` is a view of ``Bucket.flat``;
    * the gradients: each view of ``Bucket.grad_flat`` is put in the parameter's declared slot
      :attr:`gpucnn.tensor.Parameter._flat_grad`, and ``Tensor.backward`` writes a leaf's
      gradient into that slot instead of allocating one;
    * the state: each ``optimizer.state[p][k]`` array (``momentum_buffer``, ``exp_avg``, ...)
      is a view of ``Bucket.state_flat[k]``.

    A step then calls the optimizer's per-tensor reference update
    ``optimizer._update(be, param, grad, state, group)`` ONCE, on the flat buffers. The updates
    are element-wise (``sgd_update``, ``adam_update``, ``rmsprop_update``, ``adagrad_update``,
    ``nadam_update``), so the result is
    bit-identical to one call per tensor: same primitive, same scalars, same arithmetic on each
    element. On the GPU that is one fused kernel launch per bucket; on NumPy the primitive runs
    over cache-sized pieces of the buffers (:data:`_CHUNK_BYTES`).

Layout
    A group is laid out when it is added (flat optimizers only): the ``p.data`` of a bucket with
    several parameters is rebound ONCE to its view (values copied); afterwards every update is
    in place, so references taken after construction stay valid. A bucket of one C-contiguous
    parameter uses ``p.data`` itself. If ``p.data`` is rebound later (``Module.to``, user code)
    to an array of the same type, dtype and shape, its values are copied into the buffer and
    ``p.data`` becomes the view again; otherwise (and when the group's parameters or their
    ``requires_grad`` change) the group is laid out anew, values and state kept. State arrays
    replaced from outside (``load_state_dict``, ``move_optimizer_state``) are copied into the
    flat state buffers at the next step. The gradient buffer is reused: a ``p.grad`` array kept
    across ``zero_grad()`` and the next ``backward`` is overwritten (copy it to keep it).

When it falls back to the per-tensor path
    * never bucketed: plain :class:`~gpucnn.Tensor` parameters (only a ``Parameter`` has the
      gradient slot; PyTorch accepts plain tensors and so do we, updated one by one), and
      parameters that do not require grad when the group is laid out;
    * a whole bucket, for one step: a parameter whose ``.grad`` is None (it is not updated, as
      in ``torch.optim``), a gradient of another shape or array type (a hand-assigned gradient
      that matches is copied into the buffer), states that differ in keys or scalars (e.g.
      Adam's ``step`` after a parameter was skipped), or a state array of another shape.

Opting out
    ``flat=False`` (the optimizers' keyword, or their ``flat`` attribute) updates one tensor at
    a time and never touches ``p.data`` or the slot. Setting ``optimizer.flat = False`` later
    releases the layouts at the next step: the slots this mechanism set are cleared (``p.data``
    keeps its values, in what is then an ordinary array).

Interface (what :meth:`gpucnn.optim.Optimizer.step` uses)::

    flat = FlatParams()                         # one per optimizer (``_flat_params``)
    layout = flat.layout(i, group["params"])    # lay out, or re-check, group i
    for bucket in layout.buckets:
        if not bucket.step(optimizer._update, optimizer.state, group):
            ...                                 # per tensor over bucket.params
    ...                                         # per tensor over layout.loose
    flat.release()                              # flat=False: drop the layouts, clear the slots
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from gpucnn import backend as _backend
from gpucnn.backend.device import is_array as _is_array
from gpucnn.tensor import Parameter, Tensor

__all__ = ["FlatParams", "FlatLayout", "Bucket", "Update"]

#: ``optimizer._update(be, param, grad, state, group)``: the per-tensor reference update.
Update = Callable[[Any, Any, Any, dict, dict], None]

# Slice starts in a flat buffer are aligned to this many bytes (GPU: full cache lines and
# vector loads for the kernels and cuBLAS reading the parameters). NumPy packs them: alignment
# gains little there, and the zero gaps could meet 0/0 in an update with eps=0 (warnings).
_ALIGN_BYTES = {"numpy": 0, "cuda": 256}

# The NumPy twins allocate whole-array temporaries: over one flat buffer of a few MB they fall
# out of cache, and glibc returns/re-faults such blocks (measured 5x slower than per tensor
# for ResNet-20's 270k parameters). So NumPy updates run over cache-sized pieces of the flat
# buffers (a few calls per group instead of one per tensor); the GPU launches once per bucket.
_CHUNK_BYTES: dict[str, int | None] = {"numpy": 128 * 1024, "cuda": None}


def _layout(sizes: list[int], itemsize: int, align_bytes: int) -> tuple[list[int], int]:
    """Start offsets (elements) of consecutive slices of ``sizes`` and the total length."""
    step = max(1, align_bytes // itemsize) if align_bytes else 1
    offsets, pos = [], 0
    for n in sizes:
        offsets.append(pos)
        pos += -(-n // step) * step if n else 0
    return offsets, pos


def _same_scalar(a: Any, b: Any) -> bool:
    try:
        return type(a) is type(b) and bool(a == b)
    except (TypeError, ValueError):
        return False


def _cut(a: Any, s: slice) -> Any:
    return None if a is None else a[s]


class _Pieces:
    """``be``, except that its update primitives run once per ``piece``-element slice of
    their (flat, length-``n``) array arguments, the leading ones of each primitive; the
    hyper-parameters that follow are passed as they are. Everything else is ``be``'s."""

    def __init__(self, be: Any, n: int, piece: int) -> None:
        self._be, self._piece = be, piece
        self._slices = [slice(lo, lo + piece) for lo in range(0, n, piece)]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._be, name)

    def sgd_update(self, param: Any, grad: Any, buf: Any, *hyper: Any) -> None:
        fn = self._be.sgd_update
        for s in self._slices:
            fn(param[s], grad[s], _cut(buf, s), *hyper)

    def adam_update(
        self, param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, vmax: Any, *hyper: Any
    ) -> None:
        fn = self._be.adam_update
        for s in self._slices:
            fn(param[s], grad[s], exp_avg[s], exp_avg_sq[s], _cut(vmax, s), *hyper)

    def rmsprop_update(
        self, param: Any, grad: Any, square_avg: Any, grad_avg: Any, buf: Any, *hyper: Any
    ) -> None:
        fn = self._be.rmsprop_update
        for s in self._slices:
            fn(param[s], grad[s], square_avg[s], _cut(grad_avg, s), _cut(buf, s), *hyper)

    def adagrad_update(self, param: Any, grad: Any, state_sum: Any, *hyper: Any) -> None:
        fn = self._be.adagrad_update
        for s in self._slices:
            fn(param[s], grad[s], state_sum[s], *hyper)

    def nadam_update(
        self, param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, *hyper: Any
    ) -> None:
        fn = self._be.nadam_update
        for s in self._slices:
            fn(param[s], grad[s], exp_avg[s], exp_avg_sq[s], *hyper)


class Bucket:
    """Parameters of one group sharing array type and dtype, stored in flat buffers.

    ``flat`` (``total``,) holds the parameters: ``views[i]`` (``params[i].shape``) is the slice of
    parameter ``i`` and its ``p.data``. ``grad_flat``/``grad_views`` the same for gradients (each
    in its parameter's ``_flat_grad`` slot); ``state_flat[k]``/``state_views[k]`` for each state
    array ``k``.
    """

    def __init__(self, be: Any, params: list[Parameter]) -> None:
        xp = be.xp
        self.be = be
        self.params = params
        first = params[0].data
        dtype = first.dtype
        sizes = [int(p.data.size) for p in params]
        self.shapes = [tuple(p.data.shape) for p in params]
        if len(params) == 1 and first.flags.c_contiguous:
            self.offsets, self.total = [0], sizes[0]
            self.flat = first.reshape(-1)  # the parameter's own memory: nothing to copy
            self.views = [first]
        else:
            self.offsets, self.total = _layout(sizes, dtype.itemsize, _ALIGN_BYTES.get(be.name, 0))
            self.flat = xp.zeros(self.total, dtype=dtype)
            self.views = self._slices(self.flat)
            for p, v in zip(params, self.views):
                v[...] = p.data
                p.data = v
        self.grad_flat = xp.zeros(self.total, dtype=dtype)
        self.grad_views = self._slices(self.grad_flat)
        for p, gv in zip(params, self.grad_views):
            p._flat_grad = gv
        self.state_flat: dict[str, Any] = {}
        self.state_views: dict[str, list[Any]] = {}
        self._pieces: _Pieces | None = None

    def _slices(self, flat: Any) -> list[Any]:
        return [
            flat[o : o + math.prod(s)].reshape(s)
            for o, s in zip(self.offsets, self.shapes)
        ]

    # ------------------------------------------------------------------ the step
    def step(self, update: Update, state: dict[Tensor, dict], group: dict) -> bool:
        """Update every parameter with ONE ``update`` call on the flat buffers.

        Returns False, having updated nothing, when the bucket must go per tensor this step
        (see the module doc); ``state`` is the optimizer's per-parameter state.
        """
        if not self._gather_grads():
            return False
        states = [state.setdefault(p, {}) for p in self.params]
        merged = self._gather_state(states)
        if merged is None:
            return False
        update(self._backend(), self.flat, self.grad_flat, merged, group)
        for k, v in merged.items():
            if _is_array(v):
                for s, view in zip(states, self.adopt_state(k, v)):
                    s[k] = view
            else:
                for s in states:
                    s[k] = v
        return True

    def _gather_grads(self) -> bool:
        """Whether every parameter has a gradient of its own shape and array type; one that is
        not its slice of the gradient buffer (assigned by hand) is copied into it."""
        for p, gv in zip(self.params, self.grad_views):
            g = p.grad
            if g is None:
                return False
            ga = g.data if isinstance(g, Tensor) else g
            if ga is not gv:
                if type(ga) is not type(gv) or tuple(ga.shape) != gv.shape:
                    return False
                gv[...] = ga
        return True

    def _gather_state(self, states: list[dict]) -> dict[str, Any] | None:
        """One state dict for the flat buffers (arrays: the flat state buffers, scalars: the
        common value), or None when the parameters' states disagree."""
        s0 = states[0]
        keys = s0.keys()
        for s in states[1:]:
            if s.keys() != keys:
                return None
            for k, v0 in s0.items():
                if not _is_array(v0) and not _same_scalar(s[k], v0):
                    return None
        merged: dict[str, Any] = {}
        for k, v0 in s0.items():
            if _is_array(v0):
                flat = self.flat_state(k, states)
                if flat is None:
                    return None
                merged[k] = flat
            else:
                merged[k] = v0
        return merged

    def _backend(self) -> Any:
        """The backend to update with: itself, or (NumPy) one that runs in cache-sized pieces."""
        chunk = _CHUNK_BYTES.get(self.be.name)
        piece = max(1, chunk // self.flat.dtype.itemsize) if chunk else self.total
        if piece >= self.total:
            return self.be
        if self._pieces is None or self._pieces._piece != piece:
            self._pieces = _Pieces(self.be, self.total, piece)
        return self._pieces

    # ------------------------------------------------------------------ state buffers
    def adopt_state(self, key: str, flat: Any) -> list[Any]:
        """Views of ``flat`` (the flat state buffer ``key``, adopted if new), one per param."""
        if self.state_flat.get(key) is not flat:
            self.state_flat[key] = flat
            self.state_views[key] = self._slices(flat)
        return self.state_views[key]

    def flat_state(self, key: str, states: list[dict]) -> Any | None:
        """The flat buffer of state ``key`` with every ``states[i][key]`` rebound to its view
        (arrays replaced from outside are copied in); None if an array has the wrong shape."""
        flat = self.state_flat.get(key)
        if flat is None:
            flat = self.be.xp.zeros(self.total, dtype=self.flat.dtype)
        views = self.adopt_state(key, flat)
        for s, view in zip(states, views):
            v = s[key]
            if v is view:
                continue
            if tuple(v.shape) != view.shape:
                return None
            if type(v) is not type(view):
                v = _backend.to_backend(v, self.be)
            view[...] = v
            s[key] = view
        return flat

    def release(self) -> None:
        """Clear the gradient slots this bucket set (slots another optimizer set are kept)."""
        for p, gv in zip(self.params, self.grad_views):
            if p._flat_grad is gv:
                p._flat_grad = None


def _flattenable(p: Tensor) -> bool:
    return isinstance(p, Parameter) and p.requires_grad and _is_array(p.data)


class FlatLayout:
    """The flat layout of one parameter group: ``buckets`` by (array type, dtype) of its
    Parameters that require grad when it is built; ``loose`` the others (updated per tensor)."""

    def __init__(self, params: list[Tensor]) -> None:
        self.params = list(params)
        self.requires = [p.requires_grad for p in self.params]
        by_kind: dict[tuple, list[Parameter]] = {}
        self.loose: list[Tensor] = []
        for p in self.params:
            if _flattenable(p):
                by_kind.setdefault((type(p.data), p.data.dtype), []).append(p)
            else:
                self.loose.append(p)
        self.buckets = [Bucket(_backend.backend_of(ps[0].data), ps) for ps in by_kind.values()]

    def fits(self, params: list[Tensor]) -> bool:
        """Whether this layout still describes ``params``; a ``p.data`` rebound to an array of
        the same type, dtype and shape is copied into its slice and rebound to the view."""
        if len(params) != len(self.params):
            return False
        for p, q, r in zip(params, self.params, self.requires):
            if p is not q or p.requires_grad != r:
                return False
        for b in self.buckets:
            for p, v in zip(b.params, b.views):
                d = p.data
                if d is v:
                    continue
                if type(d) is not type(v) or d.dtype != v.dtype or tuple(d.shape) != v.shape:
                    return False
                v[...] = d
                p.data = v
        return True

    def release(self) -> None:
        """Clear the gradient slots of every bucket."""
        for b in self.buckets:
            b.release()


class FlatParams:
    """The flat layouts of one optimizer, one per parameter group (see the module doc)."""

    def __init__(self) -> None:
        self._layouts: list[FlatLayout | None] = []

    @property
    def layouts(self) -> list[FlatLayout]:
        """The current layouts, in group order (groups not laid out yet are skipped)."""
        return [lay for lay in self._layouts if lay is not None]

    def layout(self, index: int, params: list[Tensor]) -> FlatLayout:
        """The layout of group ``index`` holding ``params``: the current one if it still fits,
        else a new one (the old one released first)."""
        if len(self._layouts) <= index:
            self._layouts += [None] * (index + 1 - len(self._layouts))
        lay = self._layouts[index]
        if lay is not None and lay.fits(params):
            return lay
        if lay is not None:
            lay.release()
        lay = self._layouts[index] = FlatLayout(params)
        return lay

    def release(self) -> None:
        """Drop every layout and clear the gradient slots they set (``flat=False``)."""
        for lay in self._layouts:
            if lay is not None:
                lay.release()
        self._layouts = []
