"""Edge filters: kernel values, responses on synthetic steps, scipy parity, the example script."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import gpucnn
from gpucnn import filters as Fl

ROOT = Path(__file__).resolve().parents[1]


def _np(a):
    return gpucnn.backend.to_numpy(a)


def _step(backend, h=8, w=10, col=5, vertical=True, lo=0.0, hi=1.0):
    """Bright (``hi``) left of / above the step at ``col``, ``lo`` after it."""
    img = np.full((h, w), lo, np.float32)
    if vertical:
        img[:, :col] = hi
    else:
        img[:col, :] = hi
    return backend.xp.asarray(img)


def test_kernel_values():
    assert np.array_equal(Fl.vertical_edge(), [[1, 0, -1], [1, 0, -1], [1, 0, -1]])
    assert np.array_equal(Fl.horizontal_edge(), [[1, 1, 1], [0, 0, 0], [-1, -1, -1]])
    assert np.array_equal(Fl.sobel("x"), [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    assert np.array_equal(Fl.sobel("y"), [[-1, -2, -1], [0, 0, 0], [1, 2, 1]])
    assert np.array_equal(Fl.scharr("x"), [[-3, 0, 3], [-10, 0, 10], [-3, 0, 3]])
    assert np.array_equal(Fl.scharr("y"), np.array(Fl.scharr("x")).T)
    assert np.array_equal(Fl.prewitt("x"), [[-1, 0, 1]] * 3)
    assert np.array_equal(Fl.laplacian(), [[0, 1, 0], [1, -4, 1], [0, 1, 0]])
    assert Fl.sobel().dtype == np.float32
    with pytest.raises(ValueError, match="sobel: direction must be 'x' or 'y'"):
        Fl.sobel("z")


def test_vertical_step_vertical_edge(backend):
    out = _np(Fl.filter2d(_step(backend, col=5), Fl.vertical_edge()))
    assert out.shape == (8, 10)
    inner = out[1:-1, 1:-1]  # away from the zero-padded border
    # columns 4 and 5 straddle the step: 3 rows x (1 - 0) = +3 (bright left, dark right)
    expected = np.zeros((6, 8), np.float32)
    expected[:, 3:5] = 3.0
    assert np.array_equal(inner, expected)
    assert np.array_equal(_np(Fl.filter2d(_step(backend, col=5), Fl.horizontal_edge()))[1:-1,
                                                                                         1:-1],
                          np.zeros((6, 8), np.float32))


def test_dark_to_bright_step_has_negative_sign(backend):
    img = _step(backend, lo=1.0, hi=0.0)  # dark left, bright right
    out = _np(Fl.filter2d(img, Fl.vertical_edge()))[1:-1, 1:-1]
    assert out.min() == -3.0 and out.max() == 0.0


def test_horizontal_step(backend):
    img = _step(backend, h=9, w=7, col=4, vertical=False, hi=0.5)
    h = _np(Fl.filter2d(img, Fl.horizontal_edge(), padding="valid"))
    assert h.shape == (7, 5)
    expected = np.zeros((7, 5), np.float32)
    expected[2:4] = 1.5  # rows 3 and 4 of the image straddle the step: 3 * 0.5
    assert np.array_equal(h, expected)
    assert np.array_equal(_np(Fl.filter2d(img, Fl.vertical_edge(), padding="valid")),
                          np.zeros((7, 5), np.float32))


def test_sobel_scharr_step_magnitudes(backend):
    img = _step(backend, lo=1.0, hi=0.0, col=5)  # intensity increases to the right
    sx = _np(Fl.filter2d(img, Fl.sobel("x")))[1:-1, 1:-1]
    assert sx.max() == 4.0 and sx.min() == 0.0 and np.count_nonzero(sx) == 12
    assert np.array_equal(_np(Fl.filter2d(img, Fl.sobel("y")))[1:-1, 1:-1], np.zeros((6, 8)))
    assert _np(Fl.filter2d(img, Fl.scharr("x")))[1:-1, 1:-1].max() == 16.0
    mag = _np(Fl.edge_magnitude(img, "sobel"))[1:-1, 1:-1]
    assert np.array_equal(mag, np.abs(sx))


def test_batched_per_channel(backend):
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 7, 6)).astype(np.float32)
    out = _np(Fl.filter2d(backend.xp.asarray(x), Fl.laplacian()))
    assert out.shape == (2, 3, 7, 6)
    for n in range(2):
        for c in range(3):
            single = _np(Fl.filter2d(backend.xp.asarray(x[n, c]), Fl.laplacian()))
            np.testing.assert_allclose(out[n, c], single, rtol=1e-6, atol=1e-6)


def test_scipy_parity(backend):
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(1)
    x = rng.random((2, 2, 9, 11))
    for k in (Fl.sobel("x"), Fl.scharr("y"), Fl.laplacian(), Fl.vertical_edge(),
              rng.standard_normal((3, 5)), rng.standard_normal((5, 3))):
        out = _np(Fl.filter2d(backend.xp.asarray(x), k))
        for n in range(2):
            for c in range(2):
                ref = ndimage.correlate(x[n, c], np.asarray(k, np.float64), mode="constant",
                                        cval=0.0)
                np.testing.assert_allclose(out[n, c], ref, rtol=1e-10, atol=1e-10)
    # scipy's own Sobel uses the same sign convention
    img = x[0, 0]
    np.testing.assert_allclose(_np(Fl.filter2d(backend.xp.asarray(img), Fl.sobel("x"))),
                               ndimage.sobel(img, axis=1, mode="constant"), atol=1e-10)
    np.testing.assert_allclose(_np(Fl.edge_magnitude(backend.xp.asarray(img))),
                               np.hypot(ndimage.sobel(img, axis=1, mode="constant"),
                                        ndimage.sobel(img, axis=0, mode="constant")), atol=1e-10)


def test_tensor_input_is_differentiable():
    x = gpucnn.Tensor(np.random.default_rng(2).random((1, 1, 5, 5)), requires_grad=True)
    y = Fl.filter2d(x, Fl.sobel("x"))
    assert isinstance(y, gpucnn.Tensor)
    y.sum().backward()
    # d/dx sum(correlate(x, k)) = correlate of ones with the flipped kernel: interior zero
    g = x.grad.numpy()[0, 0]
    assert np.allclose(g[1:-1, 1:-1], 0.0) and not np.allclose(g, 0.0)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"filter2d: images must be \(N, C, H, W\) or \(H, W\)"):
        Fl.filter2d(np.zeros((3, 4, 4), np.float32), Fl.sobel())
    with pytest.raises(ValueError, match=r"filter2d: kernel must be \(kh, kw\)"):
        Fl.filter2d(np.zeros((4, 4), np.float32), np.zeros(3))
    with pytest.raises(ValueError, match="edge_magnitude: kind"):
        Fl.edge_magnitude(np.zeros((4, 4), np.float32), "canny")


def _load_example():
    spec = importlib.util.spec_from_file_location("edge_detection",
                                                  ROOT / "examples" / "edge_detection.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_example_script(tmp_path, capsys):
    mod = _load_example()
    prev = gpucnn.backend.current()
    try:
        assert mod.main(["--index", "42", "--out", str(tmp_path / "edges"),
                         "--backend", "numpy"]) == 0
    finally:
        gpucnn.backend.use(prev)
    out = capsys.readouterr().out
    assert "sobel_magnitude" in out and "scharr_x" in out and "backend numpy" in out
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert 'pip install "gpucnn[plot]"' in out
        return
    pngs = sorted(p.name for p in (tmp_path / "edges").glob("*.png"))
    assert "input.png" in pngs and "sobel_magnitude.png" in pngs and len(pngs) == 9
    assert all((tmp_path / "edges" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_example_edge_maps_values():
    mod = _load_example()
    img = np.zeros((28, 28), np.float32)
    img[:, :14] = 1.0
    maps = mod.edge_maps(img, "numpy")
    assert maps["vertical_edge"][5, 13] == 3.0 and maps["horizontal_edge"][5, 13] == 0.0
    assert maps["sobel_x"][5, 14] == -4.0
