"""Batch augmentation on whole NCHW batches, on either backend.

Every transform takes a batch ``x`` of shape ``(N, C, H, W)`` (float32 or float64, pixel values
in [0, 1] where a transform says so) as a NumPy array, a CuPy array or a :class:`gpucnn.Tensor`
and returns the same kind (a Tensor comes back as a new Tensor without history: augmentation
is not differentiated). All arithmetic uses the batch's own array module, so on the CUDA
backend it runs on the GPU. Random parameters are drawn per sample from ``generator`` when one
is passed (``t(x, generator=g)``, a NumPy or CuPy ``Generator`` of the batch's backend), else
from :func:`gpucnn.random.generator` of the batch's backend, so results are reproducible under
:func:`gpucnn.manual_seed`. Only ``generator.random`` and ``generator.standard_normal`` are
used, which both NumPy and CuPy generators provide.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gpucnn.backend.device import array_module as _array_module
from gpucnn.backend.device import is_array as _is_array
from gpucnn.backend.geometry import pair

__all__ = [
    "ColorJitter",
    "Compose",
    "GaussianNoise",
    "Grayscale",
    "Normalize",
    "RandomAffine",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomRotation",
    "RandomTranslation",
    "RandomVerticalFlip",
    "Transform",
    "affine_grid_sample",
    "crop",
    "hsv_to_rgb",
    "rgb_to_grayscale",
    "rgb_to_hsv",
]

_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2


# ----------------------------------------------------------------------------- helpers


def _xp(a: Any) -> Any:
    return _array_module(a)


def _backend_name(a: Any) -> str:
    return "numpy" if isinstance(a, np.ndarray) else "cuda"


def _unwrap(x: Any, who: str) -> tuple[Any, bool]:
    from gpucnn.tensor import Tensor

    is_tensor = isinstance(x, Tensor)
    arr = x.data if is_tensor else x
    if not _is_array(arr):
        raise TypeError(f"{who}: expected a NumPy/CuPy array or a Tensor, got {type(x).__name__}")
    if arr.ndim != 4:
        raise ValueError(f"{who}: expected a batch (N, C, H, W), got shape {tuple(arr.shape)}")
    if arr.dtype.kind != "f":
        raise TypeError(f"{who}: expected a floating-point batch, got dtype {arr.dtype}")
    return arr, is_tensor


def _wrap(arr: Any, is_tensor: bool) -> Any:
    if not is_tensor:
        return arr
    from gpucnn.tensor import Tensor

    return Tensor(arr)


def _generator(arr: Any, generator: Any) -> Any:
    if generator is not None:
        return generator
    from gpucnn import random as _random

    return _random.generator(_backend_name(arr))


def _uniform(gen: Any, n: int, low: float, high: float) -> Any:
    """``n`` draws uniform in [low, high) (float64, on the generator's device)."""
    return low + (high - low) * gen.random(n)


def _integers(gen: Any, high: int, n: int, xp: Any) -> Any:
    """``n`` integers uniform in [0, high)."""
    u = gen.random(n)
    return xp.minimum(xp.floor(u * high), high - 1).astype(np.int64)


def _range(value: float | Sequence[float], name: str, center: float = 0.0,
           bound: tuple[float, float] | None = None) -> tuple[float, float]:
    """A number ``v`` means [center - v, center + v]; a pair is taken as is."""
    if isinstance(value, numbers.Number):
        if value < 0:
            raise ValueError(f"{name} must be non-negative, got {value}")
        lo, hi = center - float(value), center + float(value)
        if bound is not None:
            lo = max(lo, bound[0])
    else:
        lo, hi = (float(v) for v in value)
    if lo > hi or (bound is not None and (lo < bound[0] or hi > bound[1])):
        raise ValueError(f"{name} range {(lo, hi)} is invalid (bounds {bound})")
    return lo, hi


def _pad_hw(x: Any, ph: int, pw: int, fill: float) -> Any:
    """``x`` (N, C, H, W) with ``ph`` rows / ``pw`` columns of ``fill`` on each side."""
    xp = _xp(x)
    n, c, h, w = x.shape
    out = xp.full((n, c, h + 2 * ph, w + 2 * pw), fill, dtype=x.dtype)
    out[:, :, ph:ph + h, pw:pw + w] = x
    return out


class Transform:
    """Base class: ``t(x, generator=None)`` validates and unwraps ``x``, then calls
    :meth:`apply` on the raw array with the generator to use (None for deterministic ones)."""

    random = True

    def __call__(self, x: Any, generator: Any = None) -> Any:
        arr, is_tensor = _unwrap(x, type(self).__name__)
        gen = _generator(arr, generator) if self.random else None
        return _wrap(self.apply(arr, gen), is_tensor)

    def apply(self, x: Any, gen: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_")
                         and k != "last_params")
        return f"{type(self).__name__}({args})"


class Compose(Transform):
    """Apply ``transforms`` in order; a generator passed in is handed to each of them.
    Plain callables (``f(x) -> x``) are allowed too."""

    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = list(transforms)

    def __call__(self, x: Any, generator: Any = None) -> Any:
        for t in self.transforms:
            x = t(x, generator=generator) if isinstance(t, Transform) else t(x)
        return x

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(map(repr, self.transforms)) + "])"


# ----------------------------------------------------------------------------- deterministic


class Normalize(Transform):
    """``(x - mean[c]) / std[c]`` per channel; ``mean``/``std`` scalars or length-C sequences."""

    random = False

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float]) -> None:
        self.mean = np.atleast_1d(np.asarray(mean, dtype=np.float64))
        self.std = np.atleast_1d(np.asarray(std, dtype=np.float64))
        if np.any(self.std == 0):
            raise ValueError(f"Normalize: std must be non-zero, got {self.std.tolist()}")

    def apply(self, x: Any, gen: Any) -> Any:
        xp = _xp(x)
        c = x.shape[1]
        for name, v in (("mean", self.mean), ("std", self.std)):
            if v.shape[0] not in (1, c):
                raise ValueError(f"Normalize: {name} has {v.shape[0]} values, the batch has {c} "
                                 "channels")
        m = xp.asarray(self.mean, dtype=x.dtype).reshape(1, -1, 1, 1)
        s = xp.asarray(self.std, dtype=x.dtype).reshape(1, -1, 1, 1)
        return (x - m) / s


