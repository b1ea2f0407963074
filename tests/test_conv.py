"""functional.conv2d: gradient checks for every index-math option, PyTorch parity, errors."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

import gpucnn.functional as F
from gpucnn import backend as B
from gpucnn.backend import geometry as geo_mod
from gpucnn.backend.cuda_ops import conv as cconv
from gpucnn.backend.numpy_ops import conv as nconv
from gpucnn.backend.numpy_ops.conv import batch_inner as bi_mod
from gpucnn.backend.numpy_ops.conv import frame as frame_mod
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
        ((1, 4, 4), (2, 1, 3, 3), None, {}, r"conv2d.*4-D.*\(1, 4, 4\)"),
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
        g = B.to_backend(np.linspace(-1, 1, y.size).reshape(y.shape).astype(dtype), name)
        y.backward(g)
        res[name] = [y.numpy()] + [t.grad.numpy() for t in ts]
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    for a, c in zip(res["cuda"], res["numpy"]):
        np.testing.assert_allclose(a, c, **tol)


@pytest.mark.parametrize(
    "xs, ws, kw",
    [
        ((2, 4, 6, 5), (4, 4, 3, 3), dict(padding=1)),
        ((1, 3, 7, 6), (3, 3, 2, 2), dict(padding="same", dilation=2)),
        ((2, 4, 5, 5), (4, 2, 3, 2), dict(padding=(1, 0), groups=2)),
        ((1, 2, 6, 6), (2, 2, 3, 3), dict(padding=3)),  # pads wider than the kernel: col2im
    ],
)
def test_input_grad_paths_agree(
    monkeypatch: pytest.MonkeyPatch, xs: tuple, ws: tuple, kw: dict
) -> None:
    """dx of stride-1 convs via im2col(dy) + GEMM equals the GEMM + col2im route."""

    rng = np.random.default_rng(9)
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    y = F.conv2d(Tensor(x), Tensor(w), **kw)
    g = rng.standard_normal(y.shape)
    taken = []
    orig = geo_mod.use_transposed_path
    monkeypatch.setattr(
        geo_mod, "use_transposed_path", lambda geom: taken.append(orig(geom)) or taken[-1]
    )
    _, fast = _ours(x, w, None, g, **kw)
    monkeypatch.setattr(geo_mod, "use_transposed_path", lambda geom: False)
    _, slow = _ours(x, w, None, g, **kw)
    assert taken == [kw.get("padding") != 3]
    np.testing.assert_allclose(fast[0], slow[0], rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ NumPy wide (frame) path

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


def _run_paths(monkeypatch, xs, ws, kw, dtype=np.float64):  # noqa: ANN001, ANN202
    """(wide-path results, generic-path results, whether the wide path ran)."""

    # this compares the frame route with the generic one: keep the batch-innermost route out
    monkeypatch.setattr(bi_mod, "_use_batch_inner_path", lambda *a: False)
    rng = np.random.default_rng(sum(xs) + sum(ws))
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in (xs, ws, ws[:1]))
    with no_grad():
        shape = F.conv2d(Tensor(x), Tensor(w), **kw).shape
    g = rng.standard_normal(shape).astype(dtype)
    ran = []
    orig = frame_mod._wide_forward
    monkeypatch.setattr(frame_mod, "_wide_forward", lambda *a: ran.append(1) or orig(*a))
    y, grads = _ours(x, w, b, g, **kw)
    monkeypatch.setattr(frame_mod, "_use_wide_path", lambda *a: False)
    ry, rgrads = _ours(x, w, b, g, **kw)
    monkeypatch.undo()
    return [y, *grads], [ry, *rgrads], bool(ran)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("xs, ws, kw", WIDE_CASES, ids=_ids(WIDE_CASES))
def test_wide_path_matches_generic_path(monkeypatch: pytest.MonkeyPatch, xs, ws, kw) -> None:  # noqa: ANN001
    """NumPy's frame-layout route (forward, dx either way, dW, db) equals im2col + col2im."""

    # small chunks so a multi-sample batch takes several (and a partial last) chunk
    monkeypatch.setattr(frame_mod, "_CHUNK_BYTES", 1)
    wide, ref, ran = _run_paths(monkeypatch, xs, ws, kw)
    # the wide route runs unless the conv is a plain 1x1 (no im2col at all) or garbage
    # columns would outnumber real ones (Wq = ow + (kw-1)*dw // sw > 2*ow)
    sw, dw = (
        geo_mod.pair(kw.get("stride", 1), "s")[1],
        geo_mod.pair(kw.get("dilation", 1), "d")[1],
    )
    ow = wide[0].shape[3]
    plain_1x1 = ws[2:] == (1, 1) and (wide[0].shape[2:] == xs[2:]) and sw == 1
    assert ran == (not plain_1x1 and ow + (ws[3] - 1) * dw // sw <= 2 * ow)
    for a, r in zip(wide, ref):
        assert a.shape == r.shape and a.dtype == r.dtype
        np.testing.assert_allclose(a, r, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize(
    "xs, ws, kw",
    [
        ((5, 6, 14, 14), (16, 6, 5, 5), dict()),  # LeNet conv2: scatter-add dx
        ((5, 8, 8, 8), (8, 8, 3, 3), dict(padding=1)),  # transposed dx
        ((5, 8, 9, 9), (16, 8, 3, 3), dict(padding=1, stride=2)),
    ],
)
def test_wide_path_float32_stays_float32(monkeypatch: pytest.MonkeyPatch, xs, ws, kw) -> None:  # noqa: ANN001
    wide, ref, ran = _run_paths(monkeypatch, xs, ws, kw, dtype=np.float32)
    assert ran
    for a, r in zip(wide, ref):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-4 * np.abs(r).max())


def test_wide_path_skipped_when_mostly_garbage() -> None:

    assert frame_mod._use_wide_path(kw=3, sw=1, dw=1, ow=8)  # Wq = 10
    assert not frame_mod._use_wide_path(kw=3, sw=1, dw=4, ow=2)  # Wq = 10 > 2 * 2


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


# ------------------------------------------------------------------ NumPy batch-innermost path

BATCH_INNER_CASES = WIDE_CASES + [
    ((5, 3, 9, 7), (4, 3, 3, 3), dict(padding=1)),  # odd batch, odd sizes, transposed dx
    ((4, 2, 8, 8), (4, 2, 4, 4), dict(padding="same")),  # even kernel: asymmetric same
    ((3, 4, 10, 9), (6, 4, 3, 2), dict(padding="same", dilation=(1, 2))),  # asym, dilated
    ((3, 4, 9, 9), (8, 2, 3, 3), dict(stride=2, padding=1, groups=2)),  # grouped, strided
    ((2, 6, 7, 7), (6, 1, 3, 3), dict(padding=1, groups=6)),  # depthwise
    ((2, 2, 12, 11), (3, 2, 2, 3), dict(stride=(3, 2), dilation=(2, 1), padding=(0, 3))),
]


def _run_routes(monkeypatch, xs, ws, kw, dtype=np.float64, bias=True, needs=(True, True, True)):  # noqa: ANN001, ANN202
    """(batch-innermost results, generic results): output then the grads that were asked for."""

    rng = np.random.default_rng(sum(xs) + sum(ws) + len(kw))
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in (xs, ws, ws[:1]))
    with no_grad():
        shape = F.conv2d(Tensor(x), Tensor(w), **kw).shape
    g = rng.standard_normal(shape).astype(dtype)
    arrays = [x, w, b] if bias else [x, w]
    out = {}
    for route in ("batch_inner", "generic"):
        taken = []

        def pick(*a, route=route, taken=taken):  # noqa: ANN001, ANN202
            taken.append(route)
            return route

        monkeypatch.setattr(nconv, "_numpy_route", pick)
        ts = [Tensor(a, requires_grad=r) for a, r in zip(arrays, needs)]
        y = F.conv2d(*ts, **kw)
        y.backward(g)
        assert taken == [route]
        out[route] = [y.numpy()] + [t.grad.numpy() for t in ts if t.requires_grad]
    return out["batch_inner"], out["generic"]


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("chunk", [1, 3000, 1 << 30], ids=["row_chunks", "uneven_chunks", "one"])
@pytest.mark.parametrize("xs, ws, kw", BATCH_INNER_CASES, ids=_ids(BATCH_INNER_CASES))
def test_batch_inner_path_matches_generic_path(monkeypatch, xs, ws, kw, chunk) -> None:  # noqa: ANN001
    """NumPy's batch-innermost route (y, dx by either route, dW, db) equals im2col + col2im,
    whatever the chunking over output rows (one row per chunk, partial last chunk, one)."""

    monkeypatch.setattr(bi_mod, "_BATCH_INNER_CHUNK_BYTES", chunk)
    fast, ref = _run_routes(monkeypatch, xs, ws, kw)
    for a, r in zip(fast, ref):
        assert a.shape == r.shape and a.dtype == r.dtype
        np.testing.assert_allclose(a, r, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize(
    "xs, ws, kw",
    [
        ((4, 6, 8, 8), (6, 6, 3, 3), dict(padding=1)),  # transposed dx qualifies
        ((3, 4, 7, 6), (4, 4, 2, 3), dict(padding="same", dilation=2)),
        ((3, 4, 6, 6), (4, 2, 3, 3), dict(padding=1, groups=2)),
    ],
)
def test_batch_inner_dx_routes_agree(monkeypatch, xs, ws, kw) -> None:  # noqa: ANN001
    """dx as a batch-innermost correlation of dy equals the GEMM + scatter-add route."""

    monkeypatch.setattr(bi_mod, "_BATCH_INNER_CHUNK_BYTES", 1)
    taken = []
    orig = geo_mod.use_transposed_path
    monkeypatch.setattr(
        geo_mod, "use_transposed_path", lambda geom: taken.append(orig(geom)) or taken[-1]
    )
    transposed, ref = _run_routes(monkeypatch, xs, ws, kw)
    assert taken[0]  # the batch-innermost backward really took the transposed route
    monkeypatch.setattr(geo_mod, "use_transposed_path", lambda geom: False)
    scatter, _ = _run_routes(monkeypatch, xs, ws, kw)
    for a, b, r in zip(transposed, scatter, ref):
        np.testing.assert_allclose(a, r, rtol=1e-11, atol=1e-11)
        np.testing.assert_allclose(b, r, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize(
    "xs, ws, kw",
    [
        ((16, 6, 14, 14), (16, 6, 5, 5), dict()),  # LeNet conv2
        ((8, 16, 8, 8), (16, 16, 3, 3), dict(padding=1)),  # ResNet stage 3
        ((8, 8, 8, 8), (16, 8, 3, 3), dict(stride=2, padding=1)),  # ResNet transition
    ],
)
def test_batch_inner_path_float32(monkeypatch, xs, ws, kw) -> None:  # noqa: ANN001
    fast, ref = _run_routes(monkeypatch, xs, ws, kw, dtype=np.float32)
    for a, r in zip(fast, ref):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-4 * np.abs(r).max())


@pytest.mark.parametrize(
    "bias, needs",
    [(True, (False, True, True)), (True, (True, False, False)), (False, (True, False))],
    ids=["no_dx", "only_dx", "no_bias_only_dx"],
)
def test_batch_inner_path_partial_grads(monkeypatch, bias, needs) -> None:  # noqa: ANN001
    """The batch-innermost backward computes exactly the gradients that are needed."""
    fast, ref = _run_routes(
        monkeypatch, (3, 4, 6, 6), (5, 4, 3, 3), dict(padding=1), bias=bias, needs=needs
    )
    assert len(fast) == 1 + sum(needs)
    for a, r in zip(fast, ref):
        np.testing.assert_allclose(a, r, rtol=1e-11, atol=1e-11)


def test_batch_inner_gradient_check(monkeypatch) -> None:  # noqa: ANN001

    monkeypatch.setattr(nconv, "_numpy_route", lambda *a: "batch_inner")
    monkeypatch.setattr(bi_mod, "_BATCH_INNER_CHUNK_BYTES", 1)
    rng = np.random.default_rng(5)
    x, w, b = rng.standard_normal((3, 2, 5, 6)), rng.standard_normal((4, 2, 3, 2)), None
    b = rng.standard_normal(4)
    gradient_check(lambda x, w, b: F.conv2d(x, w, b, stride=(2, 1), padding=(1, 2)), [x, w, b])
    gradient_check(lambda x, w, b: F.conv2d(x, w, b, padding="same", dilation=2), [x, w, b])


def test_batch_inner_route_selection() -> None:
    """Small images with many garbage frame columns take the batch-innermost route."""

    route = nconv._numpy_route
    assert route(128, 3, 1, 1, 8, False) == "batch_inner"  # ResNet 8x8: 2/10 garbage
    assert route(128, 5, 1, 1, 10, False) == "batch_inner"  # LeNet conv2: 4/14
    assert route(128, 3, 2, 1, 8, False) == "batch_inner"  # 16 -> 8 stride 2: 1/9
    assert route(128, 3, 1, 1, 32, False) == "wide"  # 32x32: 2/34 garbage
    assert route(2, 3, 1, 1, 8, False) == "wide"  # copy runs of N*ow = 16 only
    assert route(128, 3, 1, 4, 2, False) == "batch_inner"  # mostly garbage
    assert route(1, 3, 1, 4, 2, False) == "generic"
    assert route(128, 1, 1, 1, 8, True) == "generic"  # plain 1x1: no im2col at all


def test_batch_inner_torch_parity_and_empty_batch() -> None:
    """The default routing sends these shapes through the batch-innermost path; PyTorch agrees."""
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
        geo = {k: v for k, v in kw.items() if k != "groups"}
        (oh, ow), n = conv2d_output_size(xs[2], xs[3], ws[2:], **geo), xs[0]
        stride = geo_mod.pair(kw.get("stride", 1), "s")[1]
        dil = geo_mod.pair(kw.get("dilation", 1), "d")[1]
        assert nconv._numpy_route(n, ws[3], stride, dil, ow, False) == "batch_inner"
        x, w, b = (rng.standard_normal(s) for s in (xs, ws, ws[:1]))
        g = rng.standard_normal((n, ws[0], oh, ow))
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
    ((1, 2, 6, 6), (3, 2, 3, 3), dict(padding=3)),  # pads > 2: batch-innermost route
    ((3, 70, 5, 4), (33, 70, 3, 3), dict(padding=1)),  # many channels
    ((2, 17, 10, 11), (70, 17, 3, 3), dict(padding=1)),
]


