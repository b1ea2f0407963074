"""Classic image filters (edge detectors) run through :func:`gpucnn.functional.conv2d`.

Kernels are applied as deep-learning convolutions, i.e. cross-correlations:
``out[y, x] = sum_ij k[i, j] * img[y + i - kh//2, x + j - kw//2]`` (zero padding). Signs:

* :func:`vertical_edge` ``[[1, 0, -1]] * 3``: positive where the image gets darker from left
  to right (bright on the left of a vertical edge); :func:`horizontal_edge` is its transpose
  (positive where it gets darker from top to bottom).
* :func:`sobel` / :func:`scharr` / :func:`prewitt` with ``direction="x"`` are derivative
  estimates: positive where the intensity *increases* to the right (``"y"``: downwards),
  the convention of ``scipy.ndimage.sobel``.

:func:`filter2d` takes ``(N, C, H, W)`` or ``(H, W)`` images (NumPy/CuPy arrays or Tensors)
and applies a ``(kh, kw)`` kernel to every channel separately (a depthwise convolution,
``groups=C``); Tensor inputs give Tensors with autograd, arrays give arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "edge_magnitude",
    "filter2d",
    "horizontal_edge",
    "laplacian",
    "prewitt",
    "scharr",
    "sobel",
    "vertical_edge",
]


def vertical_edge() -> np.ndarray:
    """The 3x3 vertical-edge kernel ``[[1, 0, -1], [1, 0, -1], [1, 0, -1]]`` (float32)."""
    return np.array([[1, 0, -1]] * 3, dtype=np.float32)


def horizontal_edge() -> np.ndarray:
    """The 3x3 horizontal-edge kernel ``[[1, 1, 1], [0, 0, 0], [-1, -1, -1]]`` (float32)."""
    return vertical_edge().T.copy()


def _directional(smooth: list[float], direction: str, name: str) -> np.ndarray:
    if direction not in ("x", "y"):
        raise ValueError(f"{name}: direction must be 'x' or 'y', got {direction!r}")
    k = np.outer(np.asarray(smooth, np.float32), np.array([-1, 0, 1], np.float32))
    return k if direction == "x" else k.T.copy()


def sobel(direction: str = "x") -> np.ndarray:
    """Sobel kernel: ``"x"`` = ``[[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]``; ``"y"`` its transpose."""
    return _directional([1, 2, 1], direction, "sobel")


def scharr(direction: str = "x") -> np.ndarray:
    """Scharr kernel: ``"x"`` = ``[[-3, 0, 3], [-10, 0, 10], [-3, 0, 3]]``; ``"y"`` transposed."""
    return _directional([3, 10, 3], direction, "scharr")


def prewitt(direction: str = "x") -> np.ndarray:
    """Prewitt kernel: ``"x"`` = ``[[-1, 0, 1]] * 3``; ``"y"`` its transpose."""
    return _directional([1, 1, 1], direction, "prewitt")


def laplacian() -> np.ndarray:
    """The 4-neighbour Laplacian ``[[0, 1, 0], [1, -4, 1], [0, 1, 0]]``."""
    return np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=np.float32)


def filter2d(images: Any, kernel: Any, padding: str | int = "same") -> Any:
    """Apply ``kernel`` (kh, kw) to every channel of ``images`` (cross-correlation).

    Args:
        images: ``(N, C, H, W)`` or ``(H, W)``; a NumPy/CuPy floating array or a Tensor.
        kernel: ``(kh, kw)`` array-like; cast to the images' dtype and backend.
        padding: ``"same"`` (output H x W, zero padded), ``"valid"`` or an int, as in
            :func:`gpucnn.functional.conv2d`.

    Returns:
        The filtered images, same rank as the input (``(N, C, H', W')`` or ``(H', W')``);
        a Tensor for a Tensor input, else an array of the input's backend.
    """
    import gpucnn.functional as F
    from gpucnn.backend import to_numpy
    from gpucnn.tensor import Tensor

    is_tensor = isinstance(images, Tensor)
    x = images if is_tensor else Tensor(images)
    if x.ndim not in (2, 4):
        raise ValueError(f"filter2d: images must be (N, C, H, W) or (H, W), got shape {x.shape}")
    if x.dtype.kind != "f":
        x = x.astype(np.float32)
    squeeze = x.ndim == 2
    if squeeze:
        x = x.reshape(1, 1, *x.shape)
    k = kernel.numpy() if isinstance(kernel, Tensor) else to_numpy(kernel)
    k = np.asarray(k, dtype=x.dtype)
    if k.ndim != 2:
        raise ValueError(f"filter2d: kernel must be (kh, kw), got shape {k.shape}")
    c = x.shape[1]
    w = Tensor(x.xp.asarray(np.ascontiguousarray(np.broadcast_to(k, (c, 1, *k.shape)))))
    y = F.conv2d(x, w, padding=padding, groups=c)
    if squeeze:
        y = y.reshape(*y.shape[2:])
    return y if is_tensor else y.data


_KINDS = {"sobel": sobel, "scharr": scharr, "prewitt": prewitt}


def edge_magnitude(images: Any, kind: str = "sobel") -> Any:
    """Gradient magnitude ``sqrt(gx**2 + gy**2)`` with the ``kind`` (``"sobel"``, ``"scharr"``,
    ``"prewitt"``) x and y kernels, "same" zero padding; shapes as :func:`filter2d`."""
    if kind not in _KINDS:
        raise ValueError(f"edge_magnitude: kind must be one of {sorted(_KINDS)}, got {kind!r}")
    gx = filter2d(images, _KINDS[kind]("x"))
    gy = filter2d(images, _KINDS[kind]("y"))
    from gpucnn.tensor import Tensor

    if isinstance(gx, Tensor):
        return (gx * gx + gy * gy).sqrt()
    from gpucnn.backend import backend_of

    return backend_of(gx).xp.sqrt(gx * gx + gy * gy)