def rgb_to_grayscale(x: Any, num_output_channels: int = 1) -> Any:
    """ITU-R 601-2 luma ``0.299 R + 0.587 G + 0.114 B`` of ``(N, 3, H, W)`` (a 1-channel batch
    is returned as is), repeated to ``num_output_channels``; arrays in, arrays out."""
    xp = _xp(x)
    if x.shape[1] == 3:
        g = (_LUMA[0] * x[:, 0] + _LUMA[1] * x[:, 1] + _LUMA[2] * x[:, 2])[:, None]
        g = g.astype(x.dtype, copy=False)
    elif x.shape[1] == 1:
        g = x
    else:
        raise ValueError(f"rgb_to_grayscale: expected 1 or 3 channels, got {x.shape[1]}")
    return xp.repeat(g, num_output_channels, axis=1) if num_output_channels != 1 else g.copy()


class Grayscale(Transform):
    """Luma (ITU-R 601-2) with ``num_output_channels`` of 1 or 3."""

    random = False

    def __init__(self, num_output_channels: int = 1) -> None:
        if num_output_channels not in (1, 3):
            raise ValueError(f"Grayscale: num_output_channels must be 1 or 3, got "
                             f"{num_output_channels}")
        self.num_output_channels = num_output_channels

    def apply(self, x: Any, gen: Any) -> Any:
        return rgb_to_grayscale(x, self.num_output_channels)