def _run_winograd(monkeypatch, xs, ws, kw, dtype=np.float64, bias=True, needs=(True, True, True)):  # noqa: ANN001, ANN202
    """(Winograd results, generic results, Winograd calls): the output, then the grads asked for."""

    calls = []
    for name in ("_winograd_forward", "_winograd_input_grad"):
        orig = getattr(wg_mod, name)
        monkeypatch.setattr(
            wg_mod, name, lambda *a, _n=name, _f=orig: calls.append(_n) or _f(*a)
        )
    rng = np.random.default_rng(sum(xs) + sum(ws) + len(kw))
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in (xs, ws, ws[:1]))
    with no_grad():
        shape = F.conv2d(Tensor(x), Tensor(w), **kw).shape
    g = rng.standard_normal(shape).astype(dtype)
    arrays = [x, w, b] if bias else [x, w]
    out = {}
    for route in ("winograd", "generic"):
        monkeypatch.setattr(nconv, "_numpy_route", lambda *a, r=route: r)
        ts = [Tensor(a, requires_grad=r) for a, r in zip(arrays, needs)]
        y = F.conv2d(*ts, **kw)
        y.backward(g)
        out[route] = [y.numpy()] + [t.grad.numpy() for t in ts if t.requires_grad]
    return out["winograd"], out["generic"], calls


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("keep", [True, False], ids=["kept_v", "recomputed_v"])
@pytest.mark.parametrize("chunk", [1, 1 << 30], ids=["row_chunks", "one_chunk"])
@pytest.mark.parametrize("xs, ws, kw", WINOGRAD_CASES, ids=_ids(WINOGRAD_CASES))
def test_winograd_path_matches_generic_path(monkeypatch, xs, ws, kw, chunk, keep) -> None:  # noqa: ANN001
    """Winograd forward, dx and dW (db as elsewhere) equal im2col + col2im, one tile row per
    chunk or all at once, with the transformed input kept by the forward or recomputed."""
    from gpucnn.backend.numpy_ops.conv import winograd as _winograd

    monkeypatch.setattr(_winograd, "CHUNK_BYTES", chunk)
    monkeypatch.setattr(_winograd, "KEEP_MAX_BYTES", (1 << 40) if keep else 0)
    fast, ref, calls = _run_winograd(monkeypatch, xs, ws, kw)
    if kw.get("padding") == 3:  # top/left pads > 2 (dx would need negative pads): fallback
        assert calls == []
    else:
        assert calls == ["_winograd_forward", "_winograd_input_grad"]
    for a, r in zip(fast, ref):
        assert a.shape == r.shape and a.dtype == r.dtype
        np.testing.assert_allclose(a, r, rtol=1e-10, atol=1e-10 * np.abs(r).max())


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("run", [1, 2])
@pytest.mark.parametrize("xs, ws, kw", WINOGRAD_CASES[:6], ids=_ids(WINOGRAD_CASES[:6]))
def test_winograd_batch_chunks_match_generic_path(monkeypatch, xs, ws, kw, run) -> None:  # noqa: ANN001
    """Tile rows split over batch chunks of ``run`` samples (uneven last chunk included): the
    output and every gradient still equal im2col + col2im."""
    from gpucnn.backend.numpy_ops.conv import winograd as _winograd

    monkeypatch.setattr(_winograd, "CHUNK_BYTES", 1)
    monkeypatch.setattr(_winograd, "MIN_BATCH_RUN", run)
    assert _winograd.batch_per_chunk(4, 3, 5, 8) == run
    xs = (5,) + tuple(xs[1:])
    fast, ref, calls = _run_winograd(monkeypatch, xs, ws, kw)
    if kw.get("padding") != 3:
        assert calls == ["_winograd_forward", "_winograd_input_grad"]
    for a, r in zip(fast, ref):
        assert a.shape == r.shape and a.dtype == r.dtype
        np.testing.assert_allclose(a, r, rtol=1e-10, atol=1e-10 * np.abs(r).max())


