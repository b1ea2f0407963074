"""functional.conv2d: gradient checks for every index-math option, PyTorch parity, errors; each
NumPy algorithm against the reference through the public primitives; the CUDA primitives and
the CUDA autograd route on the host emulator."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

import gpucnn.functional as F
from gpucnn import backend as B
from gpucnn.backend import geometry as geo_mod
from gpucnn.backend.cuda_ops import conv as cconv
from gpucnn.backend.geometry import Conv2dGeometry, ConvSaved, transposed_path_applies
from gpucnn.backend.numpy_ops import conv as nconv
from gpucnn.backend.numpy_ops.conv import batch_inner as bi_mod
from gpucnn.backend.numpy_ops.conv import frame as frame_mod
from gpucnn.backend.numpy_ops.conv import reference
from gpucnn.backend.numpy_ops.conv import winograd as wg_mod
from gpucnn.functional.conv import conv2d_output_size, same_padding
from gpucnn.tensor import Tensor, no_grad
from gpucnn.testing.gradcheck import gradient_check

# (x shape, weight shape, kwargs): each changes the index math somewhere
GRAD_CASES = [
    ((2, 2, 5, 5), (3, 2, 3, 3), dict()),
    ((1, 2, 6, 6), (2, 2, 3, 3), dict(stride=2)),  # kernel larger than the stride
    ((1, 2, 7, 8), (2, 2, 2, 2), dict(stride=3)),  # stride larger than the kernel: gaps
    ((1, 2, 5, 4), (2, 2, 3, 3), dict(padding=1)),
    ((1, 1, 4, 5), (2, 1, 3, 3), dict(padding=2, stride=2)),
    ((1, 2, 5, 5), (2, 2, 3, 3), dict(padding="same")),  # odd kernel
    ((1, 2, 5, 6), (2, 2, 2, 2), dict(padding="same")),  # even kernel: extra pad bottom/right
    ((1, 2, 6, 5), (2, 2, 4, 3), dict(padding="same")),  # even x odd
    ((1, 1, 7, 7), (2, 1, 3, 3), dict(padding="same", dilation=2)),
    ((1, 1, 7, 6), (2, 1, 2, 2), dict(padding="same", dilation=2)),  # even kernel, dilation 2
    ((1, 2, 6, 6), (2, 2, 3, 3), dict(padding="valid")),
    ((1, 2, 5, 6), (2, 2, 3, 2), dict(padding=(1, 2))),  # pair padding
    ((1, 2, 7, 7), (2, 2, 3, 3), dict(dilation=2)),
    ((1, 2, 8, 7), (2, 2, 2, 3), dict(dilation=(2, 1), stride=(1, 2), padding=(2, 0))),
    ((1, 4, 5, 5), (4, 2, 3, 3), dict(groups=2, padding=1)),
    ((1, 3, 5, 6), (6, 1, 3, 3), dict(groups=3, padding=1, stride=2)),  # depthwise x2
    ((2, 3, 4, 5), (3, 1, 3, 3), dict(groups=3)),  # depthwise
    ((2, 3, 4, 5), (4, 3, 1, 1), dict()),  # 1x1 fast path
    ((1, 3, 5, 5), (2, 3, 1, 1), dict(stride=2)),  # 1x1 through im2col
    ((1, 3, 4, 4), (2, 3, 1, 1), dict(padding=1)),  # 1x1 with padding
    ((1, 2, 4, 7), (2, 2, 2, 3), dict(stride=(2, 1))),  # non-square kernel and input
    ((1, 1, 3, 3), (1, 1, 3, 3), dict()),  # kernel == input: 1x1 output
]


def _ids(cases: list) -> list[str]:
    return [f"{x}-{w}-{kw}" for x, w, kw in cases]


@pytest.mark.parametrize("xs, ws, kw", GRAD_CASES, ids=_ids(GRAD_CASES))
def test_gradient_check(xs: tuple, ws: tuple, kw: dict) -> None:
    rng = np.random.default_rng(sum(xs) + sum(ws))
    x = rng.standard_normal(xs)
    w = rng.standard_normal(ws)
    b = rng.standard_normal(ws[0])
    gradient_check(lambda x, w, b: F.conv2d(x, w, b, **kw), [x, w, b])


def test_gradient_check_without_bias() -> None:
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 2, 5, 4)), rng.standard_normal((3, 2, 2, 3))
    gradient_check(lambda x, w: F.conv2d(x, w, stride=2, padding=1), [x, w])


# ------------------------------------------------------------------ PyTorch parity


def _torch_conv(torch, x, w, b, g, **kw):  # noqa: ANN001, ANN202
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = None if b is None else torch.tensor(b, requires_grad=True)
    y = torch.nn.functional.conv2d(tx, tw, tb, **kw)
    y.backward(torch.tensor(g))
    grads = [tx.grad.numpy(), tw.grad.numpy()] + ([] if b is None else [tb.grad.numpy()])
    return y.detach().numpy(), grads


def _ours(x, w, b, g, **kw):  # noqa: ANN001, ANN202
    ts = [Tensor(a, requires_grad=True) for a in ([x, w] if b is None else [x, w, b])]
    y = F.conv2d(*ts, **kw)
    y.backward(g)
    return y.numpy(), [t.grad.numpy() for t in ts]


def _random_config(rng: np.random.Generator) -> tuple:
    groups = int(rng.choice([1, 1, 2, 3]))
    cin = groups * int(rng.integers(1, 4))
    cout = groups * int(rng.integers(1, 4))
    kh, kw = (int(v) for v in rng.integers(1, 5, size=2))
    dil = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    mode = rng.choice(["int", "pair", "same", "valid"])
    stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    if mode == "same":
        padding, stride = "same", (1, 1)
    elif mode == "valid":
        padding = "valid"
    elif mode == "int":
        padding = int(rng.integers(0, 3))
    else:
        padding = (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
    ph = pw = 0 if isinstance(padding, str) else (padding if isinstance(padding, int) else 0)
    if isinstance(padding, tuple):
        ph, pw = padding
    h = int(rng.integers(max(1, dil[0] * (kh - 1) + 1 - 2 * ph), 12))
    w = int(rng.integers(max(1, dil[1] * (kw - 1) + 1 - 2 * pw), 12))
    n = int(rng.integers(1, 4))
    kwargs = dict(stride=stride, padding=padding, dilation=dil, groups=groups)
    return (n, cin, h, w), (cout, cin // groups, kh, kw), kwargs


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("seed", range(40))
def test_torch_parity_random(seed: int) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    xs, ws, kw = _random_config(rng)
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    b = rng.standard_normal(ws[0]) if seed % 3 else None
    with no_grad():
        y = F.conv2d(Tensor(x), Tensor(w), None if b is None else Tensor(b), **kw).numpy()
    g = rng.standard_normal(y.shape)
    y, grads = _ours(x, w, b, g, **kw)
    ty, tgrads = _torch_conv(torch, x, w, b, g, **kw)
    np.testing.assert_allclose(y, ty, rtol=1e-10, atol=1e-10)
    for ours, ref in zip(grads, tgrads):
        np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("k", [(2, 2), (4, 4), (2, 3), (4, 1)])
@pytest.mark.parametrize("dilation", [1, 2, 3])
def test_torch_parity_same_even_kernels(k: tuple, dilation: int) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(k[0] * 10 + k[1] + dilation)
    x = rng.standard_normal((2, 3, 9, 8))
    w = rng.standard_normal((4, 3) + k)
    b = rng.standard_normal(4)
    g = rng.standard_normal((2, 4, 9, 8))
    y, grads = _ours(x, w, b, g, padding="same", dilation=dilation)
    assert y.shape == (2, 4, 9, 8)
    ty, tgrads = _torch_conv(torch, x, w, b, g, padding="same", dilation=dilation)
    np.testing.assert_allclose(y, ty, rtol=1e-10, atol=1e-10)
    for ours, ref in zip(grads, tgrads):
        np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-10)


def test_float32_matches_float64_reference() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 8, 12, 11))
    w = rng.standard_normal((16, 8, 3, 3)) * 0.2
    b = rng.standard_normal(16)
    g = rng.standard_normal((4, 16, 6, 6))
    kw = dict(stride=2, padding=1)
    y64, g64 = _ours(x, w, b, g, **kw)
    f32 = [a.astype(np.float32) for a in (x, w, b, g)]
    y32, g32 = _ours(*f32, **kw)
    assert y32.dtype == np.float32 and all(a.dtype == np.float32 for a in g32)
    for ours, ref in zip([y32, *g32], [y64, *g64]):
        err = np.abs(ours.astype(np.float64) - ref).max()
        assert err <= 1e-5 * np.abs(ref).max(), err


# ------------------------------------------------------------------ other behaviour


def test_non_contiguous_inputs() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 7, 6)).transpose(0, 1, 3, 2)  # (2, 3, 6, 7) strided
    w = rng.standard_normal((3, 4, 3, 2))[:, ::2].transpose(1, 0, 2, 3)  # (2, 3, 3, 2) strided
    b = rng.standard_normal(4)[::2]
    assert not x.flags.c_contiguous and not w.flags.c_contiguous
    g = rng.standard_normal((2, 2, 6, 6))
    y, grads = _ours(x, w, b, g, padding=(1, 0))
    y2, grads2 = _ours(*(np.ascontiguousarray(a) for a in (x, w, b)), g, padding=(1, 0))
    np.testing.assert_allclose(y, y2, rtol=1e-12)
    for a, c in zip(grads, grads2):
        np.testing.assert_allclose(a, c, rtol=1e-12)


def test_pointwise_non_contiguous_and_grad() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 5, 4, 3)).transpose(0, 3, 1, 2)  # (2, 3, 5, 4)
    w = rng.standard_normal((4, 3, 1, 1))
    ref = np.einsum("nchw,oc->nohw", x, w[:, :, 0, 0])
    np.testing.assert_allclose(F.conv2d(Tensor(x), Tensor(w)).numpy(), ref, rtol=1e-12)


def test_nan_propagates() -> None:
    x = np.ones((1, 1, 5, 5))
    x[0, 0, 2, 2] = np.nan
    y = F.conv2d(Tensor(x), Tensor(np.ones((1, 1, 3, 3))), padding=1).numpy()
    assert np.isnan(y[0, 0, 1:4, 1:4]).all()
    assert np.isfinite(y[0, 0, 0]).all()


def test_only_weight_requires_grad() -> None:
    rng = np.random.default_rng(6)
    x = Tensor(rng.standard_normal((2, 2, 5, 5)))
    w = Tensor(rng.standard_normal((3, 2, 3, 3)), requires_grad=True)
    F.conv2d(x, w).sum().backward()
    assert x.grad is None and w.grad is not None
    expect = np.stack(
        [x.numpy()[:, :, i : i + 3, j : j + 3].sum(axis=0) for i in range(3) for j in range(3)]
    ).sum(axis=0)
    np.testing.assert_allclose(w.grad.numpy(), np.broadcast_to(expect, (3, 2, 3, 3)), rtol=1e-10)


def test_dtype_and_default_float32() -> None:
    x = Tensor(np.ones((1, 2, 4, 4), np.float32))
    w = Tensor(np.ones((3, 2, 3, 3), np.float32))
    y = F.conv2d(x, w, Tensor(np.zeros(3, np.float32)))
    assert y.dtype == np.float32 and y.shape == (1, 3, 2, 2)
    np.testing.assert_array_equal(y.numpy(), np.full((1, 3, 2, 2), 18.0, np.float32))


def test_output_size_and_same_padding_helpers() -> None:
    assert conv2d_output_size(28, 28, 5, padding=2) == (28, 28)
    assert conv2d_output_size(14, 14, 5) == (10, 10)
    assert conv2d_output_size(32, 32, 3, stride=2, padding=1) == (16, 16)
    assert conv2d_output_size(7, 8, (2, 3), stride=(3, 1), padding=(1, 0), dilation=2) == (3, 4)
    assert conv2d_output_size(9, 8, 4, padding="same") == (9, 8)
    assert conv2d_output_size(9, 8, 3, padding="valid") == (7, 6)
    assert same_padding(3) == (1, 1, 1, 1)
    assert same_padding(2) == (0, 1, 0, 1)
    assert same_padding((4, 5), dilation=(1, 2)) == (1, 2, 4, 4)
    assert same_padding(2, dilation=3) == (1, 2, 1, 2)


# ------------------------------------------------------------------ errors


def _t(*shape: int, dtype: type = np.float32) -> Tensor:
    return Tensor(np.zeros(shape, dtype=dtype))


def test_integer_input_raises_type_error() -> None:
    with pytest.raises(TypeError, match="conv2d.*int64"):
        F.conv2d(_t(1, 1, 4, 4, dtype=np.int64), _t(1, 1, 3, 3))
    with pytest.raises(TypeError, match="conv2d.*uint8"):
        F.conv2d(_t(1, 1, 4, 4, dtype=np.uint8), _t(1, 1, 3, 3))
    with pytest.raises(TypeError, match="conv2d.*float64.*float32"):
        F.conv2d(_t(1, 1, 4, 4, dtype=np.float64), _t(1, 1, 3, 3))


@pytest.mark.parametrize(
    "xs, ws, bs, kw, pattern",
    [
        ((1, 3, 8, 8), (4, 2, 3, 3), None, {}, r"conv2d.*expects 2 input channels.*has 3"),
        ((1, 4, 8, 8), (4, 3, 3, 3), None, dict(groups=2), r"conv2d.*expects 6.*has 4"),
        ((1, 3, 8, 8), (4, 1, 3, 3), None, dict(groups=2), r"conv2d.*groups=2.*3 channels"),
        ((1, 4, 8, 8), (3, 2, 3, 3), None, dict(groups=2), r"conv2d.*groups=2.*output.*3"),
        ((1, 1, 4, 4), (1, 1, 5, 5), None, {}, r"conv2d.*\(5, 5\).*padded input \(4, 4\)"),
        ((1, 1, 4, 4), (1, 1, 3, 3), None, dict(dilation=3), r"conv2d.*spans \(7, 7\)"),
        ((1, 1, 4, 4), (2, 1, 3, 3), (3,), {}, r"conv2d.*bias.*\(2,\).*\(3,\)"),
        ((1, 1, 4, 4), (2, 1, 3, 3), None, dict(padding="same", stride=2), r"conv2d.*same.*"),
        ((1, 1, 4, 4), (2, 1, 3, 3), None, dict(padding="full"), r"conv2d.*padding.*'full'"),
        ((1, 1, 4, 4), (2, 1, 3, 3), None, dict(stride=0), r"conv2d.*stride.*>= 1"),
        ((1, 1, 4, 4), (2, 1, 3, 3), None, dict(padding=-1), r"conv2d.*padding.*>= 0"),
        ((1, 1, 4, 4), (2, 1, 3, 3), None, dict(groups=0), r"conv2d.*groups"),
        ((4, 4), (2, 1, 3, 3), None, {}, r"conv2d.*4-D.*3-D.*\(4, 4\)"),
        ((1, 1, 4, 4), (2, 3, 3), None, {}, r"conv2d.*weight.*4-D.*\(2, 3, 3\)"),
    ],
)
def test_bad_arguments(xs: tuple, ws: tuple, bs: tuple | None, kw: dict, pattern: str) -> None:
    b = None if bs is None else _t(*bs)
    with pytest.raises(ValueError, match=pattern):
        F.conv2d(_t(*xs), _t(*ws), b, **kw)


# ------------------------------------------------------------------ GPU parity


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(6))
def test_cuda_matches_numpy(dtype: type, seed: int) -> None:
    rng = np.random.default_rng(seed)
    xs, ws, kw = _random_config(rng)
    x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    arrays = [a.astype(dtype) for a in (x, w, b)]
    res = {}
    for name in ("numpy", "cuda"):
        ts = [Tensor(B.to_backend(a, name), requires_grad=True) for a in arrays]
        y = F.conv2d(*ts, **kw)
        g = B.to_backend(np.linspace(-1, 1, y.numel()).reshape(y.shape).astype(dtype), name)
        y.backward(g)
        res[name] = [y.numpy()] + [t.grad.numpy() for t in ts]
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    for a, c in zip(res["cuda"], res["numpy"]):
        np.testing.assert_allclose(a, c, **tol)


# ------------------------------------------------------------------ NumPy algorithms vs reference
#
# Each NumPy algorithm runs through the public primitives (``nconv.conv2d_forward`` with
# ``algorithm=`` and ``workspace_bytes=``, ``nconv.conv2d_backward`` with ``input_grad=``) and
# is compared with :mod:`gpucnn.backend.numpy_ops.conv.reference` (im2col + GEMM, dx by
# col2im). ``workspace_bytes=0`` gives the smallest chunks: one sample (frame), one output row
# (batch-innermost) or one tile row (Winograd) per chunk.


def _case(xs: tuple, ws: tuple, kw: dict, dtype: type = np.float64) -> tuple:
    """``(geom, x, w, b, dy)`` of a case, random and reproducible."""
    g = Conv2dGeometry.create(xs, ws, **kw)
    rng = np.random.default_rng(sum(xs) + sum(ws) + len(kw))
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in (xs, ws, ws[:1]))
    dy = rng.standard_normal(g.output_shape).astype(dtype)
    return g, x, w, b, dy


def _reference(g: Conv2dGeometry, x, w, b, dy) -> tuple:  # noqa: ANN001
    """``(y, dx, dW)`` by the reference: im2col + GEMM, dx by GEMM + col2im."""
    y, cols = reference.forward(x, w, b, g)
    dx, dw = reference.backward(dy, cols, w, g, True, True, "col2im")
    return y, dx, dw


def _dx_paths(g: Conv2dGeometry, algorithm: str) -> list:
    """Every ``input_grad`` an algorithm takes for ``g`` (``None``: the rule)."""
    if algorithm == "winograd":  # its dx is always its own transposed correlation
        return [None, "transposed"]
    return [None, "col2im"] + (["transposed"] if transposed_path_applies(g) else [])


def _assert_close(got, want, tol: float, scaled: bool = False, what: str = "") -> None:  # noqa: ANN001
    """Same shape and dtype, and within ``tol`` (``atol`` relative to the largest value of
    ``want`` when ``scaled``)."""
    assert got.shape == want.shape and got.dtype == want.dtype, what
    atol = tol * np.abs(want).max() if scaled and want.size else tol
    np.testing.assert_allclose(got, want, rtol=tol, atol=atol, err_msg=what)


def _check_algorithm(
    xs: tuple,
    ws: tuple,
    kw: dict,
    algorithm: str,
    workspace_bytes: int | None = None,
    dtype: type = np.float64,
    tol: float = 1e-11,
    scaled: bool = False,
) -> ConvSaved:
    """``algorithm``'s y, and its dx by every path it has, and dW equal the reference's;
    returns what its forward saved."""
    g, x, w, b, dy = _case(xs, ws, kw, dtype)
    want = _reference(g, x, w, b, dy)
    y, saved = nconv.conv2d_forward(
        x, w, b, g, algorithm=algorithm, workspace_bytes=workspace_bytes
    )
    assert saved.algorithm == algorithm
    _assert_close(y, want[0], tol, scaled, "y")
    for path in _dx_paths(g, algorithm):
        dx, dw = nconv.conv2d_backward(dy, g, saved, True, True, input_grad=path)
        _assert_close(dx, want[1], tol, scaled, f"dx, input_grad={path}")
        _assert_close(dw, want[2], tol, scaled, f"dW, input_grad={path}")
    return saved


def _primitive_gradient_check(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    g: Conv2dGeometry,
    algorithm: str,
    workspace_bytes: int | None = 0,
    eps: float = 1e-6,
) -> None:
    """``conv2d_backward`` of one algorithm (every dx path) against float64 central differences
    of its ``conv2d_forward``: the gradients of ``sum(r * y)`` for a fixed random ``r``."""
    r = np.random.default_rng(0).standard_normal(g.output_shape)

    def loss() -> float:
        y = nconv.conv2d_forward(
            x, w, b, g, False, False, algorithm=algorithm, workspace_bytes=workspace_bytes
        )[0]
        return float((y * r).sum())

    numeric = []
    for a in [x, w] + ([] if b is None else [b]):
        num = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            old = a[i]
            a[i] = old + eps
            fp = loss()
            a[i] = old - eps
            fm = loss()
            a[i] = old
            num[i] = (fp - fm) / (2 * eps)
        numeric.append(num)
    y, saved = nconv.conv2d_forward(
        x, w, b, g, algorithm=algorithm, workspace_bytes=workspace_bytes
    )
    assert saved.algorithm == algorithm
    if b is not None:  # y is linear in b: this checks the bias the forward fused in
        np.testing.assert_allclose(r.sum(axis=(0, 2, 3)), numeric[2], rtol=1e-5, atol=1e-6)
    for path in _dx_paths(g, algorithm):
        dx, dw = nconv.conv2d_backward(r, g, saved, True, True, input_grad=path)
        for name, got, num in (("dx", dx, numeric[0]), ("dW", dw, numeric[1])):
            np.testing.assert_allclose(
                got, num, rtol=1e-5, atol=1e-6, err_msg=f"{algorithm} {name}, input_grad={path}"
            )


@pytest.mark.parametrize(
    "algorithm, xs, ws, kw, bias",
    [
        ("batch_inner", (3, 2, 5, 6), (4, 2, 3, 2), dict(stride=(2, 1), padding=(1, 2)), True),
        ("batch_inner", (3, 2, 5, 6), (4, 2, 3, 2), dict(padding="same", dilation=2), True),
        ("winograd", (2, 3, 5, 6), (2, 3, 3, 3), dict(padding=1), True),
        ("winograd", (2, 3, 5, 6), (2, 3, 3, 3), dict(padding=(0, 2)), False),
        ("frame", (2, 2, 5, 6), (3, 2, 3, 2), dict(padding=(0, 1, 2, 1), dilation=(2, 1)), True),
        ("frame", (2, 4, 5, 5), (4, 2, 3, 3), dict(padding=1, groups=2), False),
        ("reference", (2, 3, 5, 6), (6, 1, 3, 3), dict(groups=3, padding=1, stride=2), True),
    ],
    ids=[
        "batch_inner-strided_pair_pads",
        "batch_inner-same_dilated",
        "winograd-pad1",
        "winograd-pair_pads_no_bias",
        "frame-uneven_pads_dilated",
        "frame-grouped_no_bias",
        "reference-depthwise_x2_strided",
    ],
)
def test_algorithm_gradient_check(algorithm, xs, ws, kw, bias) -> None:  # noqa: ANN001
    """Each algorithm's own forward/backward pair (smallest chunks) is consistent."""
    g, x, w, b, _ = _case(xs, ws, kw)
    _primitive_gradient_check(x, w, b if bias else None, g, algorithm)


