"""Convolution as a backend primitive: the geometry object, and the conv2d_* primitives of both
backends (NumPy routes vs the reference; the CUDA launchers under the host emulator)."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest

from gpucnn import backend as B
from gpucnn.backend.geometry import Conv2dGeometry, transposed_path_applies
from gpucnn.backend.numpy_ops import conv as nconv
from gpucnn.backend.numpy_ops.conv import reference, winograd

CASES = [
    dict(xs=(2, 4, 9, 8), ws=(6, 4, 3, 3), stride=1, padding=1),
    dict(xs=(2, 4, 9, 8), ws=(6, 2, 3, 2), stride=(2, 1), padding=(1, 0), groups=2),
    dict(xs=(3, 3, 10, 10), ws=(4, 3, 3, 3), dilation=2, padding="same"),
    dict(xs=(2, 6, 7, 7), ws=(6, 1, 3, 3), padding=1, groups=6),
    dict(xs=(2, 5, 6, 6), ws=(3, 5, 1, 1)),
    dict(xs=(1, 5, 6, 6), ws=(3, 5, 1, 1)),
    dict(xs=(2, 3, 8, 8), ws=(4, 3, 2, 2), padding="same"),
    dict(xs=(4, 32, 8, 8), ws=(32, 32, 3, 3), padding=1),  # a Winograd-sized case
]


def _geom(case: dict) -> Conv2dGeometry:
    kw = {k: v for k, v in case.items() if k not in ("xs", "ws")}
    return Conv2dGeometry.create(case["xs"], case["ws"], **kw)


def _data(case: dict, dtype=np.float64) -> tuple:  # noqa: ANN001
    rng = np.random.default_rng(len(str(case)))
    g = _geom(case)
    x = rng.standard_normal(case["xs"]).astype(dtype)
    w = rng.standard_normal(case["ws"]).astype(dtype)
    b = rng.standard_normal(case["ws"][0]).astype(dtype)
    dy = rng.standard_normal(g.output_shape).astype(dtype)
    return g, x, w, b, dy


def test_geometry_sizes_and_errors() -> None:
    g = Conv2dGeometry.create((2, 4, 9, 8), (6, 2, 3, 3), stride=2, padding="valid", groups=2)
    assert (g.oh, g.ow, g.cg, g.groups, g.pads, g.stride) == (4, 3, 2, 2, (0, 0, 0, 0), (2, 2))
    assert g.output_shape == (2, 6, 4, 3) and not g.pointwise
    assert Conv2dGeometry.create((1, 2, 3, 3), (4, 2, 1, 1)).pointwise
    s = Conv2dGeometry.create((1, 1, 6, 6), (1, 1, 2, 2), padding="same")
    assert s.pads == (0, 1, 0, 1) and (s.oh, s.ow) == (6, 6)  # the extra pad bottom/right
    with pytest.raises(ValueError, match="conv2d: groups=3 must divide the input channels"):
        Conv2dGeometry.create((1, 4, 5, 5), (3, 1, 3, 3), groups=3)
    with pytest.raises(ValueError, match=r"conv2d: kernel \(7, 7\).*larger than the padded"):
        Conv2dGeometry.create((1, 1, 5, 5), (1, 1, 7, 7))
    with pytest.raises(ValueError, match="expects 6 input channels"):
        Conv2dGeometry.create((1, 4, 5, 5), (2, 3, 3, 3), groups=2)
    with pytest.raises(ValueError, match="padding='same' needs stride 1"):
        Conv2dGeometry.create((1, 1, 5, 5), (1, 1, 3, 3), stride=2, padding="same")
    with pytest.raises(Exception):  # noqa: B017 - frozen
        g.oh = 1  # type: ignore[misc]


def _allclose(got, ref, tol=1e-10):  # noqa: ANN001, ANN202
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)


def _paths(g: Conv2dGeometry) -> list:
    return [None, "col2im"] + (["transposed"] if transposed_path_applies(g) else [])


@pytest.mark.numpy_internal
@pytest.mark.parametrize("workspace", [None, 0], ids=["default_workspace", "smallest_chunks"])
@pytest.mark.parametrize("algorithm", [None, *nconv.ALGORITHMS])
@pytest.mark.parametrize("case", CASES, ids=range(len(CASES)))
def test_numpy_algorithms_agree_with_the_reference(
    case: dict, algorithm: str | None, workspace: int | None
) -> None:
    """Every algorithm, every dx path it has and the smallest workspace (one sample or one
    output row per chunk) give the reference's y, dx and dW, through the public primitives."""
    g, x, w, b, dy = _data(case)
    if algorithm == "winograd" and not winograd.applies(g):
        with pytest.raises(ValueError, match="algorithm 'winograd' needs a 3x3 kernel"):
            nconv.conv2d_forward(x, w, b, g, algorithm=algorithm)
        return
    y_ref, cols = reference.forward(x, w, b, g)
    dx_ref, dw_ref = reference.backward(dy, cols, w, g, True, True)
    y, saved = nconv.conv2d_forward(x, w, b, g, algorithm=algorithm, workspace_bytes=workspace)
    assert saved.algorithm == (algorithm or nconv.conv2d_algorithm(g))
    _allclose(y, y_ref)
    paths = [None] if saved.algorithm == "winograd" else _paths(g)
    for path in paths:
        dx, dw = nconv.conv2d_backward(dy, g, saved, True, True, input_grad=path)
        _allclose(dx, dx_ref)
        _allclose(dw, dw_ref)
    for path in _paths(g):
        _allclose(nconv.conv2d_backward_data(dy, w, g, input_grad=path), dx_ref)
    _allclose(nconv.conv2d_backward_weight(dy, x, g), dw_ref)
    # only what was asked for is kept and computed
    _, saved = nconv.conv2d_forward(x, w, b, g, False, False, algorithm=algorithm)
    assert saved.data is None and saved.weight is None
    _, saved = nconv.conv2d_forward(x, w, None, g, algorithm=algorithm)
    assert nconv.conv2d_backward(dy, g, saved, False, False) == (None, None)
    gx, gw = nconv.conv2d_backward(dy, g, saved, True, False)
    assert gw is None
    _allclose(gx, dx_ref)
    gx, gw = nconv.conv2d_backward(dy, g, saved, False, True)
    assert gx is None
    _allclose(gw, dw_ref)