def rgb_to_hsv(x: Any) -> Any:
    """RGB ``(N, 3, H, W)`` in [0, 1] to HSV ``(N, 3, H, W)``: hue in [0, 1), saturation,
    value (the :mod:`colorsys` conventions, vectorised)."""
    xp = _xp(x)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"rgb_to_hsv: expected (N, 3, H, W), got {tuple(x.shape)}")
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    maxc = xp.maximum(xp.maximum(r, g), b)
    minc = xp.minimum(xp.minimum(r, g), b)
    delta = maxc - minc
    gray = delta == 0
    s = xp.where(maxc > 0, delta / xp.where(maxc > 0, maxc, 1), 0)
    d = xp.where(gray, 1, delta)
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    h = xp.where(maxc == r, bc - gc, xp.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = xp.where(gray, 0, (h / 6.0) % 1.0)
    return xp.stack([h, s, maxc], axis=1).astype(x.dtype, copy=False)


def hsv_to_rgb(x: Any) -> Any:
    """HSV ``(N, 3, H, W)`` (hue in [0, 1)) back to RGB; inverse of :func:`rgb_to_hsv`."""
    xp = _xp(x)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"hsv_to_rgb: expected (N, 3, H, W), got {tuple(x.shape)}")
    h, s, v = x[:, 0], x[:, 1], x[:, 2]
    h6 = (h % 1.0) * 6.0
    i = xp.floor(h6)
    f = h6 - i
    i = i.astype(np.int64) % 6
    p = v * (1.0 - s)
    q = v * (1.0 - s * f)
    t = v * (1.0 - s * (1.0 - f))
    # sector i: (r, g, b) = (v,t,p) (q,v,p) (p,v,t) (p,q,v) (t,p,v) (v,p,q)
    table = {0: (v, t, p), 1: (q, v, p), 2: (p, v, t), 3: (p, q, v), 4: (t, p, v), 5: (v, p, q)}
    out = []
    for ch in range(3):
        res = table[5][ch]
        for k in range(4, -1, -1):
            res = xp.where(i == k, table[k][ch], res)
        out.append(res)
    return xp.stack(out, axis=1).astype(x.dtype, copy=False)


def crop(x: Any, top: Any, left: Any, height: int, width: int) -> Any:
    """Per-sample crop: ``out[n] = x[n, :, top[n]:top[n]+height, left[n]:left[n]+width]``
    (``top``/``left`` integer arrays of length N on the batch's device), one gather."""
    xp = _xp(x)
    n, c = x.shape[:2]
    top = xp.asarray(top, dtype=np.int64)
    left = xp.asarray(left, dtype=np.int64)
    rows = top[:, None] + xp.arange(height)[None, :]
    cols = left[:, None] + xp.arange(width)[None, :]
    ni = xp.arange(n)[:, None, None, None]
    ci = xp.arange(c)[None, :, None, None]
    return x[ni, ci, rows[:, None, :, None], cols[:, None, None, :]]


# ----------------------------------------------------------------------------- geometric


class RandomCrop(Transform):
    """Zero-pad by ``padding`` on every side (int, or (pad_h, pad_w)), then crop ``size``
    (int or (h, w)) at a per-sample random offset. The offsets drawn last are kept in
    ``self.last_params`` (``{"top": ..., "left": ...}``, in padded coordinates)."""

    def __init__(self, size: int | Sequence[int], padding: int | Sequence[int] = 0,
                 fill: float = 0.0) -> None:
        self.size = pair(size, "size", "RandomCrop")
        self.padding = pair(padding, "padding", "RandomCrop", minimum=0)
        self.fill = float(fill)
        self.last_params: dict | None = None

    def apply(self, x: Any, gen: Any) -> Any:
        xp = _xp(x)
        n, _, h, w = x.shape
        ph, pw = self.padding
        if ph or pw:
            x = _pad_hw(x, ph, pw, self.fill)
        th, tw = self.size
        hp, wp = h + 2 * ph, w + 2 * pw
        if th > hp or tw > wp:
            raise ValueError(f"RandomCrop: crop size {self.size} is larger than the padded image "
                             f"{(hp, wp)}")
        top = _integers(gen, hp - th + 1, n, xp)
        left = _integers(gen, wp - tw + 1, n, xp)
        self.last_params = {"top": top, "left": left}
        return crop(x, top, left, th, tw)