@pytest.mark.parametrize("algorithm", ["reference", "frame", "batch_inner"])
@pytest.mark.parametrize(
    "xs, ws, kw, rule",
    [
        ((2, 4, 6, 5), (4, 4, 3, 3), dict(padding=1), "transposed"),
        ((1, 3, 7, 6), (3, 3, 2, 2), dict(padding="same", dilation=2), "transposed"),
        ((2, 4, 5, 5), (4, 2, 3, 2), dict(padding=(1, 0), groups=2), "transposed"),
        ((1, 2, 6, 6), (2, 2, 3, 3), dict(padding=3), "col2im"),  # pads wider than the kernel
    ],
)
def test_input_grad_paths_agree(xs, ws, kw, rule, algorithm) -> None:  # noqa: ANN001
    """dx of stride-1 convs via im2col(dy) + GEMM ("transposed") equals GEMM + col2im on each
    algorithm that has both; the rule takes the transposed path where the pads fit inside
    the kernel, and asking for it where they do not is an error."""
    g, x, w, b, dy = _case(xs, ws, kw)
    assert geo_mod.input_grad_path(g) == rule
    dx_ref = _reference(g, x, w, b, dy)[1]
    saved = nconv.conv2d_forward(x, w, b, g, need_dw=False, algorithm=algorithm)[1]
    for path in (None, "col2im", "transposed"):
        if path == "transposed" and rule == "col2im":
            with pytest.raises(ValueError, match="input_grad='transposed' needs stride 1"):
                nconv.conv2d_backward(dy, g, saved, True, False, input_grad=path)
            continue
        dx, dw = nconv.conv2d_backward(dy, g, saved, True, False, input_grad=path)
        assert dw is None
        np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("algorithm", nconv.ALGORITHMS)