def test_geometry_window_and_input_grad_as_conv() -> None:
    """``dx`` of a stride-1 convolution is the convolution ``input_grad_as_conv`` describes:
    ``dy`` with the flipped, transposed kernel (groups and uneven pads included)."""
    g = Conv2dGeometry.create((2, 4, 7, 6), (6, 2, 3, 2), padding=(2, 1, 0, 1), dilation=(1, 2),
                              groups=2)  # fmt: skip
    assert g.window == (3, 2, 1, 1, 2, 0, 1, 2, g.oh, g.ow)
    bg = g.input_grad_as_conv()
    assert (bg.n, bg.c, bg.h, bg.w, bg.o, bg.cg, bg.oh, bg.ow) == (2, 6, g.oh, g.ow, 4, 3, 7, 6)
    assert (bg.pt, bg.pl) == (0, 2) and bg.groups == 2
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 2, 3, 2))
    dy = rng.standard_normal(g.output_shape)
    wf = w.reshape(2, 3, 2, 3, 2)[:, :, :, ::-1, ::-1].transpose(0, 2, 1, 3, 4).reshape(4, 3, 3, 2)
    dx = reference.forward(dy, np.ascontiguousarray(wf), None, bg)[0]
    _allclose(dx, reference.backward(dy, None, w, g, True, False, "col2im")[0])
    with pytest.raises(ValueError, match="input_grad_as_conv needs stride 1"):
        Conv2dGeometry.create((1, 1, 5, 5), (1, 1, 3, 3), stride=2).input_grad_as_conv()