class RandomHorizontalFlip(Transform):
    """Mirror left-right each sample with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = float(p)

    def apply(self, x: Any, gen: Any) -> Any:
        xp = _xp(x)
        flip = gen.random(x.shape[0]) < self.p
        return xp.where(flip[:, None, None, None], x[:, :, :, ::-1], x)


class RandomVerticalFlip(Transform):
    """Mirror top-bottom each sample with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = float(p)

    def apply(self, x: Any, gen: Any) -> Any:
        xp = _xp(x)
        flip = gen.random(x.shape[0]) < self.p
        return xp.where(flip[:, None, None, None], x[:, :, ::-1, :], x)


def affine_grid_sample(x: Any, angle: Any, tx: Any = None, ty: Any = None, scale: Any = None,
                       fill: float = 0.0) -> Any:
    """Bilinear per-sample affine warp about the image centre.

    Output pixel ``(i, j)`` of sample ``n`` samples the input where rotating it by
    ``angle[n]`` degrees counter-clockwise (as displayed, rows going down), scaling by
    ``scale[n]`` and shifting by ``(tx[n], ty[n])`` pixels lands it. The centre is
    ``((H-1)/2, (W-1)/2)``. Neighbours outside the image count as ``fill``. Source coordinates
    within 1e-6 of an integer are snapped, so multiples of 90 degrees are exact.

    Args:
        x: ``(N, C, H, W)`` floating batch.
        angle, tx, ty, scale: length-N arrays on the batch's device (or None: 0, 0, 0, 1).
    """
    xp = _xp(x)
    n, c, h, w = x.shape
    f64 = np.float64
    angle = xp.asarray(angle, dtype=f64).reshape(n)
    rad = angle * (math.pi / 180.0)
    inv_s = 1.0 / (xp.asarray(scale, dtype=f64).reshape(n) if scale is not None
                   else xp.ones(n, dtype=f64))
    cos = (xp.cos(rad) * inv_s)[:, None, None]
    sin = (xp.sin(rad) * inv_s)[:, None, None]
    tx = xp.zeros(n, f64) if tx is None else xp.asarray(tx, dtype=f64).reshape(n)
    ty = xp.zeros(n, f64) if ty is None else xp.asarray(ty, dtype=f64).reshape(n)
    # Per-pixel coordinate math in the batch's precision (float32 batches: float32 grid, as
    # torchvision); snapping tolerance to match.
    cdt = x.dtype
    tol = 1e-4 if cdt == np.float32 else 1e-9
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    cos, sin = cos.astype(cdt), sin.astype(cdt)
    dx = xp.arange(w, dtype=cdt)[None, None, :] - (cx + tx).astype(cdt)[:, None, None]
    dy = xp.arange(h, dtype=cdt)[None, :, None] - (cy + ty).astype(cdt)[:, None, None]
    sx = (cos * dx - sin * dy) + cdt.type(cx)  # (N, H, W) source column
    sy = (sin * dx + cos * dy) + cdt.type(cy)  # (N, H, W) source row
    for s in (sx, sy):
        r = xp.rint(s)
        s[...] = xp.where(xp.abs(s - r) < tol, r, s)
    x0 = xp.floor(sx)
    y0 = xp.floor(sy)
    wx1 = (sx - x0).reshape(n, 1, h * w)
    wy1 = (sy - y0).reshape(n, 1, h * w)
    wx0, wy0 = 1 - wx1, 1 - wy1
    # A one-pixel border of ``fill`` absorbs every out-of-range neighbour: coordinates are
    # clipped to [-1, H] x [-1, W] and shifted by one, so no validity mask is needed.
    hp, wp = h + 2, w + 2
    x0 = x0.astype(np.int64).reshape(n, 1, h * w)
    y0 = y0.astype(np.int64).reshape(n, 1, h * w)
    cols = (xp.minimum(xp.maximum(x0, -1), w) + 1, xp.minimum(xp.maximum(x0, -2), w - 1) + 2)
    rows = ((xp.minimum(xp.maximum(y0, -1), h) + 1) * wp,
            (xp.minimum(xp.maximum(y0, -2), h - 1) + 2) * wp)
    padded = _pad_hw(x, 1, 1, fill).reshape(-1)
    base = (xp.arange(n * c, dtype=np.int64) * (hp * wp)).reshape(n, c, 1)
    out = None
    for row, wy in zip(rows, (wy0, wy1)):
        for col, wx in zip(cols, (wx0, wx1)):
            term = (wy * wx) * xp.take(padded, base + (row + col))
            out = term if out is None else out + term
    return out.reshape(n, c, h, w).astype(x.dtype, copy=False)