@pytest.mark.parametrize(
    "bias, need_dx, need_dw",
    [(True, False, True), (True, True, False), (False, True, False), (True, False, False)],
    ids=["no_dx", "only_dx", "no_bias_only_dx", "none"],
)
@pytest.mark.parametrize("xs", [(3, 4, 6, 6), (3, 4, 6, 7)], ids=["6x6", "6x7"])
def test_algorithm_partial_grads(xs, bias, need_dx, need_dw, algorithm) -> None:  # noqa: ANN001
    """Each algorithm keeps and computes exactly the gradients that are needed."""
    g, x, w, b, dy = _case(xs, (5, 4, 3, 3), dict(padding=1))
    b = b if bias else None
    y_ref, dx_ref, dw_ref = _reference(g, x, w, b, dy)
    y, saved = nconv.conv2d_forward(x, w, b, g, need_dx, need_dw, algorithm=algorithm)
    assert saved.algorithm == algorithm
    assert (saved.weight is None) == (not need_dx) and (saved.data is None) == (not need_dw)
    _assert_close(y, y_ref, 1e-10, scaled=True)
    dx, dw = nconv.conv2d_backward(dy, g, saved, need_dx, need_dw)
    assert (dx is None) == (not need_dx) and (dw is None) == (not need_dw)
    for got, want in ((dx, dx_ref), (dw, dw_ref)):
        if got is not None:
            _assert_close(got, want, 1e-10, scaled=True)