@pytest.mark.parametrize("hw, pads", [((6, 7), (1, 1)), ((5, 5), (0, 2)), ((8, 8), (2, 0))])
@pytest.mark.parametrize("run", [2, 64])
def test_winograd_weight_grad_kept_equals_recomputed(monkeypatch, hw, pads, run) -> None:  # noqa: ANN001
    """weight_grad from the V the forward kept equals weight_grad from P4 (odd sizes, batch
    chunks included) and the kept V is exactly the input transform of each chunk."""
    from gpucnn.backend.numpy_ops.conv import winograd as wg

    monkeypatch.setattr(wg, "CHUNK_BYTES", 1)
    monkeypatch.setattr(wg, "MIN_BATCH_RUN", run)
    rng = np.random.default_rng(run + hw[0])
    n, c, o = 5, 3, 4
    h, w = hw
    x = rng.standard_normal((n, c, h, w))
    oh, ow = h + 2 * pads[0] - 2, w + 2 * pads[1] - 2
    th, tw = wg.tiles(oh), wg.tiles(ow)
    p4 = wg.polyphase_nchw(x, pads[0], pads[1], th, tw)
    u = wg.filter_transform(rng.standard_normal((o, c, 3, 3)))
    _, kept = wg.conv3x3(p4, u, keep=True)
    assert kept is not None and len(kept.chunks) == (th if run >= n else th * -(-n // run))
    for i, (t0, t1, n0, n1) in enumerate(kept.chunks):
        np.testing.assert_array_equal(kept.chunk(i), wg._input_transform(p4[..., n0:n1], t0, t1))
    dyt = rng.standard_normal((o, oh, ow, n))
    np.testing.assert_allclose(wg.weight_grad(kept, dyt), wg.weight_grad(p4, dyt), rtol=1e-12)


def test_winograd_kept_buffers_pooled(monkeypatch) -> None:  # noqa: ANN001
    """A kept V's buffer goes back to the pool when the KeptInput dies and the next one of that
    size reuses it; over POOL_MAX_BYTES the oldest buffers are dropped (a size no longer used
    cannot block the pool); clear_buffers empties it."""
    from gpucnn.backend.numpy_ops.conv import winograd as wg

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
    assert nconv._numpy_route(n, 3, 1, 1, h, False, 3, 1, 1, c, c, 1) == "winograd"
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
    from gpucnn.backend.numpy_ops.conv import winograd as wg

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
def test_winograd_path_float32(monkeypatch, xs, ws, kw) -> None:  # noqa: ANN001
    fast, ref, calls = _run_winograd(monkeypatch, xs, ws, kw, dtype=np.float32)
    assert calls == ["_winograd_forward", "_winograd_input_grad"]
    for a, r in zip(fast, ref):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-5 * np.abs(r).max())


@pytest.mark.parametrize(
    "bias, needs",
    [(True, (False, True, True)), (True, (True, False, False)), (False, (True, False))],
    ids=["no_dx", "only_dx", "no_bias_only_dx"],
)
def test_winograd_path_partial_grads(monkeypatch, bias, needs) -> None:  # noqa: ANN001
    fast, ref, calls = _run_winograd(
        monkeypatch, (3, 4, 6, 7), (5, 4, 3, 3), dict(padding=1), bias=bias, needs=needs
    )
    assert calls == ["_winograd_forward"] + ["_winograd_input_grad"] * needs[0]
    assert len(fast) == 1 + sum(needs)
    for a, r in zip(fast, ref):
        np.testing.assert_allclose(a, r, rtol=1e-10, atol=1e-10 * np.abs(r).max())


@pytest.mark.parametrize(
    "xs, ws, kw",
    [
        ((2, 4, 8, 8), (4, 4, 3, 3), dict(padding=1, stride=2)),
        ((2, 4, 8, 8), (4, 2, 3, 3), dict(padding=1, groups=2)),
        ((2, 4, 9, 9), (4, 4, 3, 3), dict(padding=2, dilation=2)),
        ((2, 4, 8, 8), (4, 4, 5, 5), dict(padding=2)),
    ],
)
def test_winograd_forced_on_unsupported_conv_falls_back(monkeypatch, xs, ws, kw) -> None:  # noqa: ANN001
    """Strided, grouped, dilated or non-3x3 convs forced onto "winograd" run batch-innermost."""
    fast, ref, calls = _run_winograd(monkeypatch, xs, ws, kw)
    assert calls == []
    for a, r in zip(fast, ref):
        np.testing.assert_allclose(a, r, rtol=1e-10, atol=1e-10 * np.abs(r).max())


def test_winograd_gradient_check(monkeypatch) -> None:  # noqa: ANN001
    from gpucnn.backend.numpy_ops.conv import winograd as _winograd

    calls = []
    orig = wg_mod._winograd_input_grad
    monkeypatch.setattr(nconv, "_numpy_route", lambda *a: "winograd")
    monkeypatch.setattr(wg_mod, "_winograd_input_grad", lambda *a: calls.append(1) or orig(*a))
    monkeypatch.setattr(_winograd, "CHUNK_BYTES", 1)
    rng = np.random.default_rng(21)
    x, w, b = (rng.standard_normal(s) for s in ((2, 3, 5, 6), (2, 3, 3, 3), (2,)))
    gradient_check(lambda x, w, b: F.conv2d(x, w, b, padding=1), [x, w, b])
    gradient_check(lambda x, w: F.conv2d(x, w, padding=(0, 2)), [x, w])
    assert calls


def test_winograd_route_selection() -> None:
    """ResNet's 3x3 stride-1 convs with >= 32 channels and >= 8-wide images (batch 128) take
    Winograd; others keep their routes."""

    route = nconv._numpy_route
    assert route(128, 3, 1, 1, 8, False, 3, 1, 1, 64, 64, 1) == "winograd"  # r64
    assert route(128, 3, 1, 1, 16, False, 3, 1, 1, 32, 32, 1) == "winograd"  # r32
    assert route(128, 3, 1, 1, 32, False, 3, 1, 1, 16, 16, 1) == "wide"  # r16: transforms
    assert route(128, 3, 2, 1, 8, False, 3, 2, 1, 32, 64, 1) == "batch_inner"  # stride 2
    assert route(128, 3, 1, 1, 8, False, 3, 1, 1, 64, 64, 2) == "batch_inner"  # grouped
    assert route(128, 3, 1, 2, 8, False, 3, 1, 2, 64, 64, 1) == "batch_inner"  # dilated
    assert route(128, 5, 1, 1, 8, False, 5, 1, 1, 64, 64, 1) == "batch_inner"  # 5x5
    assert route(2, 3, 1, 1, 8, False, 3, 1, 1, 64, 64, 1) == "wide"  # few tiles per run
    assert route(16, 3, 1, 1, 8, False, 3, 1, 1, 64, 64, 1) == "batch_inner"  # runs of 64
    assert route(128, 3, 1, 1, 4, False, 3, 1, 1, 128, 128, 1) == "batch_inner"  # 4x4 images
    assert route(128, 3, 1, 1, 8, False) == "batch_inner"  # no channel info: never Winograd


@pytest.mark.parametrize(
    "xs, ws",
    [((16, 32, 16, 16), (32, 32, 3, 3)), ((32, 64, 8, 8), (64, 64, 3, 3))],
    ids=["r32", "r64"],
)
def test_winograd_resnet_shapes_float32_and_torch(xs, ws) -> None:  # noqa: ANN001
    """Default routing sends ResNet-20's 3x3 convs through Winograd: float32 stays within 1e-5
    (relative to the largest value) of float64, and float64 matches PyTorch."""

    n, c, h, w = xs
    assert nconv._numpy_route(n, 3, 1, 1, w, False, 3, 1, 1, c, ws[0], 1) == "winograd"
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


# ------------------------------------------------------------------ CUDA route (host emulator)
#
# The CUDA branch of Conv2dFunction (im2col_cn, 2-D GEMMs, col2im_cn) run on the CPU: a Backend
# named "cuda" over the cuda_ops launchers, their kernels built by the host emulator from the
# same .cu files, NumPy (or a recording proxy of it) as ``xp``.


@contextlib.contextmanager
def _cuda_route(xp=np, grid_cap=3, block=64):  # noqa: ANN001, ANN202
    """conv2d through its CUDA branch on the emulator; yields the kernel names launched."""
    emulator = pytest.importorskip("gpucnn.testing.emulator")
    if not emulator.compiler_available():
        pytest.skip("no host C++ compiler: the kernel emulator cannot run")
    import gpucnn.functional.conv as conv_mod
    from gpucnn.backend import Backend
    from gpucnn.backend.runtime import KernelRuntime, use_runtime

    launched: list[str] = []

    def get_kernel(family, name, defines=None):  # noqa: ANN001, ANN202
        launched.append(name)
        return emulator.get_emulated_kernel(family, name, defines)

    be = Backend("cuda", xp, "gpucnn.backend.cuda_ops")
    rt = KernelRuntime(xp, get_kernel, grid_cap=grid_cap, block=block, name="emulated cuda")
    orig = conv_mod._backend
    conv_mod._backend = lambda a: be
    try:
        with use_runtime(rt):
            yield launched
    finally:
        conv_mod._backend = orig


def _geom(xs: tuple, ws: tuple, kw: dict) -> tuple:
    """Conv2dFunction's ``ctx.geom`` for a case (what the route rules look at)."""

    n, c, h, w = xs
    o, cg, kh, kwd = ws
    s = geo_mod.pair(kw.get("stride", 1), "stride")
    d = geo_mod.pair(kw.get("dilation", 1), "dilation")
    pads = geo_mod.resolve_padding(kw.get("padding", 0), (kh, kwd), s, d)
    oh, ow = conv2d_output_size(h, w, (kh, kwd), s, pads, d)
    pointwise = (kh, kwd) == (1, 1) and s == (1, 1) and pads == (0, 0, 0, 0)
    g = kw.get("groups", 1)
    return (n, c, h, w, o, cg, kh, kwd, *s, pads[0], pads[2], *d, oh, ow, g, pointwise)


def _transposed_dx_applies(geom: tuple) -> bool:
    """Whether dx can run as the flipped-kernel correlation (stride 1, pads inside the kernel)."""
    n, c, h, w, o, cg, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, g, pointwise = geom
    return not pointwise and (sh, sw) == (1, 1) and pt <= dh * (kh - 1) and pl <= dw * (kw - 1)


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


def _cuda_vs_numpy(xs, ws, kw, dtype=np.float64, bias=True, needs=(True, True, True), **route):  # noqa: ANN001, ANN202
    """(CUDA-route results, NumPy-backend results, kernels launched): y then requested grads."""
    rng = np.random.default_rng(sum(xs) + sum(ws) + len(kw))
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in (xs, ws, ws[:1]))
    with no_grad():
        shape = F.conv2d(Tensor(x), Tensor(w), **kw).shape
    g = rng.standard_normal(shape).astype(dtype)
    arrays = [x, w, b] if bias else [x, w]

    def run() -> list:
        ts = [Tensor(a, requires_grad=r) for a, r in zip(arrays, needs)]
        y = F.conv2d(*ts, **kw)
        y.backward(g)
        return [y.numpy()] + [t.grad.numpy() for t in ts if t.requires_grad]

    ref = run()
    with _cuda_route(**route) as launched:
        got = run()
    return got, ref, launched


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("dx", ["rule", "col2im", "transposed"])
@pytest.mark.parametrize("xs, ws, kw", CUDA_CASES, ids=_ids(CUDA_CASES))
def test_cuda_route_matches_numpy_emulated(monkeypatch, xs, ws, kw, dx) -> None:  # noqa: ANN001
    """The CUDA route (forward, dx by col2im_cn or by the flipped-kernel correlation, dW, db)
    through the emulated kernels equals the NumPy backend; it launches only the
    batch-in-columns im2col kernels."""

    geom = _geom(xs, ws, kw)
    if dx != "rule":
        forced = dx == "transposed" and _transposed_dx_applies(geom)
        monkeypatch.setattr(geo_mod, "use_transposed_path", lambda geom: forced)
    taken = []
    orig = cconv._cuda_input_grad_as_conv
    monkeypatch.setattr(
        cconv, "_cuda_input_grad_as_conv", lambda *a: taken.append(1) or orig(*a)
    )
    got, ref, launched = _cuda_vs_numpy(xs, ws, kw)
    for a, r in zip(got, ref):
        assert a.shape == r.shape and a.dtype == r.dtype
        np.testing.assert_allclose(a, r, rtol=1e-11, atol=1e-11)
    if dx == "transposed":
        assert bool(taken) == _transposed_dx_applies(geom)
    elif dx == "col2im":
        assert not taken
    names = set(launched)
    assert not names & {"im2col_f64", "col2im_f64"}, "the CUDA route uses the _cn kernels"
    pointwise_one = geom[-1] and xs[0] == 1
    assert ("im2col_cn_f64" in names) == (not pointwise_one or bool(taken))