class RandomAffine(Transform):
    """Per-sample random rotation, translation and scale, bilinear, about the centre.

    Args:
        degrees: angle range: ``d`` means [-d, d]; or a pair (counter-clockwise positive).
        translate: ``(a, b)``: shifts drawn in [-a W, a W] x [-b H, b H], rounded to pixels.
        scale: ``(lo, hi)``: zoom factor range.
        fill: value for pixels that come from outside the image.
    """

    def __init__(self, degrees: float | Sequence[float] = 0.0,
                 translate: Sequence[float] | None = None,
                 scale: Sequence[float] | None = None, fill: float = 0.0) -> None:
        self.degrees = _range(degrees, "degrees")
        self.translate = None if translate is None else tuple(float(t) for t in translate)
        if self.translate is not None and not all(0 <= t <= 1 for t in self.translate):
            raise ValueError(f"translate values must be in [0, 1], got {self.translate}")
        self.scale = None if scale is None else _range(scale, "scale")
        if self.scale is not None and self.scale[0] <= 0:
            raise ValueError(f"scale must be positive, got {self.scale}")
        self.fill = float(fill)
        self.last_params: dict | None = None

    def apply(self, x: Any, gen: Any) -> Any:
        xp = _xp(x)
        n, _, h, w = x.shape
        angle = _uniform(gen, n, *self.degrees)
        tx = ty = scale = None
        if self.translate is not None:
            mx, my = self.translate[0] * w, self.translate[1] * h
            tx = xp.round(_uniform(gen, n, -mx, mx))
            ty = xp.round(_uniform(gen, n, -my, my))
        if self.scale is not None:
            scale = _uniform(gen, n, *self.scale)
        self.last_params = {"angle": angle, "tx": tx, "ty": ty, "scale": scale}
        return affine_grid_sample(x, angle, tx, ty, scale, self.fill)


class RandomRotation(RandomAffine):
    """Per-sample rotation by an angle uniform in ``degrees`` (``d`` → [-d, d]),
    counter-clockwise positive, bilinear, about the image centre; outside pixels ``fill``."""

    def __init__(self, degrees: float | Sequence[float], fill: float = 0.0) -> None:
        super().__init__(degrees=degrees, fill=fill)


class RandomTranslation(RandomAffine):
    """Per-sample shift by up to ``(a W, b H)`` whole pixels, zero (``fill``) filled."""

    def __init__(self, translate: Sequence[float], fill: float = 0.0) -> None:
        super().__init__(degrees=0.0, translate=translate, fill=fill)


# ----------------------------------------------------------------------------- photometric