@pytest.mark.parametrize("algorithm", nconv.ALGORITHMS)
def test_algorithm_empty_batch(algorithm: str) -> None:
    """An empty batch through each algorithm gives empty ``y``/``dx`` and a zero ``dW`` (as
    PyTorch); a plain 1x1 conv of an empty batch through autograd too."""
    xt = Tensor(np.zeros((0, 3, 6, 6)), requires_grad=True)
    wt = Tensor(np.ones((4, 3, 1, 1)), requires_grad=True)
    F.conv2d(xt, wt).sum().backward()
    assert xt.grad.shape == (0, 3, 6, 6)
    np.testing.assert_array_equal(wt.grad.numpy(), np.zeros((4, 3, 1, 1)))
    g = Conv2dGeometry.create((0, 3, 6, 6), (4, 3, 3, 3), padding=1)
    x, w, b = np.zeros((0, 3, 6, 6)), np.ones((4, 3, 3, 3)), np.ones(4)
    for ws in (None, 0):
        y, saved = nconv.conv2d_forward(x, w, b, g, algorithm=algorithm, workspace_bytes=ws)
        assert y.shape == (0, 4, 6, 6)
        dx, dw = nconv.conv2d_backward(np.zeros(y.shape), g, saved, True, True)
        assert dx.shape == (0, 3, 6, 6)
        np.testing.assert_array_equal(dw, np.zeros((4, 3, 3, 3)))


# ------------------------------------------------------------------ NumPy frame (wide) algorithm

WIDE_CASES = (
    GRAD_CASES
    + [
        ((3, 2, 9, 8), (4, 2, 4, 3), dict(padding="same", dilation=(2, 1))),  # asymmetric same
        ((2, 4, 11, 10), (6, 2, 3, 3), dict(stride=(3, 2), padding=(2, 1), groups=2)),
        ((2, 3, 7, 9), (5, 3, 5, 5), dict(padding=2)),  # LeNet-like, few output channels
        ((3, 6, 8, 8), (6, 6, 3, 3), dict(padding=1)),  # ResNet-like: transposed dx route
        ((3, 4, 8, 8), (8, 4, 3, 3), dict(stride=2, padding=1)),  # ResNet transition
        ((2, 3, 6, 6), (3, 1, 3, 3), dict(padding="same", groups=3)),  # depthwise, transposed dx
    ]
    + [_random_config(np.random.default_rng(100 + s)) for s in range(30)]
)


@pytest.mark.parametrize("xs, ws, kw", WIDE_CASES, ids=_ids(WIDE_CASES))
def test_frame_matches_reference(xs, ws, kw) -> None:  # noqa: ANN001
    """The frame-layout algorithm (y, dx by every path, dW), one sample per chunk so that a
    multi-sample batch takes several chunks, equals the reference; where neither Winograd nor
    the batch-innermost layout takes a conv, the rule runs it on the frame layout unless it is
    a plain 1x1 (no im2col at all) or garbage columns would outnumber real ones
    (``Wq = ow + (kw-1)*dw // sw > 2*ow``)."""
    _check_algorithm(xs, ws, kw, "frame", workspace_bytes=0)
    g = Conv2dGeometry.create(xs, ws, **kw)
    if not (wg_mod.applies_well(g) or bi_mod.applies_well(g)):
        wide = not g.pointwise and g.ow + (g.kw - 1) * g.dw // g.sw <= 2 * g.ow
        assert nconv.conv2d_algorithm(g) == ("frame" if wide else "reference")


@pytest.mark.parametrize(
    "xs, ws, kw",
    [
        ((5, 6, 14, 14), (16, 6, 5, 5), dict()),  # LeNet conv2: scatter-add dx
        ((5, 8, 8, 8), (8, 8, 3, 3), dict(padding=1)),  # transposed dx
        ((5, 8, 9, 9), (16, 8, 3, 3), dict(padding=1, stride=2)),
    ],
)
def test_frame_float32_stays_float32(xs, ws, kw) -> None:  # noqa: ANN001
    _check_algorithm(xs, ws, kw, "frame", dtype=np.float32, tol=1e-4, scaled=True)


def test_frame_skipped_when_mostly_garbage() -> None:
    g = Conv2dGeometry.create((1, 1, 10, 10), (1, 1, 3, 3))
    assert g.ow == 8 and frame_mod.applies_well(g)  # Wq = 10
    g = Conv2dGeometry.create((1, 1, 10, 10), (1, 1, 3, 3), dilation=4)
    assert g.ow == 2 and not frame_mod.applies_well(g)  # Wq = 10 > 2 * 2
    assert nconv.conv2d_algorithm(g) == "reference"