def test_algorithm_and_path_arguments_are_checked() -> None:
    g, x, w, b, dy = _data(CASES[1])  # strided, grouped
    with pytest.raises(ValueError, match="algorithm must be one of"):
        nconv.conv2d_forward(x, w, b, g, algorithm="fft")
    with pytest.raises(ValueError, match="workspace_bytes must be >= 0, got -1"):
        nconv.conv2d_forward(x, w, b, g, workspace_bytes=-1)
    with pytest.raises(TypeError, match="workspace_bytes must be an int"):
        nconv.conv2d_forward(x, w, b, g, workspace_bytes=1.5)
    saved = nconv.conv2d_forward(x, w, b, g)[1]
    with pytest.raises(ValueError, match=r"input_grad='transposed' needs stride 1.*\(2, 1\)"):
        nconv.conv2d_backward(dy, g, saved, True, True, input_grad="transposed")
    with pytest.raises(ValueError, match="input_grad must be one of"):
        nconv.conv2d_backward(dy, g, saved, True, True, input_grad="fft")
    g, x, w, b, dy = _data(CASES[-1])
    saved = nconv.conv2d_forward(x, w, b, g, algorithm="winograd")[1]
    with pytest.raises(ValueError, match="winograd algorithm computes dx as 'transposed'"):
        nconv.conv2d_backward(dy, g, saved, True, True, input_grad="col2im")