@pytest.mark.parametrize(
    "xs, ws, kw",
    [
        ((3, 4, 8, 8), (8, 4, 3, 3), dict(padding=1)),
        ((2, 6, 9, 9), (6, 2, 3, 3), dict(stride=2, padding=1, groups=3)),
        ((4, 8, 5, 5), (16, 8, 1, 1), dict()),
    ],
)
def test_cuda_route_float32_emulated(xs, ws, kw) -> None:  # noqa: ANN001
    got, ref, launched = _cuda_vs_numpy(xs, ws, kw, dtype=np.float32, grid_cap=None, block=128)
    assert "im2col_cn_f32" in launched
    for a, r in zip(got, ref):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(r).max()))


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
def test_cuda_route_partial_grads_emulated(xs, ws, kw, bias, needs) -> None:  # noqa: ANN001
    got, ref, _ = _cuda_vs_numpy(xs, ws, kw, bias=bias, needs=needs)
    assert len(got) == len(ref) == 1 + sum(needs)
    for a, r in zip(got, ref):
        np.testing.assert_allclose(a, r, rtol=1e-11, atol=1e-11)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_cuda_route_torch_parity_and_empty_batch_emulated() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(21)
    for xs, ws, kw in [
        ((3, 4, 8, 8), (8, 2, 3, 3), dict(stride=2, padding=1, groups=2)),
        ((2, 3, 7, 6), (4, 3, 2, 3), dict(padding="same", dilation=(1, 2))),
        ((2, 4, 5, 5), (6, 4, 1, 1), dict()),
    ]:
        x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
        with no_grad():
            shape = F.conv2d(Tensor(x), Tensor(w), **kw).shape
        g = rng.standard_normal(shape)
        with _cuda_route():
            y, grads = _ours(x, w, b, g, **kw)
        ty, tgrads = _torch_conv(torch, x, w, b, g, **kw)
        for a, r in zip([y, *grads], [ty, *tgrads]):
            np.testing.assert_allclose(a, r, rtol=1e-10, atol=1e-10)
    with _cuda_route():
        x, w = Tensor(np.zeros((0, 3, 6, 6)), requires_grad=True), Tensor(np.ones((4, 3, 3, 3)))
        w.requires_grad = True
        y = F.conv2d(x, w, padding=1)
        y.backward(np.zeros(y.shape))
    assert y.shape == (0, 4, 6, 6) and x.grad.shape == (0, 3, 6, 6)
    np.testing.assert_array_equal(w.grad.numpy(), np.zeros((4, 3, 3, 3)))


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


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("dx", ["col2im", "transposed"])
@pytest.mark.parametrize(
    "xs, ws, kw",
    [
        ((2, 4, 6, 6), (6, 4, 3, 3), dict(padding=1)),
        ((2, 6, 8, 7), (8, 3, 3, 2), dict(padding="same", groups=2)),  # grouped, asymmetric
        ((3, 4, 9, 9), (6, 4, 3, 3), dict(stride=2, padding=1)),  # strided: col2im only
        ((2, 6, 7, 7), (6, 1, 3, 3), dict(padding=1, groups=6)),  # depthwise
        ((3, 4, 5, 6), (6, 2, 1, 1), dict(groups=2)),  # 1x1
        ((1, 4, 5, 6), (6, 4, 1, 1), dict()),  # 1x1, one sample
    ],
)
def test_cuda_route_gemms_are_2d_without_copies(monkeypatch, xs, ws, kw, dx) -> None:  # noqa: ANN001
    """Every GEMM the CUDA conv route issues is 2-D on C-/F-contiguous operands (what cuBLAS
    takes without a copy and where CuPy honours TF32): one per group for y, dW and dx; no
    array of the size of the columns (im2col_cn of x, or of dy on the transposed dx route) is
    ever copied: the only copies are the NCHW <-> (O, N*L) layout changes and the flipped W."""

    geom = _geom(xs, ws, kw)
    forced = dx == "transposed" and _transposed_dx_applies(geom)
    monkeypatch.setattr(geo_mod, "use_transposed_path", lambda geom: forced)
    xp = _RecordingXp()
    got, ref, _ = _cuda_vs_numpy(xs, ws, kw, xp=xp)
    for a, r in zip(got, ref):
        np.testing.assert_allclose(a, r, rtol=1e-11, atol=1e-11)
    n, c, h, w, o, cg, kh, kwd, sh, sw, pt, pl, dh, dwd, oh, ow, g, pointwise = geom
    assert len(xp.gemms) == 3 * g  # y, dW, dx: one 2-D GEMM per group each
    for name, shapes, contiguous in xp.gemms:
        assert name == "matmul" and all(len(s) == 2 for s in shapes), (name, shapes)
        assert contiguous, (name, shapes)
    activations = max(n * c * h * w, n * o * oh * ow, o * cg * kh * kwd)
    cols = c * kh * kwd * n * oh * ow
    if not pointwise:
        assert cols > activations  # the check below can tell the columns apart
    if pointwise and n == 1:  # (C, 1*H*W) is x itself and y, dy, dx are views: no copies
        assert not xp.copies, xp.copies
    else:
        assert xp.copies, "the layout changes are copies the recorder must see"
        assert max(size for _, size in xp.copies) <= activations, xp.copies