def test_wide_path_empty_batch_and_torch_parity_resnet_shape() -> None:
    torch = pytest.importorskip("torch")
    y = F.conv2d(Tensor(np.zeros((0, 3, 6, 6))), Tensor(np.ones((4, 3, 3, 3))), padding=1)
    assert y.shape == (0, 4, 6, 6)
    rng = np.random.default_rng(12)
    x, w, b = rng.standard_normal((4, 8, 8, 8)), rng.standard_normal((16, 8, 3, 3)), None
    g = rng.standard_normal((4, 16, 4, 4))
    y, grads = _ours(x, w, b, g, stride=2, padding=1)
    ty, tgrads = _torch_conv(torch, x, w, b, g, stride=2, padding=1)
    for a, r in zip([y, *grads], [ty, *tgrads]):
        np.testing.assert_allclose(a, r, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------ NumPy batch-innermost algorithm

BATCH_INNER_CASES = WIDE_CASES + [
    ((5, 3, 9, 7), (4, 3, 3, 3), dict(padding=1)),  # odd batch, odd sizes, transposed dx
    ((4, 2, 8, 8), (4, 2, 4, 4), dict(padding="same")),  # even kernel: asymmetric same
    ((3, 4, 10, 9), (6, 4, 3, 2), dict(padding="same", dilation=(1, 2))),  # asym, dilated
    ((3, 4, 9, 9), (8, 2, 3, 3), dict(stride=2, padding=1, groups=2)),  # grouped, strided
    ((2, 6, 7, 7), (6, 1, 3, 3), dict(padding=1, groups=6)),  # depthwise
    ((2, 2, 12, 11), (3, 2, 2, 3), dict(stride=(3, 2), dilation=(2, 1), padding=(0, 3))),
]


@pytest.mark.parametrize(
    "workspace", [0, 3000, 1 << 30], ids=["row_chunks", "uneven_chunks", "one"]
)
@pytest.mark.parametrize("xs, ws, kw", BATCH_INNER_CASES, ids=_ids(BATCH_INNER_CASES))
def test_batch_inner_matches_reference(xs, ws, kw, workspace) -> None:  # noqa: ANN001
    """The batch-innermost algorithm (y, dx by every path, dW) equals the reference whatever
    the chunking over output rows (one row per chunk, partial last chunk, one chunk)."""
    _check_algorithm(xs, ws, kw, "batch_inner", workspace_bytes=workspace)


@pytest.mark.parametrize(
    "xs, ws, kw",
    [
        ((4, 6, 8, 8), (6, 6, 3, 3), dict(padding=1)),  # transposed dx qualifies
        ((3, 4, 7, 6), (4, 4, 2, 3), dict(padding="same", dilation=2)),
        ((3, 4, 6, 6), (4, 2, 3, 3), dict(padding=1, groups=2)),
    ],
)
def test_batch_inner_dx_routes_agree(xs, ws, kw) -> None:  # noqa: ANN001
    """dx as a batch-innermost correlation of dy (the rule's pick here) equals the GEMM +
    scatter-add route and the reference, one output row per chunk."""
    g, x, w, b, dy = _case(xs, ws, kw)
    assert geo_mod.input_grad_path(g) == "transposed"
    dx_ref = _reference(g, x, w, b, dy)[1]
    saved = nconv.conv2d_forward(x, w, b, g, algorithm="batch_inner", workspace_bytes=0)[1]
    for path in ("transposed", "col2im"):
        dx = nconv.conv2d_backward(dy, g, saved, True, False, input_grad=path)[0]
        np.testing.assert_allclose(dx, dx_ref, rtol=1e-11, atol=1e-11, err_msg=path)


@pytest.mark.parametrize(
    "xs, ws, kw",
    [
        ((16, 6, 14, 14), (16, 6, 5, 5), dict()),  # LeNet conv2
        ((8, 16, 8, 8), (16, 16, 3, 3), dict(padding=1)),  # ResNet stage 3
        ((8, 8, 8, 8), (16, 8, 3, 3), dict(stride=2, padding=1)),  # ResNet transition
    ],
)
def test_batch_inner_float32(xs, ws, kw) -> None:  # noqa: ANN001
    _check_algorithm(xs, ws, kw, "batch_inner", dtype=np.float32, tol=1e-4, scaled=True)


def _g(xs: tuple, ws: tuple, **kw) -> Conv2dGeometry:  # noqa: ANN003
    return Conv2dGeometry.create(xs, ws, **kw)


@pytest.mark.parametrize(
    "geom, algorithm",
    [
        # (tests/test_conv_primitives.py::test_numpy_algorithm_rule has the benchmark shapes)
        (_g((128, 16, 8, 8), (16, 16, 3, 3), padding=1), "batch_inner"),  # 2/10 garbage
        (_g((128, 3, 10, 10), (4, 3, 3, 3), dilation=4), "batch_inner"),  # mostly garbage
        (_g((1, 3, 10, 10), (4, 3, 3, 3), dilation=4), "reference"),  # ... and short runs
        (_g((128, 64, 8, 8), (64, 64, 3, 3), padding=2, dilation=2), "batch_inner"),  # dilated
        (_g((128, 64, 8, 8), (64, 64, 5, 5), padding=2), "batch_inner"),  # 5x5
        (_g((128, 64, 8, 8), (64, 64, 3, 3), padding=3), "batch_inner"),  # pads > 2
        (_g((16, 64, 8, 8), (64, 64, 3, 3), padding=1), "batch_inner"),  # runs of 64 tiles
        (_g((128, 128, 4, 4), (128, 128, 3, 3), padding=1), "batch_inner"),  # 4x4 images
    ],
    ids=["few_channels", "garbage", "garbage_n1", "dilated", "5x5", "pad3", "n16", "4x4"],
)
def test_numpy_algorithm_rule_more_shapes(geom: Conv2dGeometry, algorithm: str) -> None:
    """Small images with many garbage frame columns take the batch-innermost layout; 3x3
    stride-1 convs take Winograd only with >= 24 channels, >= 7-wide images, pads <= 2 and
    enough tiles per run."""
    assert nconv.conv2d_algorithm(geom) == algorithm


def test_batch_inner_torch_parity_and_empty_batch() -> None:
    """The default rule sends these shapes through the batch-innermost layout; PyTorch agrees."""
    torch = pytest.importorskip("torch")

    y = F.conv2d(Tensor(np.zeros((0, 3, 6, 6))), Tensor(np.ones((4, 3, 3, 3))), padding=1)
    assert y.shape == (0, 4, 6, 6)
    rng = np.random.default_rng(13)
    for xs, ws, kw in [
        ((20, 6, 14, 14), (16, 6, 5, 5), dict()),
        ((9, 8, 8, 8), (8, 8, 3, 3), dict(padding=1)),
        ((9, 8, 8, 8), (16, 8, 3, 3), dict(padding=1, stride=2)),
        ((9, 4, 6, 7), (6, 2, 2, 3), dict(padding="same", groups=2, dilation=(2, 1))),
    ]:
        geom = Conv2dGeometry.create(xs, ws, **kw)
        assert nconv.conv2d_algorithm(geom) == "batch_inner"
        x, w, b = (rng.standard_normal(s) for s in (xs, ws, ws[:1]))
        g = rng.standard_normal(geom.output_shape)
        ours = _ours(x, w, b, g, **kw)
        theirs = _torch_conv(torch, x, w, b, g, **kw)
        for a, r in zip([ours[0], *ours[1]], [theirs[0], *theirs[1]]):
            np.testing.assert_allclose(a, r, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------ NumPy Winograd F(2x2, 3x3)

WINOGRAD_CASES = [
    ((1, 1, 5, 5), (1, 1, 3, 3), dict(padding=1)),  # batch 1, one channel, odd size
    ((2, 3, 8, 8), (4, 3, 3, 3), dict(padding=1)),  # even size: whole tiles
    ((3, 2, 7, 6), (5, 2, 3, 3), dict()),  # padding 0: odd x even output
    ((2, 4, 6, 9), (3, 4, 3, 3), dict(padding=2)),  # padding 2: dx without padding
    ((2, 5, 9, 7), (6, 5, 3, 3), dict(padding="same")),
    ((1, 6, 3, 3), (2, 6, 3, 3), dict()),  # 1x1 output: one partial tile
    ((2, 3, 4, 5), (2, 3, 3, 3), dict(padding=(2, 0))),  # asymmetric pair
    ((2, 3, 5, 6), (4, 3, 3, 3), dict(padding=(0, 1, 2, 1))),  # (top, bottom, left, right)
    ((1, 2, 6, 6), (3, 2, 3, 3), dict(padding=3)),  # pads > 2: Winograd does not apply
    ((3, 70, 5, 4), (33, 70, 3, 3), dict(padding=1)),  # many channels
    ((2, 17, 10, 11), (70, 17, 3, 3), dict(padding=1)),
]


@pytest.mark.parametrize("keep", [True, False], ids=["kept_v", "recomputed_v"])
@pytest.mark.parametrize("workspace", [0, 1 << 30], ids=["row_chunks", "one_chunk"])
@pytest.mark.parametrize("xs, ws, kw", WINOGRAD_CASES, ids=_ids(WINOGRAD_CASES))
def test_winograd_matches_reference(monkeypatch, xs, ws, kw, workspace, keep) -> None:  # noqa: ANN001
    """Winograd forward, dx and dW equal the reference, one tile row per chunk or all at once,
    with the transformed input kept by the forward or recomputed from P4 (KEEP_MAX_BYTES:
    the cap on what the forward keeps, no parameter of the primitive)."""
    monkeypatch.setattr(wg_mod, "KEEP_MAX_BYTES", (1 << 40) if keep else 0)
    g = Conv2dGeometry.create(xs, ws, **kw)
    if kw.get("padding") == 3:  # top/left pads > 2 (dx would need negative pads)
        assert not wg_mod.applies(g)
        x, w = np.zeros(xs), np.zeros(ws)
        with pytest.raises(ValueError, match="algorithm 'winograd' needs a 3x3 kernel"):
            nconv.conv2d_forward(x, w, None, g, algorithm="winograd", workspace_bytes=workspace)
        return
    saved = _check_algorithm(xs, ws, kw, "winograd", workspace, tol=1e-10, scaled=True)
    assert isinstance(saved.data, wg_mod.KeptInput) == keep


@pytest.mark.parametrize("run", [1, 2])
@pytest.mark.parametrize("xs, ws, kw", WINOGRAD_CASES[:6], ids=_ids(WINOGRAD_CASES[:6]))
def test_winograd_batch_chunks_match_reference(monkeypatch, xs, ws, kw, run) -> None:  # noqa: ANN001
    """Tile rows split over batch chunks of ``run`` samples (uneven last chunk included;
    MIN_BATCH_RUN is the rule's floor, no parameter): the output and every gradient still
    equal the reference."""
    monkeypatch.setattr(wg_mod, "MIN_BATCH_RUN", run)
    assert wg_mod.batch_per_chunk(4, 3, 5, 8, 0) == run
    xs = (5,) + tuple(xs[1:])
    _check_algorithm(xs, ws, kw, "winograd", workspace_bytes=0, tol=1e-10, scaled=True)


@pytest.mark.parametrize("hw, pads", [((6, 7), (1, 1)), ((5, 5), (0, 2)), ((8, 8), (2, 0))])
@pytest.mark.parametrize("run", [2, 64])
def test_winograd_weight_grad_kept_equals_recomputed(monkeypatch, hw, pads, run) -> None:  # noqa: ANN001
    """weight_grad from the V the forward kept equals weight_grad from P4 (odd sizes, batch
    chunks included) and the kept V is exactly the input transform of each chunk."""
    wg = wg_mod
    monkeypatch.setattr(wg, "MIN_BATCH_RUN", run)
    rng = np.random.default_rng(run + hw[0])
    n, c, o = 5, 3, 4
    h, w = hw
    x = rng.standard_normal((n, c, h, w))
    oh, ow = h + 2 * pads[0] - 2, w + 2 * pads[1] - 2
    th, tw = wg.tiles(oh), wg.tiles(ow)
    p4 = wg.polyphase_nchw(x, pads[0], pads[1], th, tw)
    u = wg.filter_transform(rng.standard_normal((o, c, 3, 3)))
    _, kept = wg.conv3x3(p4, u, keep=True, chunk_bytes=0)
    assert kept is not None and len(kept.chunks) == (th if run >= n else th * -(-n // run))
    for i, (t0, t1, n0, n1) in enumerate(kept.chunks):
        np.testing.assert_array_equal(kept.chunk(i), wg._input_transform(p4[..., n0:n1], t0, t1))
    dyt = rng.standard_normal((o, oh, ow, n))
    np.testing.assert_allclose(wg.weight_grad(kept, dyt, 0), wg.weight_grad(p4, dyt, 0), rtol=1e-12)


def test_winograd_kept_buffers_pooled(monkeypatch) -> None:  # noqa: ANN001
    """A kept V's buffer goes back to the pool when the KeptInput dies and the next one of that
    size reuses it; over POOL_MAX_BYTES the oldest buffers are dropped (a size no longer used
    cannot block the pool); clear_buffers empties it."""
    wg = wg_mod
    monkeypatch.setattr(wg, "_pool", [])
    shape, chunks = (2, 2, 3, 2, 3, 4), [(0, 1, 0, 4), (1, 2, 0, 4)]
    a = wg.KeptInput(shape, chunks, np.dtype(np.float32))
    assert a.chunk(1).shape == (4, 4, 2, 1, 2, 4)
    assert wg.KeptInput.nbytes(shape, 4) == a._buf.nbytes
    buf = a._buf
    del a
    b = wg.KeptInput(shape, chunks, np.dtype(np.float32))
    assert b._buf is buf
    assert wg._pool_take(buf.size, np.float64).dtype == np.float64  # other dtype: a new one
    stale = np.empty(buf.size // 2 + 1, np.float32)  # a size no longer used
    wg._pool_give(stale)
    monkeypatch.setattr(wg, "POOL_MAX_BYTES", buf.nbytes)
    del b
    assert len(wg._pool) == 1 and wg._pool[0] is buf  # the stale one aged out
    monkeypatch.setattr(wg, "POOL_MAX_BYTES", buf.nbytes - 1)
    wg._pool_give(np.empty(buf.size, np.float32))
    assert wg._pool == []  # alone over the cap: dropped
    wg._pool_give(np.empty(8, np.float32))
    wg.clear_buffers()
    assert wg._pool == []


def test_winograd_kept_v_survives_retain_graph() -> None:
    """backward twice on a retained graph: the kept V is still there the second time."""

    rng = np.random.default_rng(5)
    n, c, h = 128, 32, 8
    geom = Conv2dGeometry.create((n, c, h, h), (c, c, 3, 3), padding=1)
    assert nconv.conv2d_algorithm(geom) == "winograd"
    x = Tensor(rng.standard_normal((n, c, h, h)))
    w = Tensor(rng.standard_normal((c, c, 3, 3)) * 0.1, requires_grad=True)
    y = (F.conv2d(x, w, padding=1) ** 2).sum()
    y.backward(retain_graph=True)
    first = w.grad.numpy().copy()
    w.grad = None
    F.conv2d(Tensor(rng.standard_normal((n, c, h, h))), w, padding=1)  # another forward between
    y.backward()
    np.testing.assert_allclose(w.grad.numpy(), first, rtol=1e-12)


def test_winograd_batch_per_chunk_rule() -> None:
    """No split while one tile row fits CHUNK_BYTES; otherwise chunks of >= MIN_BATCH_RUN."""
    wg = wg_mod
    assert wg.batch_per_chunk(32, 8, 128, 4) == wg.CHUNK_BYTES // (16 * 32 * 8 * 4)
    assert wg.batch_per_chunk(1, 1, 128, 4) == 128
    assert wg.batch_per_chunk(4096, 64, 128, 4) == wg.MIN_BATCH_RUN


@pytest.mark.parametrize(
    "xs, ws, kw",
    [
        ((4, 16, 8, 8), (16, 16, 3, 3), dict(padding=1)),
        ((3, 5, 7, 9), (6, 5, 3, 3), dict()),
        ((1, 32, 5, 5), (8, 32, 3, 3), dict(padding=2)),
    ],
)
def test_winograd_float32(xs, ws, kw) -> None:  # noqa: ANN001
    _check_algorithm(xs, ws, kw, "winograd", dtype=np.float32, tol=1e-4, scaled=True)


@pytest.mark.parametrize(
    "xs, ws, kw",
    [
        ((2, 4, 8, 8), (4, 4, 3, 3), dict(padding=1, stride=2)),
        ((2, 4, 8, 8), (4, 2, 3, 3), dict(padding=1, groups=2)),
        ((2, 4, 9, 9), (4, 4, 3, 3), dict(padding=2, dilation=2)),
        ((2, 4, 8, 8), (4, 4, 5, 5), dict(padding=2)),
    ],
)
def test_winograd_requested_on_unsupported_conv_raises(xs, ws, kw) -> None:  # noqa: ANN001
    """Strided, grouped, dilated or non-3x3 convs: "winograd" is refused, and the rule never
    picks it."""
    g, x, w, b, _ = _case(xs, ws, kw)
    assert not wg_mod.applies(g) and nconv.conv2d_algorithm(g) != "winograd"
    with pytest.raises(ValueError, match="algorithm 'winograd' needs a 3x3 kernel, stride 1"):
        nconv.conv2d_forward(x, w, b, g, algorithm="winograd")


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize(
    "xs, ws",
    [((16, 32, 16, 16), (32, 32, 3, 3)), ((32, 64, 8, 8), (64, 64, 3, 3))],
    ids=["r32", "r64"],
)
def test_winograd_resnet_shapes_float32_and_torch(xs, ws) -> None:  # noqa: ANN001
    """The default rule sends ResNet-20's 3x3 convs through Winograd: float32 stays within 1e-5
    (relative to the largest value) of float64, and float64 matches PyTorch."""
    n, c, h, w = xs
    assert nconv.conv2d_algorithm(Conv2dGeometry.create(xs, ws, padding=1)) == "winograd"
    rng = np.random.default_rng(31)
    x, wt, b = rng.standard_normal(xs), rng.standard_normal(ws) * 0.1, rng.standard_normal(ws[0])
    g = rng.standard_normal((n, ws[0], h, w))
    y64, g64 = _ours(x, wt, b, g, padding=1)
    y32, g32 = _ours(*(a.astype(np.float32) for a in (x, wt, b, g)), padding=1)
    for ours, ref in zip([y32, *g32], [y64, *g64]):
        assert ours.dtype == np.float32
        err = np.abs(ours.astype(np.float64) - ref).max()
        assert err <= 1e-5 * np.abs(ref).max(), err
    torch = pytest.importorskip("torch")
    ty, tgrads = _torch_conv(torch, x, wt, b, g, padding=1)
    for a, r in zip([y64, *g64], [ty, *tgrads]):
        np.testing.assert_allclose(a, r, rtol=1e-10, atol=1e-10 * np.abs(r).max())


@pytest.mark.parametrize("tile", [2, 4, 64])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("crop", [False, True])
def test_from_batch_inner_tiled_transpose(monkeypatch, tile, bias, crop) -> None:  # noqa: ANN001
    """The square-tiled (R, N) -> (N, R) transpose of _from_batch_inner (and its fallbacks on
    cropped views, per-channel rows not divisible by the tile) equals a plain transpose."""
    from gpucnn.backend.numpy_ops import im2col as im

    monkeypatch.setattr(im, "_FROM_TILE", tile)
    rng = np.random.default_rng(tile)
    full = rng.standard_normal((3, 4, 6, 8 if tile < 64 else 128)).astype(np.float32)
    a = full[:, :3, :5] if crop else full
    add = rng.standard_normal((3, 1, 1)).astype(np.float32) if bias else None
    out = np.empty((a.shape[-1],) + a.shape[:-1], np.float32)
    used = im._from_batch_inner_tiled(a, np.empty_like(out), add)
    assert used == (not crop and tile < 64)
    im._from_batch_inner(a, out, add=add)
    ref = np.moveaxis(a, -1, 0) + (0 if add is None else add)
    np.testing.assert_array_equal(out, ref)


# ------------------------------------------------------------------ CUDA (host emulator)
#
# The CUDA primitives (im2col_cn, 2-D GEMMs, col2im_cn) run on the CPU: their kernels built by
# the host emulator from the same .cu files, NumPy (or a recording proxy of it) as ``xp``, the
# dx path chosen by ``input_grad=``. The autograd route (Conv2dFunction on the cuda backend,
# bias gradient included) runs on the simulated CUDA device (gpucnn.testing.simulated_device).


@pytest.fixture
def recorded(emulator):  # noqa: ANN001, ANN201
    """``recorded(xp=np, grid_cap=3, block=64)``: a context manager running the cuda_ops
    launchers on the emulator (the shared ``emulator`` fixture) over ``xp``; it yields the
    list of kernel names launched."""
    from gpucnn.backend.runtime import KernelRuntime, use_runtime

    @contextlib.contextmanager
    def run(xp=np, grid_cap=3, block=64):  # noqa: ANN001, ANN202
        launched: list[str] = []

        def get_kernel(family, name, defines=None):  # noqa: ANN001, ANN202
            launched.append(name)
            return emulator.get_emulated_kernel(family, name, defines)

        rt = KernelRuntime(xp, get_kernel, grid_cap=grid_cap, block=block, name="emulated cuda")
        with use_runtime(rt):
            yield launched

    return run


CUDA_CASES = (
    GRAD_CASES
    + [
        ((3, 4, 6, 6), (6, 4, 3, 3), dict(padding=1)),
        ((2, 6, 7, 7), (6, 1, 3, 3), dict(padding=1, groups=6)),  # depthwise
        ((2, 6, 7, 7), (12, 2, 3, 3), dict(padding=1, groups=3, stride=2)),
        (
            (2, 4, 9, 8),
            (6, 2, 3, 2),
            dict(stride=(2, 1), dilation=(1, 2), padding=(1, 0), groups=2),
        ),
        ((3, 2, 9, 8), (4, 2, 4, 3), dict(padding="same", dilation=(2, 1))),  # asymmetric same
        ((2, 3, 6, 5), (4, 3, 2, 2), dict(padding=(0, 2, 1, 0))),  # explicit 4-tuple pads
        ((1, 4, 5, 6), (6, 4, 1, 1), dict()),  # 1x1, one sample: x is its own columns
        ((3, 4, 5, 6), (6, 2, 1, 1), dict(groups=2)),  # grouped 1x1
        ((2, 3, 7, 7), (5, 3, 1, 1), dict(stride=2, padding=1)),  # 1x1 through im2col_cn
    ]
    + [_random_config(np.random.default_rng(300 + s)) for s in range(12)]
)


def _cuda_primitives(recorded, g: Conv2dGeometry, x, w, b, dy, input_grad=None, **launch) -> tuple:  # noqa: ANN001, ANN003, E501
    """``(y, dx, dW, db, saved, forward kernels, backward kernels)`` by the CUDA primitives
    (``cconv.conv2d_forward`` / ``conv2d_backward``, ``bias_grad_nchw``) on the emulator."""
    from gpucnn.backend.cuda_ops.bias import bias_grad_nchw

    with recorded(**launch) as launched:
        y, saved = cconv.conv2d_forward(x, w, b, g)
        forward = set(launched)
        launched.clear()
        dx, dw = cconv.conv2d_backward(dy, g, saved, True, True, input_grad=input_grad)
        backward = set(launched)
        db = bias_grad_nchw(dy)
    return y, dx, dw, db, saved, forward, backward


@pytest.mark.parametrize("dx", ["rule", "col2im", "transposed"])
@pytest.mark.parametrize("xs, ws, kw", CUDA_CASES, ids=_ids(CUDA_CASES))
def test_cuda_primitives_match_reference_emulated(recorded, xs, ws, kw, dx) -> None:  # noqa: ANN001
    """The CUDA primitives (forward, dx by col2im_cn or by the flipped-kernel correlation, dW;
    db by bias_grad_nchw) through the emulated kernels equal the NumPy reference; they launch
    only the batch-in-columns im2col kernels: im2col_cn for y unless x is its own columns
    (1x1, one sample), then im2col_cn of dy for the transposed dx, col2im_cn for the other."""
    g, x, w, b, dy = _case(xs, ws, kw)
    path = None if dx == "rule" else dx
    if path == "transposed" and not transposed_path_applies(g):
        with recorded():
            saved = cconv.conv2d_forward(x, w, b, g)[1]
            with pytest.raises(ValueError, match="input_grad='transposed' needs stride 1"):
                cconv.conv2d_backward(dy, g, saved, True, True, input_grad=path)
        return
    y, gx, gw, db, saved, forward, backward = _cuda_primitives(recorded, g, x, w, b, dy, path)
    assert saved.algorithm == "im2col_gemm"
    want = _reference(g, x, w, b, dy) + (dy.sum(axis=(0, 2, 3)),)
    for name, got, ref in zip(("y", "dx", "dW", "db"), (y, gx, gw, db), want):
        _assert_close(got, ref, 1e-11, what=name)
    assert not (forward | backward) & {"im2col_f64", "col2im_f64"}, "CUDA uses the _cn kernels"
    x_is_cols = g.pointwise and g.n == 1
    assert ("im2col_cn_f64" in forward) == (not x_is_cols)
    if geo_mod.input_grad_path(g, path) == "transposed":
        assert "im2col_cn_f64" in backward and "col2im_cn_f64" not in backward
    else:
        assert "im2col_cn_f64" not in backward  # dW from the saved columns
        assert ("col2im_cn_f64" in backward) == (not x_is_cols)


@pytest.mark.parametrize(
    "xs, ws, kw",
    [
        ((3, 4, 8, 8), (8, 4, 3, 3), dict(padding=1)),
        ((2, 6, 9, 9), (6, 2, 3, 3), dict(stride=2, padding=1, groups=3)),
        ((4, 8, 5, 5), (16, 8, 1, 1), dict()),
    ],
)
def test_cuda_primitives_float32_emulated(recorded, xs, ws, kw) -> None:  # noqa: ANN001
    g, x, w, b, dy = _case(xs, ws, kw, np.float32)
    *got, _, forward, _ = _cuda_primitives(recorded, g, x, w, b, dy, grid_cap=None, block=128)
    assert "im2col_cn_f32" in forward
    want = _reference(g, x, w, b, dy) + (dy.sum(axis=(0, 2, 3)),)
    for a, r in zip(got, want):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(r).max()))


@pytest.fixture
def simulated_cuda(emulator):  # noqa: ANN001, ANN201
    """``run(fn, *args)``: ``fn(*args)`` with the cuda backend active on the simulated CUDA
    device (the autograd route of conv2d on the cuda backend, its kernels on the host
    emulator)."""
    from gpucnn.testing import simulated_device

    def run(fn, *args):  # noqa: ANN001, ANN002, ANN202
        with simulated_device():
            return fn(*args)

    return run


def _autograd(arrays: list, needs: tuple, kw: dict, g: np.ndarray, name: str) -> list:
    """F.conv2d + backward on backend ``name``: y then the grads of the tensors that need one."""
    ts = [Tensor(B.to_backend(a, name), requires_grad=r) for a, r in zip(arrays, needs)]
    y = F.conv2d(*ts, **kw)
    y.backward(B.to_backend(g, name))
    return [y.numpy()] + [t.grad.numpy() for t in ts if t.requires_grad]


@pytest.mark.parametrize(
    "bias, needs",
    [
        (True, (True, False, False)),
        (True, (False, True, False)),
        (True, (False, False, True)),
        (False, (True, False)),
        (False, (False, True)),
    ],
)
@pytest.mark.parametrize(
    "xs, ws, kw",
    [((2, 4, 6, 6), (6, 2, 3, 3), dict(padding=1, groups=2)), ((2, 3, 5, 4), (4, 3, 1, 1), {})],
)
def test_cuda_route_partial_grads_simulated(simulated_cuda, xs, ws, kw, bias, needs) -> None:  # noqa: ANN001
    """conv2d on the cuda backend computes exactly the gradients that are needed (the bias's
    alone included), as the NumPy backend."""
    _, x, w, b, dy = _case(xs, ws, kw)
    arrays = [x, w, b] if bias else [x, w]
    ref = _autograd(arrays, needs, kw, dy, "numpy")
    got = simulated_cuda(_autograd, arrays, needs, kw, dy, "cuda")
    assert len(got) == len(ref) == 1 + sum(needs)
    for a, r in zip(got, ref):
        np.testing.assert_allclose(a, r, rtol=1e-11, atol=1e-11)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_cuda_route_torch_parity_and_empty_batch_simulated(simulated_cuda) -> None:  # noqa: ANN001
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(21)
    for xs, ws, kw in [
        ((3, 4, 8, 8), (8, 2, 3, 3), dict(stride=2, padding=1, groups=2)),
        ((2, 3, 7, 6), (4, 3, 2, 3), dict(padding="same", dilation=(1, 2))),
        ((2, 4, 5, 5), (6, 4, 1, 1), dict()),
    ]:
        x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
        g = rng.standard_normal(Conv2dGeometry.create(xs, ws, **kw).output_shape)
        ours = simulated_cuda(_autograd, [x, w, b], (True,) * 3, kw, g, "cuda")
        ty, tgrads = _torch_conv(torch, x, w, b, g, **kw)
        for a, r in zip(ours, [ty, *tgrads]):
            np.testing.assert_allclose(a, r, rtol=1e-10, atol=1e-10)
    x, w = np.zeros((0, 3, 6, 6)), np.ones((4, 3, 3, 3))
    dy = np.zeros((0, 4, 6, 6))
    y, gx, gw = simulated_cuda(_autograd, [x, w], (True, True), dict(padding=1), dy, "cuda")
    assert y.shape == (0, 4, 6, 6) and gx.shape == (0, 3, 6, 6)
    np.testing.assert_array_equal(gw, np.zeros((4, 3, 3, 3)))


class _RecordingXp:
    """NumPy as an array module, recording every GEMM (operand shapes and contiguity) and every
    call that returns a new buffer built from an array argument (a copy: its input size)."""

    GEMMS = frozenset({"matmul", "dot", "tensordot", "einsum", "inner", "vdot", "outer", "kron"})

    def __init__(self) -> None:
        self.gemms: list[tuple[str, list[tuple], bool]] = []
        self.copies: list[tuple[str, int]] = []

    def __getattr__(self, name: str):  # noqa: ANN204
        attr = getattr(np, name)
        if not callable(attr) or isinstance(attr, type):
            return attr

        def call(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            arrays = [a for a in args if isinstance(a, np.ndarray)]
            out = attr(*args, **kwargs)
            if name in self.GEMMS:
                ops = arrays + [kwargs["out"]] if "out" in kwargs else arrays
                shapes = [a.shape for a in ops]
                # cuBLAS takes a 2-D C- or F-contiguous operand as is (a transpose flag); out
                # must be C-contiguous, or CuPy computes into a temporary and copies
                ok = all(a.flags.c_contiguous or a.flags.f_contiguous for a in arrays)
                ok = ok and ("out" not in kwargs or kwargs["out"].flags.c_contiguous)
                self.gemms.append((name, shapes, ok))
            elif isinstance(out, np.ndarray):
                for a in arrays:
                    if a.size and not np.may_share_memory(out, a):
                        self.copies.append((name, a.size))
            return out

        return call


GEMM_CASES = [
    ((2, 4, 6, 6), (6, 4, 3, 3), dict(padding=1)),
    ((2, 6, 8, 7), (8, 3, 3, 2), dict(padding="same", groups=2)),  # grouped, asymmetric
    ((3, 4, 9, 9), (6, 4, 3, 3), dict(stride=2, padding=1)),  # strided: col2im only
    ((2, 6, 7, 7), (6, 1, 3, 3), dict(padding=1, groups=6)),  # depthwise
    ((3, 4, 5, 6), (6, 2, 1, 1), dict(groups=2)),  # 1x1
    ((1, 4, 5, 6), (6, 4, 1, 1), dict()),  # 1x1, one sample
]
GEMM_PARAMS = [
    pytest.param(xs, ws, kw, dx, id=f"{xs}-{ws}-{kw}-{dx}")
    for xs, ws, kw in GEMM_CASES
    for dx in ("col2im", "transposed")
    if dx == "col2im" or transposed_path_applies(Conv2dGeometry.create(xs, ws, **kw))
]


@pytest.mark.parametrize("xs, ws, kw, dx", GEMM_PARAMS)
def test_cuda_gemms_are_2d_without_copies(recorded, xs, ws, kw, dx) -> None:  # noqa: ANN001
    """Every GEMM the CUDA primitives issue is 2-D on C-/F-contiguous operands (what cuBLAS
    takes without a copy and where CuPy honours TF32): one per group for y, dW and dx; no
    array of the size of the columns (im2col_cn of x, or of dy on the transposed dx path) is
    ever copied: the only copies are the NCHW <-> (O, N*L) layout changes and the flipped W."""
    g, x, w, b, dy = _case(xs, ws, kw)
    xp = _RecordingXp()
    y, gx, gw, *_ = _cuda_primitives(recorded, g, x, w, b, dy, dx, xp=xp)
    for got, ref in zip((y, gx, gw), _reference(g, x, w, b, dy)):
        np.testing.assert_allclose(got, ref, rtol=1e-11, atol=1e-11)
    assert len(xp.gemms) == 3 * g.groups  # y, dW, dx: one 2-D GEMM per group each
    for name, shapes, contiguous in xp.gemms:
        assert name == "matmul" and all(len(s) == 2 for s in shapes), (name, shapes)
        assert contiguous, (name, shapes)
    activations = max(g.n * g.c * g.h * g.w, g.n * g.o * g.oh * g.ow, g.o * g.cg * g.kh * g.kw)
    cols = g.c * g.kh * g.kw * g.n * g.oh * g.ow
    if not g.pointwise:
        assert cols > activations  # the check below can tell the columns apart
    if g.pointwise and g.n == 1 and dx == "col2im":
        # (C, 1*H*W) is x itself and y, dy, dx are views: no copies
        assert not xp.copies, xp.copies
    else:
        assert xp.copies, "the layout changes are copies the recorder must see"
        assert max(size for _, size in xp.copies) <= activations, xp.copies