def _g(n: int, c: int, o: int, hw: int, k: int = 3, **kw) -> Conv2dGeometry:  # noqa: ANN003
    return Conv2dGeometry.create((n, c, hw, hw), (o, c // kw.get("groups", 1), k, k), **kw)


@pytest.mark.parametrize(
    "geom, algorithm",
    [
        (_g(128, 1, 6, 28, 5, padding=2), "batch_inner"),  # LeNet conv1: runs of N*ow, 4/32
        (_g(128, 6, 16, 14, 5), "batch_inner"),  # LeNet conv2: 4/14 garbage
        (_g(128, 16, 16, 32, padding=1), "frame"),  # ResNet-20 32x32: 2/34 garbage
        (_g(128, 32, 32, 16, padding=1), "winograd"),  # ResNet-20 16x16
        (_g(128, 64, 64, 8, padding=1), "winograd"),  # ResNet-20 8x8
        (_g(128, 32, 64, 16, stride=2, padding=1), "batch_inner"),  # 16 -> 8 stride 2: 1/9
        (_g(128, 64, 64, 8, padding=1, groups=2), "batch_inner"),  # grouped: no Winograd
        (_g(2, 64, 64, 8, padding=1), "frame"),  # copy runs of N*ow = 16 only
        (_g(128, 16, 16, 8, 1), "reference"),  # a plain 1x1: no im2col at all
        (_g(1, 3, 4, 9, 3, dilation=4), "reference"),  # mostly garbage, runs too short
    ],
    ids=["lenet1", "lenet2", "r20_32", "r20_16", "r20_8", "s2", "grouped", "n2", "1x1", "dil"],
)
def test_numpy_algorithm_rule(geom: Conv2dGeometry, algorithm: str) -> None:
    """The measured rule (constants beside each algorithm) at the benchmark's shapes."""
    assert nconv.conv2d_algorithm(geom) == algorithm


@pytest.mark.parametrize("case", CASES, ids=range(len(CASES)))
def test_cuda_primitives_match_numpy_under_the_emulator(case: dict, emulate) -> None:  # noqa: ANN001
    from gpucnn.backend.cuda_ops import conv as cconv

    g, x, w, b, dy = _data(case)
    y_ref, saved_ref = nconv.conv2d_forward(x, w, b, g)
    dx_ref, dw_ref = nconv.conv2d_backward(dy, g, saved_ref, True, True)
    with emulate(grid_cap=3):
        y, saved = cconv.conv2d_forward(x, w, b, g)
        dx, dw = cconv.conv2d_backward(dy, g, saved, True, True)
        dx1 = cconv.conv2d_backward_data(dy, w, g)
        dw1 = cconv.conv2d_backward_weight(dy, x, g)
    assert saved.algorithm == "im2col_gemm" == cconv.conv2d_algorithm(g)
    for got, ref in ((y, y_ref), (dx, dx_ref), (dw, dw_ref), (dx1, dx_ref), (dw1, dw_ref)):
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)


def test_both_backends_declare_the_conv_primitives() -> None:
    from gpucnn.backend.cuda_ops import conv as cconv

    names = ["conv2d_algorithm", "conv2d_forward", "conv2d_forward_act", "conv2d_backward",
             "conv2d_backward_data", "conv2d_backward_weight"]  # fmt: skip
    assert nconv.__all__ == names == cconv.__all__
    assert set(names) <= set(B.get_backend("numpy").primitives)
    for n in names:
        assert list(inspect.signature(getattr(nconv, n)).parameters) == list(
            inspect.signature(getattr(cconv, n)).parameters
        ), n


def test_functional_conv_has_no_device_branch() -> None:
    """The autograd op only calls backend primitives: no backend's private modules, no
    ``be.name`` test, and short enough to read."""
    import gpucnn.functional.conv as fconv

    src = Path(fconv.__file__).read_text()
    imports = [ln for ln in src.splitlines() if ln.lstrip().startswith(("import ", "from "))]
    assert not [ln for ln in imports if "numpy_ops" in ln or "cuda_ops" in ln or "cupy" in ln]
    assert "be.name" not in src and "xp." not in src
    assert len(src.splitlines()) < 250


def test_cuda_algorithm_and_workspace_are_checked(emulate) -> None:  # noqa: ANN001
    from gpucnn.backend.cuda_ops import conv as cconv

    g, x, w, b, dy = _data(CASES[0])
    need = cconv.workspace_needed(g, x.dtype.itemsize)
    assert need == 4 * 3 * 3 * 2 * g.oh * g.ow * 8
    with emulate():
        algos = r"algorithm must be one of \('im2col_gemm', 'igemm'\)"
        with pytest.raises(ValueError, match=algos):
            cconv.conv2d_forward(x, w, b, g, algorithm="winograd")
        with pytest.raises(ValueError, match=f"needs {need} bytes of workspace"):
            cconv.conv2d_forward(x, w, b, g, workspace_bytes=need - 1)
        y, saved = cconv.conv2d_forward(x, w, b, g, algorithm="im2col_gemm", workspace_bytes=need)
        dx = cconv.conv2d_backward(dy, g, saved, True, False, input_grad="col2im")[0]
        with pytest.raises(ValueError, match="input_grad must be one of"):
            cconv.conv2d_backward(dy, g, saved, True, False, input_grad="fft")
    _allclose(y, reference.forward(x, w, b, g)[0], 1e-9)
    _allclose(dx, reference.backward(dy, None, w, g, True, False)[0], 1e-9)
    p = Conv2dGeometry.create((1, 5, 6, 6), (3, 5, 1, 1))
    assert cconv.workspace_needed(p, 4) == 0  # one sample's 1x1 columns are x itself


def _conditioned_errors(algorithm, x, w, dy, g):  # noqa: ANN001, ANN202
    """Per output, |error| over the sum of the absolute values of its terms (float64 truth),
    for y, dx and dW computed in float32 by ``algorithm`` (None: the rule)."""
    y64, cols = reference.forward(x, w, None, g)
    dx64, dw64 = reference.backward(dy, cols, w, g, True, True)
    ya, cola = reference.forward(np.abs(x), np.abs(w), None, g)
    dxa, dwa = reference.backward(np.abs(dy), cola, np.abs(w), g, True, True)
    x32, w32, dy32 = (a.astype(np.float32) for a in (x, w, dy))
    y, saved = nconv.conv2d_forward(x32, w32, None, g, algorithm=algorithm)
    dx, dw = nconv.conv2d_backward(dy32, g, saved, True, True)
    errs = [float(np.max(np.abs(a - r) / (d + 1e-30)))
            for a, r, d in ((y, y64, ya), (dx, dx64, dxa), (dw, dw64, dwa))]  # fmt: skip
    return saved.algorithm, np.array(errs)


@pytest.mark.numpy_internal
@pytest.mark.parametrize("where", ["x", "dy"])
def test_winograd_accuracy_is_bounded(where: str) -> None:
    """The rule takes Winograd only for data whose range keeps its error within a few times
    the reference's (relative to each output's own terms); one huge value makes that call
    (forward for ``x``, backward for ``dy``) fall back, where Winograd's error would be up to
    ~1e-4 relative instead of ~1e-6."""
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((16, 32, 16, 16)), rng.standard_normal((32, 32, 3, 3))
    dy = rng.standard_normal((16, 32, 16, 16))
    g = Conv2dGeometry.create(x.shape, w.shape, padding=1)
    assert nconv.conv2d_algorithm(g) == "winograd"
    _, ref = _conditioned_errors("reference", x, w, dy, g)
    algo, err = _conditioned_errors(None, x, w, dy, g)
    assert algo == "winograd" and np.all(err <= 4 * ref + 1e-7)
    target = x if where == "x" else dy
    target[0, 0, 5, 5] = 500.0  # within the range the rule accepts
    _, ref = _conditioned_errors("reference", x, w, dy, g)
    algo, err = _conditioned_errors(None, x, w, dy, g)
    assert algo == "winograd" and np.all(err <= 4 * ref + 1e-7), (err, ref)
    target[0, 0, 5, 5] = 1e6
    _, forced = _conditioned_errors("winograd", x, w, dy, g)
    _, ref = _conditioned_errors("reference", x, w, dy, g)
    algo, err = _conditioned_errors(None, x, w, dy, g)
    assert (algo == "winograd") == (where == "dy")  # dy: the backward fell back
    assert np.all(err <= 4 * ref + 1e-7), (err, ref)
    assert forced.max() > 10 * err.max()  # what the check prevents


@pytest.mark.numpy_internal
def test_winograd_rule_keeps_the_sign_of_infinities() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 32, 16, 16)).astype(np.float32)
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    x[0, 3, 4, 4], x[1, 0, 9, 2] = np.inf, -np.inf
    g = Conv2dGeometry.create(x.shape, w.shape, padding=1)
    y, saved = nconv.conv2d_forward(x, w, None, g)
    y_ref = nconv.conv2d_forward(x, w, None, g, algorithm="reference")[0]
    assert saved.algorithm != "winograd"
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_ref))
    np.testing.assert_array_equal(np.sign(y[np.isinf(y)]), np.sign(y_ref[np.isinf(y_ref)]))
    assert np.isinf(y).sum() > 0
    with np.errstate(invalid="ignore"):
        forced = nconv.conv2d_forward(x, w, None, g, algorithm="winograd")[0]
    assert np.isnan(forced).sum() > np.isnan(y_ref).sum()  # inf - inf in the transforms


@pytest.mark.numpy_internal
def test_winograd_range_check() -> None:
    a = np.ones((4, 16, 32, 32), np.float32)  # the mean comes from every 16th element
    assert winograd.range_ok(a) and winograd.range_ok(np.zeros(3)) and winograd.range_ok(a[:0])
    for value, ok in ((1000.0, True), (-1000.0, True), (2000.0, False), (-2000.0, False),
                      (np.nan, False), (np.inf, False), (-np.inf, False)):  # fmt: skip
        a[0, 0, 0, 1] = value
        assert winograd.range_ok(a) is ok, value
