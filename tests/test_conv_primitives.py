"""Convolution as a backend primitive: the geometry object, and the conv2d_* primitives of both
backends (NumPy routes vs the reference; the CUDA launchers under the host emulator)."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest

from gpucnn import backend as B
from gpucnn.backend.geometry import Conv2dGeometry
from gpucnn.backend.numpy_ops import conv as nconv
from gpucnn.backend.numpy_ops.conv import reference

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


@pytest.mark.numpy_internal
@pytest.mark.parametrize("case", CASES, ids=range(len(CASES)))
def test_numpy_primitives_agree_with_the_reference(case: dict) -> None:
    g, x, w, b, dy = _data(case)
    t = g.as_tuple()
    y_ref, cols = reference.forward(x, w, b, t)
    dx_ref, dw_ref = reference.backward(dy, cols, w, t, True, True)
    y, saved = nconv.conv2d_forward(x, w, b, g, True, True)
    dx, dw = nconv.conv2d_backward(dy, g, saved, True, True)
    np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(nconv.conv2d_backward_data(dy, w, g), dx_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(nconv.conv2d_backward_weight(dy, x, g), dw_ref, rtol=1e-10,
                               atol=1e-10)  # fmt: skip
    # only what was asked for is kept and computed
    _, saved = nconv.conv2d_forward(x, w, b, g, need_dx=False, need_dw=False)
    assert saved.data is None and saved.weight is None
    assert nconv.conv2d_backward(dy, g, nconv.conv2d_forward(x, w, None, g)[1], False, False) == (
        None,
        None,
    )


@pytest.mark.parametrize("case", CASES, ids=range(len(CASES)))
def test_cuda_primitives_match_numpy_under_the_emulator(case: dict) -> None:
    emu = pytest.importorskip("gpucnn.testing.emulator")
    from gpucnn.backend.cuda_ops import conv as cconv
    from gpucnn.backend.runtime import use_runtime

    g, x, w, b, dy = _data(case)
    y_ref, saved_ref = nconv.conv2d_forward(x, w, b, g)
    dx_ref, dw_ref = nconv.conv2d_backward(dy, g, saved_ref, True, True)
    with use_runtime(emu.emulated_runtime(grid_cap=3)):
        y, saved = cconv.conv2d_forward(x, w, b, g)
        dx, dw = cconv.conv2d_backward(dy, g, saved, True, True)
        dx1 = cconv.conv2d_backward_data(dy, w, g)
        dw1 = cconv.conv2d_backward_weight(dy, x, g)
    assert saved.route == "cuda"
    for got, ref in ((y, y_ref), (dx, dx_ref), (dw, dw_ref), (dx1, dx_ref), (dw1, dw_ref)):
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)


def test_both_backends_declare_the_conv_primitives() -> None:
    from gpucnn.backend.cuda_ops import conv as cconv

    names = ["conv2d_forward", "conv2d_backward", "conv2d_backward_data", "conv2d_backward_weight"]
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
