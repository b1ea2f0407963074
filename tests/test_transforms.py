"""Batch augmentation: independent references (rot90, slicing, colorsys, hand formulas)."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest

import gpucnn
from gpucnn import transforms as T


def _batch(backend, shape=(5, 3, 9, 9), seed=0, dtype=np.float32):
    x = np.random.default_rng(seed).random(shape).astype(dtype)
    return backend.xp.asarray(x)


def _np(a):
    return gpucnn.backend.to_numpy(a)


# ----------------------------------------------------------------------------- geometric


@pytest.mark.parametrize("shape", [(4, 2, 9, 9), (3, 1, 8, 8)])
def test_rotation_90_is_rot90(backend, shape):
    x = _batch(backend, shape)
    for deg, k in ((90, 1), (-90, -1), (180, 2)):
        out = T.RandomRotation((deg, deg))(x)
        assert np.array_equal(_np(out), np.rot90(_np(x), k, axes=(2, 3))), deg


def test_rotation_0_is_identity(backend):
    x = _batch(backend)
    assert np.array_equal(_np(T.RandomRotation(0)(x)), _np(x))


def test_rotation_small_angle_bilinear_reference(backend):
    """Compare a 30-degree rotation with a per-pixel scalar bilinear reference (pure Python)."""
    x = _batch(backend, (2, 1, 7, 8), seed=3, dtype=np.float64)
    out = _np(T.RandomRotation((30, 30), fill=0.25)(x))
    xn = _np(x)
    h, w = 7, 8
    th = np.deg2rad(30)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    ref = np.empty_like(xn)
    for n in range(2):
        for i in range(h):
            for j in range(w):
                dx, dy = j - cx, i - cy
                sx = cx + np.cos(th) * dx - np.sin(th) * dy
                sy = cy + np.sin(th) * dx + np.cos(th) * dy
                x0, y0 = int(np.floor(sx)), int(np.floor(sy))
                acc = 0.0
                for yy, wy in ((y0, 1 - (sy - y0)), (y0 + 1, sy - y0)):
                    for xx, wx in ((x0, 1 - (sx - x0)), (x0 + 1, sx - x0)):
                        v = xn[n, 0, yy, xx] if 0 <= yy < h and 0 <= xx < w else 0.25
                        acc += wy * wx * v
                ref[n, 0, i, j] = acc
    np.testing.assert_allclose(out, ref, atol=1e-12)


def test_rotation_direction_is_counter_clockwise(backend):
    x = backend.xp.zeros((1, 1, 5, 5), dtype=np.float32)
    x[0, 0, 0, 4] = 1.0  # top-right corner
    out = _np(T.RandomRotation((90, 90))(x))
    assert out[0, 0, 0, 0] == 1.0 and out.sum() == 1.0  # moves to top-left


def test_rotation_per_sample_angles(backend):
    x = backend.xp.asarray(np.repeat(_np(_batch(backend, (1, 1, 9, 9))), 6, axis=0))
    t = T.RandomRotation(45)
    out = _np(t(x))
    angles = _np(t.last_params["angle"])
    assert np.all(np.abs(angles) <= 45) and len(np.unique(angles)) == 6
    assert len({out[i].tobytes() for i in range(6)}) == 6


def test_translation_shifts_whole_pixels(backend):
    x = _batch(backend, (6, 2, 8, 8))
    t = T.RandomTranslation((0.25, 0.25))
    out, xn = _np(t(x)), _np(x)
    tx, ty = _np(t.last_params["tx"]).astype(int), _np(t.last_params["ty"]).astype(int)
    for n in range(6):
        ref = np.zeros_like(xn[n])
        src = xn[n][:, max(0, -ty[n]):8 - max(0, ty[n]), max(0, -tx[n]):8 - max(0, tx[n])]
        ref[:, max(0, ty[n]):max(0, ty[n]) + src.shape[1],
            max(0, tx[n]):max(0, tx[n]) + src.shape[2]] = src
        np.testing.assert_array_equal(out[n], ref)


def test_flips_exact(backend):
    x = _batch(backend, (64, 2, 4, 5))
    gpucnn.manual_seed(3)
    h = _np(T.RandomHorizontalFlip(0.5)(x))
    xn = _np(x)
    flipped = np.array([np.array_equal(h[i], xn[i, :, :, ::-1]) for i in range(64)])
    kept = np.array([np.array_equal(h[i], xn[i]) for i in range(64)])
    assert np.all(flipped | kept) and 10 < flipped.sum() < 54
    v = _np(T.RandomVerticalFlip(1.0)(x))
    assert np.array_equal(v, xn[:, :, ::-1, :])
    assert np.array_equal(_np(T.RandomHorizontalFlip(0.0)(x)), xn)


@pytest.mark.parametrize("size,padding", [(9, 2), ((6, 7), 0), (9, (1, 3))])
def test_random_crop_matches_slicing(backend, size, padding):
    x = _batch(backend, (7, 3, 9, 9))
    t = T.RandomCrop(size, padding=padding)
    out = _np(t(x))
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    th, tw = (size, size) if isinstance(size, int) else size
    padded = np.zeros((7, 3, 9 + 2 * ph, 9 + 2 * pw), np.float32)
    padded[:, :, ph:ph + 9, pw:pw + 9] = _np(x)
    top, left = _np(t.last_params["top"]), _np(t.last_params["left"])
    assert top.min() >= 0 and top.max() <= 9 + 2 * ph - th
    for n in range(7):
        np.testing.assert_array_equal(
            out[n], padded[n, :, top[n]:top[n] + th, left[n]:left[n] + tw]
        )


def test_random_crop_too_big(backend):
    with pytest.raises(ValueError, match="RandomCrop.*larger"):
        T.RandomCrop(12)(_batch(backend))


def test_random_crop_checks_its_pairs():
    """size and padding go through gpucnn.backend.geometry.pair: ValueError for a wrong length,
    item type or value, TypeError for neither an int nor a sequence, naming RandomCrop."""
    t = T.RandomCrop(np.int64(7), padding=[1, np.int32(2)])
    assert t.size == (7, 7) and t.padding == (1, 2)
    with pytest.raises(ValueError, match=r"RandomCrop: size must be >= 1, got \(0, 4\)"):
        T.RandomCrop((0, 4))
    with pytest.raises(ValueError, match=r"RandomCrop: size must be an int or a pair of ints, "
                                         r"got \(3, 4, 5\)"):
        T.RandomCrop((3, 4, 5))
    with pytest.raises(ValueError, match=r"RandomCrop: padding must be >= 0, got \(-1, -1\)"):
        T.RandomCrop(4, padding=-1)
    with pytest.raises(ValueError, match=r"RandomCrop: padding must be an int or a pair.*2.5"):
        T.RandomCrop(4, padding=(2.5, 1))
    with pytest.raises(TypeError, match=r"RandomCrop: size must be an int or a pair.*None"):
        T.RandomCrop(None)


# ----------------------------------------------------------------------------- photometric


def test_normalize(backend):
    x = _batch(backend)
    out = _np(T.Normalize([0.1, 0.2, 0.3], [0.5, 0.25, 2.0])(x))
    ref = (_np(x) - np.array([0.1, 0.2, 0.3])[:, None, None]) / np.array([.5, .25, 2.])[:, None,
                                                                                           None]
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)
    assert out.dtype == np.float32
    with pytest.raises(ValueError, match="mean has 2 values, the batch has 3 channels"):
        T.Normalize([0.1, 0.2], 1.0)(x)
    with pytest.raises(ValueError, match="non-zero"):
        T.Normalize(0.0, 0.0)


def test_grayscale_hand_formula(backend):
    x = _batch(backend)
    xn = _np(x)
    ref = 0.299 * xn[:, 0] + 0.587 * xn[:, 1] + 0.114 * xn[:, 2]
    g1 = _np(T.Grayscale()(x))
    assert g1.shape == (5, 1, 9, 9)
    np.testing.assert_allclose(g1[:, 0], ref, rtol=1e-6)
    g3 = _np(T.Grayscale(3)(x))
    assert g3.shape == (5, 3, 9, 9) and np.array_equal(g3[:, 0], g3[:, 2])


def test_hsv_against_colorsys_and_roundtrip(backend):
    x = _batch(backend, (2, 3, 6, 7), seed=5, dtype=np.float64)
    xn = _np(x)
    xn[0, :, 0, 0] = 0.5  # a gray pixel
    xn[0, :, 0, 1] = (1.0, 0.0, 0.0)  # pure red
    x = backend.xp.asarray(xn)
    hsv = _np(T.rgb_to_hsv(x))
    ref = np.array([colorsys.rgb_to_hsv(*xn[n, :, i, j]) for n in range(2) for i in range(6)
                    for j in range(7)]).reshape(2, 6, 7, 3).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(hsv, ref, atol=1e-12)
    np.testing.assert_allclose(_np(T.hsv_to_rgb(backend.xp.asarray(hsv))), xn, atol=1e-12)
    back = np.array([colorsys.hsv_to_rgb(*ref[n, :, i, j]) for n in range(2) for i in range(6)
                     for j in range(7)]).reshape(2, 6, 7, 3).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(_np(T.hsv_to_rgb(backend.xp.asarray(ref))), back, atol=1e-12)


def test_color_jitter_range_and_identity(backend):
    x = _batch(backend, (16, 3, 8, 8))
    out = _np(T.ColorJitter(0.8, 0.8, 0.8, 0.4)(x))
    assert out.min() >= 0.0 and out.max() <= 1.0 and not np.allclose(out, _np(x))
    assert np.array_equal(_np(T.ColorJitter(brightness=(1.0, 1.0))(x)), _np(x))
    assert np.array_equal(_np(T.ColorJitter()(x)), _np(x))


def test_color_jitter_single_factors(backend):
    x = _batch(backend, (4, 3, 6, 6))
    xn = _np(x).astype(np.float64)
    b = _np(T.ColorJitter(brightness=(0.5, 0.5))(x))
    np.testing.assert_allclose(b, xn * 0.5, rtol=1e-6)
    c = _np(T.ColorJitter(contrast=(0.0, 0.0))(x))  # factor 0: every pixel = mean luma
    luma = 0.299 * xn[:, 0] + 0.587 * xn[:, 1] + 0.114 * xn[:, 2]
    np.testing.assert_allclose(c, np.broadcast_to(luma.mean(axis=(1, 2))[:, None, None, None],
                                                  xn.shape), rtol=1e-5)
    s = _np(T.ColorJitter(saturation=(0.0, 0.0))(x))  # factor 0: grayscale
    np.testing.assert_allclose(s, np.repeat(luma[:, None], 3, axis=1), rtol=1e-5)
    h = _np(T.ColorJitter(hue=(0.5, 0.5))(x))  # half turn of the hue wheel, via colorsys
    ref = np.empty_like(xn)
    for n in range(4):
        for i in range(6):
            for j in range(6):
                hh, ss, vv = colorsys.rgb_to_hsv(*xn[n, :, i, j])
                ref[n, :, i, j] = colorsys.hsv_to_rgb((hh + 0.5) % 1.0, ss, vv)
    np.testing.assert_allclose(h, ref, atol=1e-5)


def test_color_jitter_gray_images(backend):
    x = _batch(backend, (4, 1, 6, 6))
    assert np.array_equal(_np(T.ColorJitter(saturation=0.9, hue=0.3)(x)), _np(x))
    out = _np(T.ColorJitter(brightness=0.5, contrast=0.5)(x))
    assert out.shape == (4, 1, 6, 6) and 0 <= out.min() and out.max() <= 1


def test_gaussian_noise(backend):
    x = backend.xp.full((8, 1, 32, 32), 0.5, dtype=np.float32)
    out = _np(T.GaussianNoise(0.1)(x))
    assert abs(out.std() - 0.1) < 0.01 and abs(out.mean() - 0.5) < 0.01
    hi = _np(T.GaussianNoise(2.0)(x))
    assert hi.min() == 0.0 and hi.max() == 1.0
    assert _np(T.GaussianNoise(2.0, clip=False)(x)).max() > 1.0


# ----------------------------------------------------------------------------- plumbing


def _pipeline():
    return T.Compose([
        T.RandomCrop(9, padding=1), T.RandomHorizontalFlip(), T.RandomRotation(15),
        T.ColorJitter(0.3, 0.3, 0.3, 0.1), T.GaussianNoise(0.02),
        T.Normalize([0.5, 0.5, 0.5], [0.2, 0.2, 0.2]),
    ])


def test_determinism_under_manual_seed(backend):
    x = _batch(backend)
    gpucnn.manual_seed(7)
    a = _np(_pipeline()(x))
    gpucnn.manual_seed(7)
    b = _np(_pipeline()(x))
    c = _np(_pipeline()(x))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_explicit_generator(backend):
    x = _batch(backend)
    mk = (np.random.default_rng if backend.name == "numpy"
          else backend.xp.random.default_rng)
    a = _np(_pipeline()(x, generator=mk(1)))
    b = _np(_pipeline()(x, generator=mk(1)))
    assert np.array_equal(a, b)


def test_tensor_in_tensor_out(backend):
    x = gpucnn.Tensor(_batch(backend), requires_grad=True)
    out = T.RandomRotation((90, 90))(x)
    assert isinstance(out, gpucnn.Tensor) and not out.requires_grad
    assert np.array_equal(out.numpy(), np.rot90(x.numpy(), 1, axes=(2, 3)))


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"RandomRotation: expected a batch \(N, C, H, W\)"):
        T.RandomRotation(10)(np.zeros((3, 4, 4), np.float32))
    with pytest.raises(TypeError, match="floating-point"):
        T.RandomHorizontalFlip()(np.zeros((1, 1, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="hue"):
        T.ColorJitter(hue=0.7)
    with pytest.raises(ValueError, match="rgb_to_hsv"):
        T.rgb_to_hsv(np.zeros((1, 1, 2, 2)))


def test_torchvision_parity_if_available():
    tv = pytest.importorskip("torchvision")
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).random((2, 3, 8, 8)).astype(np.float32)
    ref = tv.transforms.functional.rotate(torch.from_numpy(x), 90.0).numpy()
    np.testing.assert_allclose(T.RandomRotation((90, 90))(x), ref, atol=1e-6)
    g = tv.transforms.functional.rgb_to_grayscale(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(T.Grayscale()(x), g, atol=1e-6)