class GaussianNoise(Transform):
    """Add ``N(0, std^2)`` noise per pixel; clip to [0, 1] when ``clip``."""

    def __init__(self, std: float, clip: bool = True) -> None:
        if std < 0:
            raise ValueError(f"GaussianNoise: std must be non-negative, got {std}")
        self.std = float(std)
        self.clip = bool(clip)

    def apply(self, x: Any, gen: Any) -> Any:
        xp = _xp(x)
        noise = gen.standard_normal(x.shape, dtype=x.dtype)
        y = x + x.dtype.type(self.std) * noise
        return xp.clip(y, 0.0, 1.0) if self.clip else y


def _blend(xp: Any, img: Any, other: Any, factor: Any) -> Any:
    return xp.clip(factor * img + (1.0 - factor) * other, 0.0, 1.0)


class ColorJitter(Transform):
    """Random brightness, contrast, saturation and hue (torchvision semantics), per sample.

    Each factor is drawn per sample: brightness/contrast/saturation ``b`` mean a factor uniform
    in ``[max(0, 1 - b), 1 + b]`` (or give a ``(lo, hi)`` pair); hue ``h`` (at most 0.5) means a
    hue shift uniform in ``[-h, h]`` (fraction of the colour wheel). The four adjustments are
    applied in a random order (one order per batch). Brightness scales, contrast blends with the
    mean luma of the image, saturation blends with the per-pixel luma, hue rotates the HSV hue;
    results are clipped to [0, 1]. On 1-channel batches saturation and hue are no-ops.
    """

    def __init__(self, brightness: float | Sequence[float] = 0, contrast: float | Sequence[float]
                 = 0, saturation: float | Sequence[float] = 0, hue: float | Sequence[float] = 0
                 ) -> None:
        self.brightness = self._factor_range(brightness, "brightness")
        self.contrast = self._factor_range(contrast, "contrast")
        self.saturation = self._factor_range(saturation, "saturation")
        self.hue = self._hue_range(hue)

    @staticmethod
    def _factor_range(v: float | Sequence[float], name: str) -> tuple[float, float] | None:
        lo, hi = _range(v, name, center=1.0, bound=(0.0, math.inf))
        return None if lo == hi == 1.0 else (lo, hi)

    @staticmethod
    def _hue_range(v: float | Sequence[float]) -> tuple[float, float] | None:
        lo, hi = _range(v, "hue", center=0.0, bound=(-0.5, 0.5))
        return None if lo == hi == 0.0 else (lo, hi)

    def apply(self, x: Any, gen: Any) -> Any:
        xp = _xp(x)
        n, c = x.shape[:2]
        order = [int(i) for i in np.argsort(_to_host(gen.random(4)), kind="stable")]
        dt = x.dtype.type
        for op in order:
            if op == 0 and self.brightness is not None:
                f = _uniform(gen, n, *self.brightness).astype(x.dtype)[:, None, None, None]
                x = _blend(xp, x, dt(0), f)
            elif op == 1 and self.contrast is not None:
                f = _uniform(gen, n, *self.contrast).astype(x.dtype)[:, None, None, None]
                mean = rgb_to_grayscale(x).mean(axis=(1, 2, 3), keepdims=True)
                x = _blend(xp, x, mean, f)
            elif op == 2 and self.saturation is not None:
                f = _uniform(gen, n, *self.saturation).astype(x.dtype)[:, None, None, None]
                if c == 3:
                    x = _blend(xp, x, rgb_to_grayscale(x), f)
            elif op == 3 and self.hue is not None:
                f = _uniform(gen, n, *self.hue).astype(x.dtype)[:, None, None]
                if c == 3:
                    hsv = rgb_to_hsv(x)
                    hsv[:, 0] = (hsv[:, 0] + f) % 1.0
                    x = hsv_to_rgb(hsv)
        return x.astype(x.dtype, copy=False)


def _to_host(a: Any) -> np.ndarray:
    return a if isinstance(a, np.ndarray) else a.get()
