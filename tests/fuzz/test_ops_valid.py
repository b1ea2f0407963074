"""Fuzzing every op with VALID random configurations: forward and backward against an oracle.

Each property draws a configuration the op accepts (and PyTorch accepts: only configurations
``torch.nn.functional`` takes are generated), runs it on the ``backend`` fixture's backend
(NumPy in the plain pass, the simulated CUDA device in the ``--simulate-cuda`` pass, a real GPU
where there is one), backpropagates a random upstream gradient and compares the output and the
gradient of every input that requires one (all, or a random subset) with the oracle:

* ``torch.nn.functional`` in float64 on the same (dtype-rounded) inputs when PyTorch imports;
* otherwise (or with ``GPUCNN_FUZZ_ORACLE=numpy``) a float64 NumPy reference: conv2d through
  :mod:`gpucnn.backend.numpy_ops.conv.reference`, pools through brute-force loops (with their
  gradients), the other ops through direct formulas, their gradients by central differences.

Inputs, weights and upstream gradients come contiguous or as non-contiguous views (a strided
slice, swapped last axes); class-index targets on the backend or as host arrays. Tolerances:
float64 ``1e-9``, float32 ``1e-4`` (a few times that for GEMM and batch reductions), relative
to the largest magnitude of the expected array (at least 1). Max pooling uses tie-free inputs
(a shuffled linspace) so every argmax is unique. Hypothesis runs derandomized (the same
examples on every run, no example database); the example counts are in :data:`EXAMPLES`
(times ``$GPUCNN_FUZZ_SCALE``; the simulated pass runs :data:`SIM_FRACTION` of them).
:func:`test_forms_pytorch_accepts` lists input forms PyTorch takes and gpucnn refuses (strict
xfails).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import gpucnn.functional as F
from gpucnn.backend import to_numpy
from gpucnn.backend.device import simulated
from gpucnn.backend.geometry import Conv2dGeometry
from gpucnn.backend.numpy_ops.conv import reference
from gpucnn.functional.pool import pool_output_size
from gpucnn.tensor import Tensor

#: Generated examples per property (plain pass).
EXAMPLES = {
    "conv2d": 450,
    "conv2d_routes": 120,
    "max_pool2d": 360,
    "avg_pool2d": 360,
    "adaptive": 300,
    "global": 120,
    "activation": 450,
    "prelu": 180,
    "softmax": 300,
    "linear": 240,
    "batch_norm": 360,
    "dropout": 180,
    "cross_entropy": 450,
    "cross_entropy_prob": 240,
    "nll_loss": 300,
    "bce_with_logits": 240,
    "bce": 240,
    "mse": 120,
}

#: ``GPUCNN_FUZZ_SCALE=10`` runs ten times as many examples (a longer, still reproducible run).
SCALE = max(1, int(os.environ.get("GPUCNN_FUZZ_SCALE", "1") or 1))
#: The simulated CUDA device is slower: its pass runs this fraction of the examples.
SIM_FRACTION = 1.0


def fuzz(name: str) -> settings:
    n = EXAMPLES[name] * SCALE
    if simulated():
        n = max(10, int(n * SIM_FRACTION))
    return settings(
        max_examples=n,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


# --------------------------------------------------------------------------- the oracle


def _torch() -> Any:
    """PyTorch, or None: missing, or ``GPUCNN_FUZZ_ORACLE=numpy`` (the NumPy reference route)."""
    if os.environ.get("GPUCNN_FUZZ_ORACLE", "").strip().lower() == "numpy":
        return None
    try:
        import torch
    except ImportError:
        return None
    return torch


def _tol(dtype: Any) -> float:
    return 1e-9 if np.dtype(dtype) == np.float64 else 1e-4


def _close(got: Any, want: Any, dtype: Any, what: str, factor: float = 1.0) -> None:
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    tol = _tol(dtype) * factor
    scale = max(1.0, float(np.abs(want).max())) if want.size else 1.0
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale, err_msg=what)


def _place(be: Any, a: np.ndarray, layout: str = "contiguous") -> Any:
    """``a`` on backend ``be``, contiguous or as a non-contiguous view with the same values
    (``"host"``: the NumPy array itself, whatever the backend)."""
    if layout == "host":
        return a
    if layout == "contiguous" or a.ndim == 0:
        return be.asarray(a)
    if layout == "sliced":  # every other element of the last axis of a larger array
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1] + 1,), a.dtype)
        big[..., 1::2] = a
        return be.asarray(big)[..., 1::2]
    if layout == "transposed" and a.ndim >= 2:  # last two axes swapped in memory
        return be.asarray(np.ascontiguousarray(np.swapaxes(a, -1, -2))).swapaxes(-1, -2)
    return be.asarray(a)


def _numeric_grads(
    ref: Callable[..., np.ndarray], arrays: Sequence[np.ndarray], grad_of: Sequence[int],
    g: np.ndarray, eps: float = 1e-6,
) -> list[np.ndarray]:
    """float64 central differences of ``sum(ref(*arrays) * g)`` for the arrays in ``grad_of``."""
    arrays = [np.array(a, dtype=np.float64) if a.dtype.kind == "f" else a for a in arrays]
    out = []
    for i in grad_of:
        x = arrays[i]
        grad = np.zeros(x.shape)
        flat, gflat = x.reshape(-1), grad.reshape(-1)
        for k in range(flat.size):
            old = flat[k]
            h = eps * max(1.0, abs(old))
            flat[k] = old + h
            fp = float((ref(*arrays) * g).sum())
            flat[k] = old - h
            fm = float((ref(*arrays) * g).sum())
            flat[k] = old
            gflat[k] = (fp - fm) / (2 * h)
        out.append(grad)
    return out


def check_op(
    be: Any,
    ours: Callable[..., Tensor],
    theirs: Callable[..., Any] | None,
    ref: Callable[..., np.ndarray] | None,
    arrays: Sequence[np.ndarray],
    grad_of: Sequence[int],
    dtype: Any,
    seed: int,
    layouts: Sequence[str] | None = None,
    ref_grads: Callable[..., list[np.ndarray]] | None = None,
    factor: float = 1.0,
    g_layout: str = "contiguous",
) -> None:
    """Run ``ours`` on ``arrays`` (floats as Tensors on ``be``, those in ``grad_of`` requiring
    grad; integer arrays as raw arrays, on the backend unless their layout is ``"host"``),
    backpropagate a random upstream gradient (placed with ``g_layout``) and compare the output
    and the gradients of ``grad_of`` with the oracle: ``theirs`` on float64 torch tensors, or
    (without torch) ``ref`` on float64 NumPy arrays with ``ref_grads(g, *arrays)`` (the
    gradients of every float input) or central differences."""
    torch = _torch()
    if torch is None and ref is None:
        pytest.skip("PyTorch is the only oracle of this property and it does not import")
    layouts = layouts or ["contiguous"] * len(arrays)
    args = []
    for i, (a, lay) in enumerate(zip(arrays, layouts)):
        if a.dtype.kind == "f":
            args.append(Tensor(_place(be, a, lay), requires_grad=i in grad_of))
        else:
            args.append(_place(be, a, lay))
    y = ours(*args)
    gfactor = factor
    rng = np.random.default_rng(seed + 1)
    g = rng.standard_normal(y.shape).astype(dtype)
    y.backward(_place(be, g, g_layout))
    got_grads = [args[i].grad.numpy() for i in grad_of]
    if torch is not None:
        targs = []
        for i, a in enumerate(arrays):
            if a.dtype.kind == "f":
                targs.append(torch.tensor(a.astype(np.float64), requires_grad=i in grad_of))
            else:
                targs.append(torch.tensor(a.astype(np.int64)))
        ty = theirs(*targs)
        ty.backward(torch.tensor(g.astype(np.float64)))
        want = ty.detach().numpy()
        want_grads = [targs[i].grad.numpy() for i in grad_of]
    else:
        a64 = [a.astype(np.float64) if a.dtype.kind == "f" else a for a in arrays]
        want = ref(*a64)
        if ref_grads is not None:
            full = ref_grads(g.astype(np.float64), *a64)
            want_grads = [full[i] for i in grad_of]
        else:  # central differences: good to about 1e-7 of the gradient's magnitude
            want_grads = _numeric_grads(ref, a64, grad_of, g.astype(np.float64))
            gfactor = max(gfactor, 1e-6 / _tol(dtype))
    assert y.dtype == np.dtype(dtype), f"output dtype {y.dtype}, expected {np.dtype(dtype)}"
    _close(y.numpy(), want, dtype, "output", factor)
    for i, gg, wg in zip(grad_of, got_grads, want_grads):
        _close(gg, wg, dtype, f"gradient of input {i}", gfactor)


# --------------------------------------------------------------------------- strategies

DTYPES = st.sampled_from([np.float32, np.float64])
SEEDS = st.integers(0, 2**31 - 1)
LAYOUTS = st.sampled_from(["contiguous", "sliced", "transposed"])
G_LAYOUTS = st.sampled_from(["contiguous", "contiguous", "sliced", "transposed"])


def _grad_subset(draw: Any, n: int) -> list[int]:
    """Which of ``n`` inputs require grad: all of them, or a random non-empty subset (the
    backward passes that skip a gradient)."""
    if draw(st.booleans(), "all inputs require grad"):
        return list(range(n))
    chosen = [i for i in range(n) if draw(st.booleans(), f"input {i} requires grad")]
    return chosen or [n - 1]


def _normal(rng: np.random.Generator, shape: tuple, dtype: Any, scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(dtype)


def tie_free(rng: np.random.Generator, shape: tuple, dtype: Any) -> np.ndarray:
    """A shuffled linspace: every value distinct in ``dtype`` (max-pool argmax is unique)."""
    n = int(np.prod(shape))
    return rng.permutation(np.linspace(-1.0, 1.0, max(n, 1)))[:n].reshape(shape).astype(dtype)


# --------------------------------------------------------------------------- conv2d


@fuzz("conv2d")
@given(data=st.data())
@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_conv2d(backend: Any, data: st.DataObject) -> None:
    draw = data.draw
    groups = draw(st.sampled_from([1, 1, 2, 3, "depthwise"]), "groups")
    if groups == "depthwise":
        cin = draw(st.integers(1, 4), "channels")
        groups, cout = cin, cin * draw(st.integers(1, 2), "multiplier")
    else:
        cin = groups * draw(st.integers(1, 3), "in per group")
        cout = groups * draw(st.integers(1, 3), "out per group")
    kh, kw = draw(st.integers(1, 4), "kh"), draw(st.integers(1, 4), "kw")
    dil = (draw(st.integers(1, 3), "dil h"), draw(st.integers(1, 3), "dil w"))
    mode = draw(st.sampled_from(["int", "pair", "same", "valid"]), "padding form")
    stride: Any = (draw(st.integers(1, 3), "stride h"), draw(st.integers(1, 3), "stride w"))
    if mode == "same":
        padding: Any = "same"
        stride = draw(st.sampled_from([1, (1, 1)]), "stride")
        ph = pw = 0
    elif mode == "valid":
        padding, ph, pw = "valid", 0, 0
    elif mode == "int":
        padding = ph = pw = draw(st.integers(0, 3), "padding")
    else:
        ph, pw = draw(st.integers(0, 3), "pad h"), draw(st.integers(0, 3), "pad w")
        padding = (ph, pw)
    if draw(st.booleans(), "int stride") and mode != "same":
        stride = stride[0]
    eff = (dil[0] * (kh - 1) + 1, dil[1] * (kw - 1) + 1)
    lo = (1, 1) if mode == "same" else (max(1, eff[0] - 2 * ph), max(1, eff[1] - 2 * pw))
    h = draw(st.integers(lo[0], max(lo[0], 11)), "h")
    w = draw(st.integers(lo[1], max(lo[1], 11)), "w")
    n = draw(st.integers(1, 3), "batch")
    dtype = draw(DTYPES, "dtype")
    bias = draw(st.booleans(), "bias")
    layout = draw(LAYOUTS, "input layout")  # noqa: E501
    wlayout = draw(st.sampled_from(["contiguous", "transposed"]), "weight layout")
    seed = draw(SEEDS, "seed")
    rng = np.random.default_rng(seed)
    arrays = [_normal(rng, (n, cin, h, w), dtype),
              _normal(rng, (cout, cin // groups, kh, kw), dtype)]
    if bias:
        arrays.append(_normal(rng, (cout,), dtype))
    kw_ = dict(stride=stride, padding=padding, dilation=dil, groups=groups)

    def ours(*t: Tensor) -> Tensor:
        return F.conv2d(*t, **kw_)

    def theirs(*t: Any) -> Any:
        return _torch().nn.functional.conv2d(*t, **kw_)

    def geom(x: np.ndarray, wt: np.ndarray) -> Conv2dGeometry:
        return Conv2dGeometry.create(x.shape, wt.shape, stride, padding, dil, groups)

    def ref(x: np.ndarray, wt: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
        return reference.forward(x, wt, b, geom(x, wt))[0]

    def ref_grads(g: np.ndarray, x: np.ndarray, wt: np.ndarray, b: Any = None) -> list:
        gm = geom(x, wt)
        _, cols = reference.forward(x, wt, None, gm)
        gx, gw = reference.backward(g, cols, wt, gm, True, True)
        return [gx, gw] + ([] if b is None else [g.sum(axis=(0, 2, 3))])

    # float32 GEMMs over up to C*kh*kw terms: a little more room than element-wise ops
    check_op(backend, ours, theirs, ref, arrays, _grad_subset(draw, len(arrays)), dtype, seed,
             layouts=[layout, wlayout, "contiguous"], ref_grads=ref_grads, factor=3.0,
             g_layout=draw(G_LAYOUTS, "upstream gradient layout"))


@fuzz("conv2d_routes")
@given(data=st.data())
@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_conv2d_routes(backend: Any, data: st.DataObject) -> None:
    """Larger batches and channel counts, which the NumPy backend runs on its other routes
    (Winograd F(2x2, 3x3), batch-innermost, frame; see ``conv2d_algorithm``) and the CUDA
    backend on many blocks; sometimes one large input value (Winograd's range guard)."""
    draw = data.draw
    route = draw(st.sampled_from(["winograd", "any"]), "aim")
    if route == "winograd":
        kh = kw = 3
        stride, dil, groups = 1, 1, 1
        padding: Any = draw(st.sampled_from([0, 1, 2, (1, 2), (2, 0), "same"]), "padding")
        cin, cout = draw(st.integers(24, 32), "in"), draw(st.integers(24, 32), "out")
        h, w = draw(st.integers(5, 10), "h"), draw(st.integers(9, 12), "w")
        n = draw(st.integers(32, 36), "batch")
    else:
        groups = draw(st.sampled_from([1, 1, 2, 4]), "groups")
        cin, cout = groups * draw(st.integers(1, 8), "in/g"), groups * draw(st.integers(1, 8))
        kh, kw = draw(st.integers(1, 5), "kh"), draw(st.integers(1, 5), "kw")
        stride = (draw(st.integers(1, 3), "sh"), draw(st.integers(1, 3), "sw"))
        dil = (draw(st.integers(1, 2), "dh"), draw(st.integers(1, 2), "dw"))
        padding = (draw(st.integers(0, 2), "ph"), draw(st.integers(0, 2), "pw"))
        h = draw(st.integers(max(1, dil[0] * (kh - 1) + 1 - 2 * padding[0]), 14), "h")
        w = draw(st.integers(max(1, dil[1] * (kw - 1) + 1 - 2 * padding[1]), 14), "w")
        n = draw(st.integers(4, 24), "batch")
    dtype, seed = draw(DTYPES, "dtype"), draw(SEEDS, "seed")
    spike = draw(st.booleans(), "spike")
    bias = draw(st.booleans(), "bias")
    layout = draw(st.sampled_from(["contiguous", "contiguous", "sliced"]), "layout")
    rng = np.random.default_rng(seed)
    x = _normal(rng, (n, cin, h, w), dtype)
    if spike:  # one large value; 1e5 is beyond Winograd's range guard, which falls back
        x.reshape(-1)[rng.integers(x.size)] = 50.0 if rng.random() < 0.5 else 1e5
    arrays = [x, _normal(rng, (cout, cin // groups, kh, kw), dtype)]
    if bias:
        arrays.append(_normal(rng, (cout,), dtype))
    kw_ = dict(stride=stride, padding=padding, dilation=dil, groups=groups)

    def geom(a: np.ndarray, wt: np.ndarray) -> Conv2dGeometry:
        return Conv2dGeometry.create(a.shape, wt.shape, stride, padding, dil, groups)

    def ref(a: np.ndarray, wt: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
        return reference.forward(a, wt, b, geom(a, wt))[0]

    def ref_grads(g: np.ndarray, a: np.ndarray, wt: np.ndarray, b: Any = None) -> list:
        gm = geom(a, wt)
        _, cols = reference.forward(a, wt, None, gm)
        gx, gw = reference.backward(g, cols, wt, gm, True, True)
        return [gx, gw] + ([] if b is None else [g.sum(axis=(0, 2, 3))])

    check_op(backend, lambda *t: F.conv2d(*t, **kw_),
             lambda *t: _torch().nn.functional.conv2d(*t, **kw_), ref, arrays,
             _grad_subset(draw, len(arrays)), dtype, seed,
             layouts=[layout, "contiguous", "contiguous"], ref_grads=ref_grads, factor=10.0,
             g_layout=draw(G_LAYOUTS, "upstream gradient layout"))


# --------------------------------------------------------------------------- pooling


def _ref_maxpool(x: np.ndarray, k: tuple, s: tuple, p: tuple, d: tuple,
                 ceil: bool) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Brute-force max pooling: ``(y, argmax)``, the argmax a flat ``r*W + q`` per plane."""
    n, c, h, w = x.shape
    oh = pool_output_size(h, k[0], s[0], p[0], d[0], ceil)
    ow = pool_output_size(w, k[1], s[1], p[1], d[1], ceil)
    y = np.full((n, c, oh, ow), -np.inf)
    arg = np.zeros((n, c, oh, ow), np.int64)
    for oy in range(oh):
        for ox in range(ow):
            for i in range(k[0]):
                r = oy * s[0] - p[0] + i * d[0]
                for j in range(k[1]):
                    q = ox * s[1] - p[1] + j * d[1]
                    if 0 <= r < h and 0 <= q < w:
                        v = x[:, :, r, q]
                        up = v > y[:, :, oy, ox]
                        y[:, :, oy, ox] = np.where(up, v, y[:, :, oy, ox])
                        arg[:, :, oy, ox] = np.where(up, r * w + q, arg[:, :, oy, ox])
    return y, arg


def _scatter_argmax(g: np.ndarray, arg: np.ndarray, shape: tuple) -> np.ndarray:
    """The max-pool input gradient: each upstream value added at its window's argmax."""
    n, c, h, w = shape
    gx = np.zeros((n * c, h * w))
    rows = np.repeat(np.arange(n * c), arg[0, 0].size)
    np.add.at(gx, (rows, arg.reshape(-1)), g.reshape(-1))
    return gx.reshape(shape)


def _windows_hit_input(n: int, k: int, s: int, p: int, d: int, out: int) -> bool:
    """Whether every window of an axis holds at least one input position."""
    return all(
        any(0 <= o * s - p + i * d < n for i in range(k)) for o in range(out)
    )


def _pool_config(draw: Any, dilation: bool) -> tuple:
    k = (draw(st.integers(1, 4), "kh"), draw(st.integers(1, 4), "kw"))
    stride: Any = draw(
        st.sampled_from(["none", "int", "pair"]), "stride form"
    )
    s = (draw(st.integers(1, 3), "sh"), draw(st.integers(1, 3), "sw"))
    if stride == "none":
        stride, s = None, k
    elif stride == "int":
        stride, s = s[0], (s[0], s[0])
    else:
        stride = s
    p = (draw(st.integers(0, k[0] // 2), "ph"), draw(st.integers(0, k[1] // 2), "pw"))
    d = (draw(st.integers(1, 3), "dh"), draw(st.integers(1, 3), "dw")) if dilation else (1, 1)
    ceil = draw(st.booleans(), "ceil_mode")
    eff = (d[0] * (k[0] - 1) + 1, d[1] * (k[1] - 1) + 1)
    h = draw(st.integers(max(1, eff[0] - 2 * p[0]), max(1, eff[0] - 2 * p[0]) + 8), "h")
    w = draw(st.integers(max(1, eff[1] - 2 * p[1]), max(1, eff[1] - 2 * p[1]) + 8), "w")
    out = (pool_output_size(h, k[0], s[0], p[0], d[0], ceil),
           pool_output_size(w, k[1], s[1], p[1], d[1], ceil))
    assume(min(out) >= 1)
    pad_arg: Any = p if draw(st.booleans(), "pair padding") else (p[0] if p[0] == p[1] else p)
    k_arg: Any = k[0] if k[0] == k[1] and draw(st.booleans(), "int kernel") else k
    return k, s, p, d, ceil, h, w, out, (k_arg, stride, pad_arg)


@fuzz("max_pool2d")
@given(data=st.data())
def test_max_pool2d(backend: Any, data: st.DataObject) -> None:
    draw = data.draw
    k, s, p, d, ceil, h, w, out, (k_arg, s_arg, p_arg) = _pool_config(draw, dilation=True)
    # A window holding padding only (possible with dilation or ceil_mode) is a known defect
    # handled elsewhere; torch's index there is out of range. Valid windows only.
    assume(_windows_hit_input(h, k[0], s[0], p[0], d[0], out[0]))
    assume(_windows_hit_input(w, k[1], s[1], p[1], d[1], out[1]))
    n, c = draw(st.integers(1, 3), "n"), draw(st.integers(1, 3), "c")
    dtype, seed = draw(DTYPES, "dtype"), draw(SEEDS, "seed")
    layout = draw(LAYOUTS, "layout")
    x = tie_free(np.random.default_rng(seed), (n, c, h, w), dtype)
    d_arg: Any = d[0] if d[0] == d[1] else d
    ceil_arg = ceil

    def ours(t: Tensor) -> Tensor:
        return F.max_pool2d(t, k_arg, s_arg, p_arg, d_arg, ceil_arg)

    def theirs(t: Any) -> Any:
        return _torch().nn.functional.max_pool2d(t, k_arg, s_arg, p_arg, d_arg, ceil_arg)

    def ref(a: np.ndarray) -> np.ndarray:
        return _ref_maxpool(a, k, s, p, d, ceil)[0]

    def ref_grads(g: np.ndarray, a: np.ndarray) -> list:
        return [_scatter_argmax(g, _ref_maxpool(a, k, s, p, d, ceil)[1], a.shape)]

    check_op(backend, ours, theirs, ref, [x], [0], dtype, seed, layouts=[layout],
             ref_grads=ref_grads, g_layout=draw(G_LAYOUTS, "upstream gradient layout"))
    # the indices: PyTorch's return_indices (flat h*W + w), or the argmax of the loop reference
    xt = Tensor(_place(backend, x, layout))
    y, idx = F.max_pool2d(xt, k_arg, s_arg, p_arg, d_arg, ceil_arg, return_indices=True)
    torch = _torch()
    if torch is not None:
        _, ti = torch.nn.functional.max_pool2d(
            torch.tensor(x), k_arg, s_arg, p_arg, d_arg, ceil_arg, return_indices=True
        )
        want_idx = ti.numpy()
    else:
        want_idx = _ref_maxpool(x, k, s, p, d, ceil)[1]
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(idx.numpy(), want_idx)


def _ref_avgpool(x: np.ndarray, k: tuple, s: tuple, p: tuple, ceil: bool, cip: bool,
                 dov: int | None, g: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """Brute-force average pooling ``y``; with ``g``, the input gradient for upstream ``g``."""
    n, c, h, w = x.shape
    oh = pool_output_size(h, k[0], s[0], p[0], 1, ceil)
    ow = pool_output_size(w, k[1], s[1], p[1], 1, ceil)
    y = np.zeros((n, c, oh, ow))
    gx = np.zeros(x.shape)
    for oy in range(oh):
        for ox in range(ow):
            r0, c0 = oy * s[0] - p[0], ox * s[1] - p[1]
            r1, c1 = min(r0 + k[0], h + p[0]), min(c0 + k[1], w + p[1])
            size_pad = (r1 - r0) * (c1 - c0)
            rr0, rr1, cc0, cc1 = max(r0, 0), min(r1, h), max(c0, 0), min(c1, w)
            cells = max(rr1 - rr0, 0) * max(cc1 - cc0, 0)
            div = dov if dov else (size_pad if cip else cells)
            y[:, :, oy, ox] = x[:, :, rr0:rr1, cc0:cc1].sum(axis=(2, 3)) / div
            if g is not None:
                gx[:, :, rr0:rr1, cc0:cc1] += (g[:, :, oy, ox] / div)[:, :, None, None]
    return y if g is None else gx


@fuzz("avg_pool2d")
@given(data=st.data())
def test_avg_pool2d(backend: Any, data: st.DataObject) -> None:
    draw = data.draw
    k, s, p, _, ceil, h, w, out, (k_arg, s_arg, p_arg) = _pool_config(draw, dilation=False)
    cip = draw(st.booleans(), "count_include_pad")
    dov = draw(st.sampled_from([None, None, 1, 2, 3, 5]), "divisor_override")
    if not cip and dov is None:  # a window of padding only has no divisor: PyTorch's NaN
        assume(_windows_hit_input(h, k[0], s[0], p[0], 1, out[0]))
        assume(_windows_hit_input(w, k[1], s[1], p[1], 1, out[1]))
    n, c = draw(st.integers(1, 3), "n"), draw(st.integers(1, 3), "c")
    dtype, seed = draw(DTYPES, "dtype"), draw(SEEDS, "seed")
    layout = draw(LAYOUTS, "layout")
    x = _normal(np.random.default_rng(seed), (n, c, h, w), dtype)

    def ours(t: Tensor) -> Tensor:
        return F.avg_pool2d(t, k_arg, s_arg, p_arg, ceil, cip, dov)

    def theirs(t: Any) -> Any:
        return _torch().nn.functional.avg_pool2d(t, k_arg, s_arg, p_arg, ceil, cip, dov)

    def ref(a: np.ndarray) -> np.ndarray:
        return _ref_avgpool(a, k, s, p, ceil, cip, dov)

    def ref_grads(g: np.ndarray, a: np.ndarray) -> list:
        return [_ref_avgpool(a, k, s, p, ceil, cip, dov, g)]

    check_op(backend, ours, theirs, ref, [x], [0], dtype, seed, layouts=[layout],
             ref_grads=ref_grads, g_layout=draw(G_LAYOUTS, "upstream gradient layout"))


def _bins(n: int, m: int) -> list[tuple[int, int]]:
    return [(math.floor(i * n / m), math.ceil((i + 1) * n / m)) for i in range(m)]


def _ref_adaptive(x: np.ndarray, oh: int, ow: int, mode: str,
                  g: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """Brute-force adaptive pooling ``y``; with ``g``, the input gradient for upstream ``g``
    (max: to the first maximum of each bin)."""
    n, c, h, w = x.shape
    y = np.zeros((n, c, oh, ow))
    gx = np.zeros(x.shape)
    for i, (r0, r1) in enumerate(_bins(h, oh)):
        for j, (c0, c1) in enumerate(_bins(w, ow)):
            win = x[:, :, r0:r1, c0:c1]
            y[:, :, i, j] = win.mean(axis=(2, 3)) if mode == "avg" else win.max(axis=(2, 3))
            if g is None:
                continue
            if mode == "avg":
                gx[:, :, r0:r1, c0:c1] += (g[:, :, i, j] / win[0, 0].size)[:, :, None, None]
            else:
                flat = win.reshape(n, c, -1)
                hit = np.arange(flat.shape[-1]) == flat.argmax(axis=-1)[:, :, None]
                gx[:, :, r0:r1, c0:c1] += (hit * g[:, :, i, j, None]).reshape(win.shape)
    return y if g is None else gx


@fuzz("adaptive")
@given(data=st.data())
def test_adaptive_pools(backend: Any, data: st.DataObject) -> None:
    draw = data.draw
    mode = draw(st.sampled_from(["avg", "max"]), "mode")
    h, w = draw(st.integers(1, 10), "h"), draw(st.integers(1, 10), "w")
    oh, ow = draw(st.integers(1, h + 3), "oh"), draw(st.integers(1, w + 3), "ow")
    form = draw(st.sampled_from(["pair", "int", "none h", "none w"]), "output_size form")
    if form == "int":
        ow = oh
        size: Any = oh
    elif form == "none h":
        oh, size = h, (None, ow)
    elif form == "none w":
        ow, size = w, (oh, None)
    else:
        size = (oh, ow)
    n, c = draw(st.integers(1, 3), "n"), draw(st.integers(1, 3), "c")
    dtype, seed = draw(DTYPES, "dtype"), draw(SEEDS, "seed")
    layout = draw(LAYOUTS, "layout")
    rng = np.random.default_rng(seed)
    x = tie_free(rng, (n, c, h, w), dtype) if mode == "max" else _normal(rng, (n, c, h, w), dtype)
    ours_fn = F.adaptive_avg_pool2d if mode == "avg" else F.adaptive_max_pool2d

    def theirs(t: Any) -> Any:
        tf = _torch().nn.functional
        return (tf.adaptive_avg_pool2d if mode == "avg" else tf.adaptive_max_pool2d)(t, size)

    check_op(backend, lambda t: ours_fn(t, size), theirs,
             lambda a: _ref_adaptive(a, oh, ow, mode), [x], [0], dtype, seed, layouts=[layout],
             ref_grads=lambda g, a: [_ref_adaptive(a, oh, ow, mode, g)],
             g_layout=draw(G_LAYOUTS, "upstream gradient layout"))
    if mode == "max":
        _, idx = F.adaptive_max_pool2d(Tensor(_place(backend, x, layout)), size,
                                       return_indices=True)
        want = np.zeros((n, c, oh, ow), np.int64)
        for i, (r0, r1) in enumerate(_bins(h, oh)):
            for j, (c0, c1) in enumerate(_bins(w, ow)):
                win = x[:, :, r0:r1, c0:c1].reshape(n, c, -1)
                a = win.argmax(axis=-1)
                want[:, :, i, j] = (r0 + a // (c1 - c0)) * w + c0 + a % (c1 - c0)
        np.testing.assert_array_equal(idx.numpy(), want)


@fuzz("global")
@given(data=st.data())
def test_global_pools(backend: Any, data: st.DataObject) -> None:
    draw = data.draw
    mode = draw(st.sampled_from(["avg", "max"]), "mode")
    keep = draw(st.booleans(), "keepdims")
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 9)),
             draw(st.integers(1, 9)))
    dtype, seed = draw(DTYPES, "dtype"), draw(SEEDS, "seed")
    layout = draw(LAYOUTS, "layout")
    x = tie_free(np.random.default_rng(seed), shape, dtype)
    ours_fn = F.global_avg_pool2d if mode == "avg" else F.global_max_pool2d

    def theirs(t: Any) -> Any:
        return t.mean(dim=(2, 3), keepdim=keep) if mode == "avg" else t.amax((2, 3), keep)

    def ref(a: np.ndarray) -> np.ndarray:
        return a.mean(axis=(2, 3), keepdims=keep) if mode == "avg" else a.max((2, 3), keepdims=keep)

    check_op(backend, lambda t: ours_fn(t, keepdims=keep), theirs, ref, [x], [0], dtype, seed,
             layouts=[layout], g_layout=draw(G_LAYOUTS, "upstream gradient layout"))


# --------------------------------------------------------------------------- activations


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def _ref_activation(kind: str, x: np.ndarray, param: Any) -> np.ndarray:
    if kind == "relu":
        return np.maximum(x, 0)
    if kind == "leaky_relu":
        return np.where(x > 0, x, param * x)
    if kind == "elu":
        return np.where(x > 0, x, param * np.expm1(np.minimum(x, 0)))
    if kind == "sigmoid":
        return 1 / (1 + np.exp(-x))
    if kind == "tanh":
        return np.tanh(x)
    if kind == "gelu":
        if param == "tanh":
            return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
        return 0.5 * x * (1 + _erf(x / math.sqrt(2)))
    if kind == "softplus":
        beta, threshold = param
        bx = beta * x
        return np.where(bx > threshold, x, np.logaddexp(0, bx) / beta)
    return x  # identity


@fuzz("activation")
@given(data=st.data())
def test_activations(backend: Any, data: st.DataObject) -> None:
    draw = data.draw
    kind = draw(st.sampled_from(
        ["relu", "leaky_relu", "elu", "sigmoid", "tanh", "gelu", "softplus", "identity"]
    ), "activation")
    ndim = draw(st.integers(0, 4), "ndim")
    shape = tuple(draw(st.integers(1, 5)) for _ in range(ndim))
    scale = draw(st.sampled_from([0.5, 2.0, 8.0, 40.0]), "scale")
    dtype, seed = draw(DTYPES, "dtype"), draw(SEEDS, "seed")
    layout = draw(LAYOUTS, "layout")
    param: Any = None
    kwargs: dict = {}
    if kind == "leaky_relu":
        param = draw(st.sampled_from([0.0, 0.01, 0.2, 1.0, -0.5, 3.0]), "negative_slope")
        kwargs = dict(negative_slope=param)
    elif kind == "elu":
        param = draw(st.sampled_from([0.1, 1.0, 2.5]), "alpha")
        kwargs = dict(alpha=param)
    elif kind == "gelu":
        param = draw(st.sampled_from(["none", "tanh"]), "approximate")
        kwargs = dict(approximate=param)
    elif kind == "softplus":
        param = (draw(st.sampled_from([0.5, 1.0, 3.0]), "beta"),
                 draw(st.sampled_from([1.0, 5.0, 20.0]), "threshold"))
        kwargs = dict(beta=param[0], threshold=param[1])
    x = _normal(np.random.default_rng(seed), shape, dtype, scale)
    ours_fn = getattr(F, kind)

    def theirs(t: Any) -> Any:
        torch = _torch()
        if kind == "identity":
            return t * 1
        if kind in ("sigmoid", "tanh"):
            return getattr(torch, kind)(t)
        return getattr(torch.nn.functional, kind)(t, **kwargs)

    def ours(t: Tensor) -> Tensor:
        y = ours_fn(t, **kwargs)
        return y * 1 if kind == "identity" else y

    check_op(backend, ours, theirs, lambda a: _ref_activation(kind, a, param), [x], [0], dtype,
             seed, layouts=[layout], g_layout=draw(G_LAYOUTS, "upstream gradient layout"))


@fuzz("prelu")
@given(data=st.data())
def test_prelu(backend: Any, data: st.DataObject) -> None:
    draw = data.draw
    ndim = draw(st.integers(1, 4), "ndim")
    shape = tuple(draw(st.integers(1, 5)) for _ in range(ndim))
    per_channel = ndim >= 2 and draw(st.booleans(), "per channel")
    nw = shape[1] if per_channel else 1
    dtype, seed = draw(DTYPES, "dtype"), draw(SEEDS, "seed")
    layout = draw(LAYOUTS, "layout")
    rng = np.random.default_rng(seed)
    x = _normal(rng, shape, dtype, 2.0)
    wt = _normal(rng, (nw,), dtype, 0.5)

    def ref(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        wb = b.reshape((1, -1) + (1,) * (a.ndim - 2)) if per_channel else b.reshape(())
        return np.where(a > 0, a, wb * a)

    check_op(backend, F.prelu, lambda a, b: _torch().nn.functional.prelu(a, b), ref, [x, wt],
             _grad_subset(draw, 2), dtype, seed, layouts=[layout, "contiguous"],
             g_layout=draw(G_LAYOUTS, "upstream gradient layout"))


@fuzz("softmax")
@given(data=st.data())
def test_softmax(backend: Any, data: st.DataObject) -> None:
    draw = data.draw
    log = draw(st.booleans(), "log")
    ndim = draw(st.integers(1, 4), "ndim")
    shape = tuple(draw(st.integers(1, 6)) for _ in range(ndim))
    axis = draw(st.integers(-ndim, ndim - 1), "axis")
    scale = draw(st.sampled_from([1.0, 10.0, 100.0]), "scale")
    dtype, seed = draw(DTYPES, "dtype"), draw(SEEDS, "seed")
    layout = draw(LAYOUTS, "layout")
    x = _normal(np.random.default_rng(seed), shape, dtype, scale)

    def ref(a: np.ndarray) -> np.ndarray:
        z = a - a.max(axis=axis, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=axis, keepdims=True))
        return z - lse if log else np.exp(z - lse)

    def theirs(t: Any) -> Any:
        tf = _torch().nn.functional
        return (tf.log_softmax if log else tf.softmax)(t, dim=axis)

    fn = F.log_softmax if log else F.softmax
    check_op(backend, lambda t: fn(t, axis=axis), theirs, ref, [x], [0], dtype, seed,
             layouts=[layout], g_layout=draw(G_LAYOUTS, "upstream gradient layout"))


@fuzz("linear")
@given(data=st.data())
def test_linear(backend: Any, data: st.DataObject) -> None:
    draw = data.draw
    lead = tuple(draw(st.integers(1, 4)) for _ in range(draw(st.integers(0, 2), "lead dims")))
    fin, fout = draw(st.integers(1, 8), "in"), draw(st.integers(1, 8), "out")
    bias = draw(st.booleans(), "bias")
    dtype, seed = draw(DTYPES, "dtype"), draw(SEEDS, "seed")
    layouts = [draw(LAYOUTS, "x layout"), draw(LAYOUTS, "weight layout"), "contiguous"]
    rng = np.random.default_rng(seed)
    arrays = [_normal(rng, lead + (fin,), dtype), _normal(rng, (fout, fin), dtype)]
    if bias:
        arrays.append(_normal(rng, (fout,), dtype))

    def ref(x: np.ndarray, wt: np.ndarray, b: Any = None) -> np.ndarray:
        return x @ wt.T + (0 if b is None else b)

    check_op(backend, F.linear, lambda *t: _torch().nn.functional.linear(*t), ref, arrays,
             _grad_subset(draw, len(arrays)), dtype, seed, layouts=layouts,
             g_layout=draw(G_LAYOUTS, "upstream gradient layout"))


# --------------------------------------------------------------------------- batch norm


@fuzz("batch_norm")
@given(data=st.data())
def test_batch_norm(backend: Any, data: st.DataObject) -> None:
    draw = data.draw
    rank = draw(st.sampled_from([2, 3, 4]), "rank")
    c = draw(st.integers(1, 4), "channels")
    shape = (draw(st.integers(1, 4), "n"), c) + tuple(draw(st.integers(1, 4)) for _ in
                                                       range(rank - 2))
    training = draw(st.booleans(), "training")
    if training:
        assume(int(np.prod(shape)) // c > 1)
    running = draw(st.booleans(), "running stats") if training else True
    affine = draw(st.sampled_from(["both", "weight", "bias", "none"]), "affine")
    momentum = draw(st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]), "momentum")
    stats_as_tensor = draw(st.booleans(), "running stats as Tensors")
    eps = draw(st.sampled_from([1e-5, 1e-3, 0.1]), "eps")
    dtype, seed = draw(DTYPES, "dtype"), draw(SEEDS, "seed")
    layout = draw(LAYOUTS, "layout")
    rng = np.random.default_rng(seed)
    # Channel means far from 0: the variance's cancellation. float32 with 100 would be
    # ill-conditioned in PyTorch too (two samples 0.2 apart at 180), so 10 there.
    offset = draw(st.sampled_from([1.0, 1.0, "large"]), "channel offset scale")
    offset = (100.0 if dtype == np.float64 else 10.0) if offset == "large" else offset
    x = (_normal(rng, shape, dtype, 2.0)
         + offset * rng.standard_normal((1, c) + (1,) * (rank - 2))).astype(dtype)
    if training and dtype == np.float32:  # well-conditioned batches only: a channel whose
        # values agree to 1e-3 of their size (e.g. two samples 0.02 apart at 12) loses digits
        # to the float32 mean in PyTorch as in gpucnn (both 6e-4 off the float64 gradient)
        axes = (0,) + tuple(range(2, rank))
        x64 = x.astype(np.float64)
        assume((x64.std(axis=axes) >= 0.05 * np.abs(x64).max(axis=axes)).all())
    arrays = [x]
    has_w, has_b = affine in ("both", "weight"), affine in ("both", "bias")
    if has_w:
        arrays.append(_normal(rng, (c,), dtype))
    if has_b:
        arrays.append(_normal(rng, (c,), dtype))
    rm0 = rng.standard_normal(c).astype(dtype)
    rv0 = (rng.random(c) + 0.5).astype(dtype)
    ours_stats: list = []
    their_stats: list = []

    def split(t: Sequence[Any]) -> tuple:
        it = iter(t[1:])
        return next(it) if has_w else None, next(it) if has_b else None

    def ours(*t: Tensor) -> Tensor:
        rm = backend.asarray(rm0.copy()) if running else None
        rv = backend.asarray(rv0.copy()) if running else None
        if running and stats_as_tensor:
            rm, rv = Tensor(rm), Tensor(rv)
        ours_stats[:] = [rm, rv]
        wt, b = split(t)
        return F.batch_norm(t[0], rm, rv, wt, b, training, momentum, eps)

    def theirs(*t: Any) -> Any:
        torch = _torch()
        rm = torch.tensor(rm0.astype(np.float64)) if running else None
        rv = torch.tensor(rv0.astype(np.float64)) if running else None
        their_stats[:] = [rm, rv]
        wt, b = split(t)
        return torch.nn.functional.batch_norm(t[0], rm, rv, wt, b, training, momentum, eps)

    def ref(*a: np.ndarray) -> np.ndarray:
        axes = (0,) + tuple(range(2, rank))
        bshape = (1, c) + (1,) * (rank - 2)
        if training:
            mean, var = a[0].mean(axis=axes), a[0].var(axis=axes)
        else:
            mean, var = rm0.astype(np.float64), rv0.astype(np.float64)
        wt, b = split(a)
        y = (a[0] - mean.reshape(bshape)) / np.sqrt(var.reshape(bshape) + eps)
        if wt is not None:
            y = y * wt.reshape(bshape)
        return y + (0 if b is None else b.reshape(bshape))

    # batch statistics of float32 inputs: sums over the batch, a little more room
    check_op(backend, ours, theirs, ref, arrays, _grad_subset(draw, len(arrays)), dtype, seed,
             layouts=[layout] + ["contiguous"] * (len(arrays) - 1), factor=3.0,
             g_layout=draw(G_LAYOUTS, "upstream gradient layout"))
    if running:
        if _torch() is None:  # the NumPy route: PyTorch's update rule, unbiased variance
            axes = (0,) + tuple(range(2, rank))
            x64, m = x.astype(np.float64), x.size // c
            mean, var = x64.mean(axis=axes), x64.var(axis=axes) * m / max(m - 1, 1)
            their_stats[:] = [rm0, rv0] if not training else [
                (1 - momentum) * rm0 + momentum * mean, (1 - momentum) * rv0 + momentum * var]
        for name, got, want in zip(("running_mean", "running_var"), ours_stats, their_stats):
            want = want.numpy() if hasattr(want, "numpy") else want
            got = got.numpy() if isinstance(got, Tensor) else to_numpy(got)
            assert got.dtype == np.dtype(dtype), f"{name} dtype {got.dtype}"
            _close(got, want, dtype, name, 3.0)


# --------------------------------------------------------------------------- dropout


@fuzz("dropout")
@given(data=st.data())
def test_dropout(backend: Any, data: st.DataObject) -> None:
    draw = data.draw
    channel = draw(st.booleans(), "dropout2d")
    shape = tuple(draw(st.integers(1, 6)) for _ in range(4 if channel else draw(
        st.integers(1, 4), "ndim")))
    p = draw(st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]), "p")
    training = draw(st.booleans(), "training")
    dtype, seed = draw(DTYPES, "dtype"), draw(SEEDS, "seed")
    rng = np.random.default_rng(seed)
    x = _normal(rng, shape, dtype) + np.where(rng.random(shape) < 0.5, 1, -1).astype(dtype)
    x = np.where(x == 0, 1, x).astype(dtype)  # no zero input: the mask is read off y / x
    xt = Tensor(backend.asarray(x), requires_grad=True)
    fn = F.dropout2d if channel else F.dropout
    y = fn(xt, p=p, training=training)
    g = rng.standard_normal(shape).astype(dtype)
    y.backward(backend.asarray(g))
    yv, gx = y.numpy(), xt.grad.numpy()
    assert yv.shape == x.shape and yv.dtype == x.dtype
    if not training or p == 0.0:
        np.testing.assert_array_equal(yv, x)
        np.testing.assert_array_equal(gx, g)
        return
    if p == 1.0:
        np.testing.assert_array_equal(yv, np.zeros_like(x))
        np.testing.assert_array_equal(gx, np.zeros_like(x))
        return
    keep = yv != 0
    if channel:  # whole feature maps kept or dropped
        per_map = keep.reshape(shape[0], shape[1], -1)
        assert (per_map.all(axis=-1) | ~per_map.any(axis=-1)).all(), "dropout2d split a map"
    units = keep.reshape(shape[0], shape[1], -1)[:, :, 0] if channel else keep
    m, dropped = units.size, int((~units).sum())  # binomial(m, p): within 6 sigma of m p
    assert abs(dropped - m * p) <= 6 * math.sqrt(m * p * (1 - p)) + 1, (dropped, m, p)
    scale = dtype(1.0 / (1.0 - p))
    tol = _tol(dtype)
    np.testing.assert_allclose(yv[keep], x[keep] * scale, rtol=tol)
    np.testing.assert_allclose(gx, np.where(keep, g * scale, 0), rtol=tol, atol=tol)


# --------------------------------------------------------------------------- losses

REDUCTIONS = st.sampled_from(["mean", "sum", "none"])
#: Class-index targets: on the input's backend (device-side checks on cuda) or a NumPy array.
TARGET_PLACES = st.sampled_from(["contiguous", "host"])


def _ref_ce_index(x: np.ndarray, t: np.ndarray, w: Any, ignore: int, eps: float,
                  reduction: str) -> np.ndarray:  # fmt: skip
    """PyTorch's cross_entropy with class indices; classes on axis 1, rows elsewhere."""
    c = x.shape[1]
    lp = np.moveaxis(x, 1, -1)
    lp = lp - lp.max(axis=-1, keepdims=True)
    lp = lp - np.log(np.exp(lp).sum(axis=-1, keepdims=True))
    wv = np.ones(c) if w is None else w
    valid = t != ignore
    tc = np.where(valid, t, 0)
    wt = np.where(valid, wv[tc], 0.0)
    nll = -wt * np.take_along_axis(lp, tc[..., None], axis=-1)[..., 0]
    smooth = np.where(valid, -(lp * wv).sum(axis=-1), 0.0)
    loss = (1 - eps) * nll + eps / c * smooth
    if reduction == "none":
        return loss
    return loss.sum() / (wt.sum() if reduction == "mean" else 1.0)


@fuzz("cross_entropy")
@given(data=st.data())
def test_cross_entropy_index(backend: Any, data: st.DataObject) -> None:
    draw = data.draw
    form = draw(st.sampled_from(["unbatched", "2d", "2d", "spatial1", "spatial2"]), "form")
    c = draw(st.integers(1, 6), "classes")
    n = draw(st.integers(1, 5), "n")
    extra = {"unbatched": (), "2d": (), "spatial1": (draw(st.integers(1, 4)),),
             "spatial2": (draw(st.integers(1, 3)), draw(st.integers(1, 3)))}[form]
    xshape = (c,) if form == "unbatched" else (n, c) + extra
    tshape = () if form == "unbatched" else (n,) + extra
    reduction = draw(REDUCTIONS, "reduction")
    weighted = draw(st.booleans(), "weight")
    ignore = draw(st.sampled_from([-100, -1, "class"]), "ignore_index")
    smoothing = draw(st.sampled_from([0.0, 0.0, 0.1, 0.5, 1.0]), "label_smoothing")
    tdtype = draw(st.sampled_from([np.int64, np.int32]), "target dtype")
    dtype, seed = draw(DTYPES, "dtype"), draw(SEEDS, "seed")
    layout = draw(LAYOUTS, "layout")
    rng = np.random.default_rng(seed)
    if ignore == "class":
        ignore = int(rng.integers(0, c))
    x = _normal(rng, xshape, dtype, draw(st.sampled_from([1.0, 5.0]), "scale"))
    t = rng.integers(0, c, tshape)
    t = np.where(rng.random(tshape) < 0.25, ignore, t).astype(tdtype)
    w = (rng.random(c) * 2 + 0.1).astype(dtype) if weighted else None
    valid = t != ignore
    if reduction == "mean":  # every target ignored: the nll_loss 0/0 defect handled elsewhere
        assume(valid.any())
    wb = None if w is None else backend.asarray(w)
    kw = dict(ignore_index=ignore, label_smoothing=smoothing, reduction=reduction)

    def theirs(a: Any, b: Any) -> Any:
        torch = _torch()
        tw = None if w is None else torch.tensor(w.astype(np.float64))
        return torch.nn.functional.cross_entropy(a, b, weight=tw, **kw)

    def ref(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a2, b2 = (a[None], b[None]) if form == "unbatched" else (a, b)
        out = _ref_ce_index(a2, b2, None if w is None else w.astype(np.float64), ignore,
                            smoothing, reduction)
        return out[0] if form == "unbatched" and reduction == "none" else out

    check_op(backend, lambda a, b: F.cross_entropy(a, b, weight=wb, **kw), theirs, ref, [x, t],
             [0], dtype, seed, layouts=[layout, draw(TARGET_PLACES, "target placement")])


@fuzz("cross_entropy_prob")
@given(data=st.data())
def test_cross_entropy_probabilities(backend: Any, data: st.DataObject) -> None:
    draw = data.draw
    c = draw(st.integers(1, 6), "classes")
    form = draw(st.sampled_from(["unbatched", "2d", "spatial"]), "form")
    n = draw(st.integers(1, 4), "n")
    shape = {"unbatched": (c,), "2d": (n, c), "spatial": (n, c, draw(st.integers(1, 3)))}[form]
    reduction = draw(REDUCTIONS, "reduction")
    weighted = draw(st.booleans(), "weight")
    smoothing = draw(st.sampled_from([0.0, 0.2, 1.0]), "label_smoothing")
    dtype, seed = draw(DTYPES, "dtype"), draw(SEEDS, "seed")
    rng = np.random.default_rng(seed)
    x = _normal(rng, shape, dtype, 3.0)
    p = rng.random(shape) + 0.05
    p = (p / p.sum(axis=0 if form == "unbatched" else 1, keepdims=True)).astype(dtype)
    w = (rng.random(c) * 2 + 0.1).astype(dtype) if weighted else None
    wb = None if w is None else backend.asarray(w)
    kw = dict(label_smoothing=smoothing, reduction=reduction)

    def theirs(a: Any, b: Any) -> Any:
        torch = _torch()
        tw = None if w is None else torch.tensor(w.astype(np.float64))
        return torch.nn.functional.cross_entropy(a, b, weight=tw, **kw)

    def ref(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a2, b2 = (a[None], b[None]) if form == "unbatched" else (a, b)
        lp = a2 - a2.max(axis=1, keepdims=True)
        lp = lp - np.log(np.exp(lp).sum(axis=1, keepdims=True))
        ts = b2 * (1 - smoothing) + smoothing / c
        wv = np.ones(c) if w is None else w.astype(np.float64)
        loss = -(lp * ts * wv.reshape((1, c) + (1,) * (a2.ndim - 2))).sum(axis=1)
        if reduction == "none":
            return loss[0] if form == "unbatched" else loss
        return loss.sum() / (loss.size if reduction == "mean" else 1)

    check_op(backend, lambda a, b: F.cross_entropy(a, b, weight=wb, **kw), theirs, ref, [x, p],
             _grad_subset(draw, 2), dtype, seed)


@fuzz("nll_loss")
@given(data=st.data())
def test_nll_loss(backend: Any, data: st.DataObject) -> None:
    draw = data.draw
    c = draw(st.integers(1, 6), "classes")
    n = draw(st.integers(1, 5), "n")
    extra = tuple(draw(st.integers(1, 3)) for _ in range(draw(st.integers(0, 2), "spatial")))
    reduction = draw(REDUCTIONS, "reduction")
    weighted = draw(st.booleans(), "weight")
    ignore = draw(st.sampled_from([-100, -1, "class"]), "ignore_index")
    tdtype = draw(st.sampled_from([np.int64, np.int32]), "target dtype")
    dtype, seed = draw(DTYPES, "dtype"), draw(SEEDS, "seed")
    layout = draw(LAYOUTS, "layout")
    rng = np.random.default_rng(seed)
    if ignore == "class":
        ignore = int(rng.integers(0, c))
    x = _normal(rng, (n, c) + extra, dtype, 2.0)
    t = rng.integers(0, c, (n,) + extra)
    t = np.where(rng.random(t.shape) < 0.25, ignore, t).astype(tdtype)
    if reduction == "mean":  # every target ignored: a known defect (0/0), handled elsewhere
        assume((t != ignore).any())
    w = (rng.random(c) * 2 + 0.1).astype(dtype) if weighted else None
    wb = None if w is None else backend.asarray(w)
    kw = dict(ignore_index=ignore, reduction=reduction)

    def theirs(a: Any, b: Any) -> Any:
        torch = _torch()
        tw = None if w is None else torch.tensor(w.astype(np.float64))
        return torch.nn.functional.nll_loss(a, b, weight=tw, **kw)

    def ref(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        wv = np.ones(c) if w is None else w.astype(np.float64)
        valid = b != ignore
        bc = np.where(valid, b, 0).astype(np.int64)
        wt = np.where(valid, wv[bc], 0.0)
        loss = -wt * np.take_along_axis(a, bc[:, None], axis=1)[:, 0]
        if reduction == "none":
            return loss
        return loss.sum() / (wt.sum() if reduction == "mean" else 1)

    check_op(backend, lambda a, b: F.nll_loss(a, b, weight=wb, **kw), theirs, ref, [x, t], [0],
             dtype, seed, layouts=[layout, draw(TARGET_PLACES, "target placement")])


def _bcast_shape(draw: Any, shape: tuple, what: str) -> tuple | None:
    """None, the input's shape, its last axis, or a broadcastable shape with some 1s."""
    form = draw(st.sampled_from(["none", "full", "last", "ones"]), what)
    if form == "none":
        return None
    if form == "full":
        return shape
    if form == "last":
        return shape[-1:]
    return tuple(1 if draw(st.booleans()) else s for s in shape)


@fuzz("bce_with_logits")
@given(data=st.data())
def test_bce_with_logits(backend: Any, data: st.DataObject) -> None:
    draw = data.draw
    shape = tuple(draw(st.integers(1, 5)) for _ in range(draw(st.integers(1, 3), "ndim")))
    reduction = draw(REDUCTIONS, "reduction")
    pw_shape = _bcast_shape(draw, shape, "pos_weight")
    w_shape = _bcast_shape(draw, shape, "weight")
    dtype, seed = draw(DTYPES, "dtype"), draw(SEEDS, "seed")
    layout = draw(LAYOUTS, "layout")
    rng = np.random.default_rng(seed)
    x = _normal(rng, shape, dtype, draw(st.sampled_from([1.0, 10.0, 50.0]), "scale"))
    t = rng.random(shape).astype(dtype)
    if draw(st.booleans(), "hard targets"):
        t = np.round(t).astype(dtype)
    pw = None if pw_shape is None else (rng.random(pw_shape) * 3 + 0.1).astype(dtype)
    w = None if w_shape is None else (rng.random(w_shape) * 2).astype(dtype)
    pwb = None if pw is None else backend.asarray(pw)
    wb = None if w is None else backend.asarray(w)

    def theirs(a: Any, b: Any) -> Any:
        torch = _torch()
        tt = [None if v is None else torch.tensor(v.astype(np.float64)) for v in (w, pw)]
        return torch.nn.functional.binary_cross_entropy_with_logits(
            a, b, weight=tt[0], pos_weight=tt[1], reduction=reduction)

    def ref(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        sp_neg = np.logaddexp(0, -a)  # -log sigmoid(a)
        pwv = 1.0 if pw is None else pw.astype(np.float64)
        loss = pwv * b * sp_neg + (1 - b) * (a + sp_neg)
        loss = loss * (1.0 if w is None else w.astype(np.float64))
        if reduction == "none":
            return loss
        return loss.sum() / (loss.size if reduction == "mean" else 1)

    check_op(backend, lambda a, b: F.binary_cross_entropy_with_logits(
        a, b, pos_weight=pwb, reduction=reduction, weight=wb), theirs, ref, [x, t],
        _grad_subset(draw, 2), dtype, seed, layouts=[layout, "contiguous"])


@fuzz("bce")
@given(data=st.data())
def test_bce(backend: Any, data: st.DataObject) -> None:
    draw = data.draw
    shape = tuple(draw(st.integers(1, 5)) for _ in range(draw(st.integers(1, 3), "ndim")))
    reduction = draw(REDUCTIONS, "reduction")
    w_shape = _bcast_shape(draw, shape, "weight")
    dtype, seed = draw(DTYPES, "dtype"), draw(SEEDS, "seed")
    layout = draw(LAYOUTS, "layout")
    rng = np.random.default_rng(seed)
    p = (rng.random(shape) * 0.98 + 0.01).astype(dtype)
    t = rng.random(shape).astype(dtype)
    if draw(st.booleans(), "hard targets"):
        t = np.round(t).astype(dtype)
    grad_of, factor = _grad_subset(draw, 2), 1.0
    if draw(st.booleans(), "exact 0 and 1 probabilities"):  # the logs clamped at -100
        p = np.where(rng.random(shape) < 0.3, np.round(rng.random(shape)), p).astype(dtype)
        # There the target gradient is PyTorch's unclamped log(1-p) - log(p) = +-inf, ours the
        # slope of the clamped loss (+-100): a deliberate difference, so only the input's.
        # PyTorch's clamp of p (1 - p) is a float32 1e-12 (4e-9 off the float64 one)
        grad_of, factor = [0], 1e-6 / _tol(dtype)
    w = None if w_shape is None else (rng.random(w_shape) * 2).astype(dtype)
    wb = None if w is None else backend.asarray(w)

    def theirs(a: Any, b: Any) -> Any:
        torch = _torch()
        tw = None if w is None else torch.tensor(w.astype(np.float64))
        return torch.nn.functional.binary_cross_entropy(a, b, weight=tw, reduction=reduction)

    def ref(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            loss = -(b * np.maximum(np.log(a), -100) + (1 - b) * np.maximum(np.log1p(-a), -100))
        loss = loss * (1.0 if w is None else w.astype(np.float64))
        if reduction == "none":
            return loss
        return loss.sum() / (loss.size if reduction == "mean" else 1)

    def ref_grads(g: np.ndarray, a: np.ndarray, b: np.ndarray) -> list:
        ge = np.broadcast_to(g / (a.size if reduction == "mean" else 1), a.shape)
        ge = ge * (1.0 if w is None else w.astype(np.float64))
        dp = ge * (a - b) / np.maximum(a * (1 - a), 1e-12)  # PyTorch's rule
        with np.errstate(divide="ignore"):
            dt = ge * (np.maximum(np.log1p(-a), -100) - np.maximum(np.log(a), -100))
        return [dp, dt]

    check_op(backend, lambda a, b: F.binary_cross_entropy(a, b, reduction=reduction, weight=wb),
             theirs, ref, [p, t], grad_of, dtype, seed, layouts=[layout, "contiguous"],
             ref_grads=ref_grads, factor=factor)


@fuzz("mse")
@given(data=st.data())
def test_mse(backend: Any, data: st.DataObject) -> None:
    draw = data.draw
    shape = tuple(draw(st.integers(1, 5)) for _ in range(draw(st.integers(0, 3), "ndim")))
    reduction = draw(REDUCTIONS, "reduction")
    dtype, seed = draw(DTYPES, "dtype"), draw(SEEDS, "seed")
    layouts = [draw(LAYOUTS, "layout"), draw(LAYOUTS, "target layout")]
    rng = np.random.default_rng(seed)
    x, t = _normal(rng, shape, dtype), _normal(rng, shape, dtype)

    def theirs(a: Any, b: Any) -> Any:
        return _torch().nn.functional.mse_loss(a, b, reduction=reduction)

    def ref(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        loss = (a - b) ** 2
        if reduction == "none":
            return loss
        return loss.sum() / (loss.size if reduction == "mean" else 1)

    check_op(backend, lambda a, b: F.mse_loss(a, b, reduction=reduction), theirs, ref, [x, t],
             _grad_subset(draw, 2), dtype, seed, layouts=layouts)


# --------------------------------------------------------------------------- forms PyTorch takes

_UNBATCHED = "gpucnn refuses an input form torch.nn.functional accepts"


def _form(what: str, shape: tuple, fn: Any, refused: bool = False) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=f"{_UNBATCHED}: {what}")] if refused else []
    return pytest.param(what, shape, fn, id=what.replace(" ", "_"), marks=marks)


def _index(f: Any, i: int) -> Any:
    """Class index ``i`` as a 0-d target of ``f`` (gpucnn.functional or torch's)."""
    if f is F:
        return np.array(i)
    import torch

    return torch.tensor(i)


FORMS = [
    _form("nll_loss (C,) with target ()", (4,), lambda f, x: f.nll_loss(x, _index(f, 2))),
    _form("nll_loss (C,) reduction none", (4,),
          lambda f, x: f.nll_loss(x, _index(f, 1), reduction="none")),
    _form("softmax of a 0-d tensor", (), lambda f, x: f.softmax(x, 0)),
    _form("log_softmax of a 0-d tensor", (), lambda f, x: f.log_softmax(x, 0)),
    _form("conv2d (C, H, W)", (2, 5, 5), "conv"),
    _form("max_pool2d (C, H, W)", (2, 5, 5), lambda f, x: f.max_pool2d(x, 2)),
    _form("max_pool2d (C, H, W) indices", (2, 5, 5),
          lambda f, x: f.max_pool2d(x, 3, 2, 1, return_indices=True)[0] * 1.0),
    _form("avg_pool2d (C, H, W)", (2, 5, 5), lambda f, x: f.avg_pool2d(x, 2)),
    _form("adaptive_avg_pool2d (C, H, W)", (2, 5, 5), lambda f, x: f.adaptive_avg_pool2d(x, 3)),
    _form("adaptive_max_pool2d (C, H, W)", (2, 5, 5), lambda f, x: f.adaptive_max_pool2d(x, 2)),
    _form("cross_entropy (C,) with target ()", (4,),
          lambda f, x: f.cross_entropy(x, _index(f, 2))),
]


@pytest.mark.parametrize("what, shape, fn", FORMS)
def test_forms_pytorch_accepts(backend: Any, what: str, shape: tuple, fn: Any) -> None:
    """Unbatched and 0-d forms PyTorch takes: the same value and gradient, or (strict xfail)
    a finding of the fuzz suite, listed so that fixing it flips the mark."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    wt = rng.standard_normal((3, 2, 3, 3))
    tx = torch.tensor(x, requires_grad=True)
    xt = Tensor(backend.asarray(x), requires_grad=True)
    if fn == "conv":
        ty = torch.nn.functional.conv2d(tx, torch.tensor(wt), padding=1)
        y = F.conv2d(xt, Tensor(backend.asarray(wt)), padding=1)
    else:
        ty, y = fn(torch.nn.functional, tx), fn(F, xt)
    g = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(g))
    y.backward(backend.asarray(g))
    _close(y.numpy(), ty.detach().numpy(), np.float64, f"{what}: output")
    _close(xt.grad.numpy(), tx.grad.numpy(), np.float64, f"{what}: gradient")
