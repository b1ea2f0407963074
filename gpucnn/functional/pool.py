"""2-D pooling ops: max, average, adaptive and global pooling (PyTorch semantics, NCHW).

Every op takes a 4-D input ``(N, C, H, W)`` (the ops PyTorch has also an unbatched
``(C, H, W)``, returning a 3-D result) and runs on the input's backend through the
primitives of :mod:`gpucnn.backend.numpy_ops.pool` / :mod:`gpucnn.backend.cuda_ops.pool`.
Max-pooling indices are int64 flat positions ``h*W + w`` inside each input plane, exactly
PyTorch's ``return_indices``. Backward passes are deterministic gathers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gpucnn.backend import backend_of
from gpucnn.backend.geometry import pair
from gpucnn.functional._dtypes import require_float
from gpucnn.functional._unbatched import accepts_unbatched
from gpucnn.tensor import Context, Function, Tensor

__all__ = [
    "pool_output_size",
    "max_pool2d",
    "avg_pool2d",
    "adaptive_avg_pool2d",
    "adaptive_max_pool2d",
    "global_avg_pool2d",
    "global_max_pool2d",
]

IntPair = int | Sequence[int]


# --------------------------------------------------------------------------- argument checks


def _one_for_both(v: Any) -> Any:
    """A one-item sequence ``(k,)`` as ``(k, k)``, as PyTorch's pooling accepts it."""
    if isinstance(v, (list, tuple)) and len(v) == 1:
        return (v[0], v[0])
    return v


def _check_4d(op: str, x: Any, unbatched: bool = True) -> Tensor:
    if not isinstance(x, Tensor):
        x = Tensor(x)
    if x.ndim != 4:
        forms = "a 3-D (C, H, W) or 4-D (N, C, H, W)" if unbatched else "a 4-D (N, C, H, W)"
        raise ValueError(
            f"{op}: expected {forms} input, got a {x.ndim}-D input of shape {x.shape}"
        )
    return require_float(op, x, "input")


def pool_output_size(
    size: int, kernel: int, stride: int, padding: int, dilation: int = 1, ceil_mode: bool = False
) -> int:
    """PyTorch's pooled length of an axis of ``size``.

    ``floor_or_ceil((size + 2*padding - dilation*(kernel-1) - 1) / stride) + 1``; with
    ``ceil_mode`` the last window must start inside the input or the left padding.
    """
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    if ceil_mode:
        out = (span + stride - 1) // stride + 1
        if out > 0 and (out - 1) * stride >= size + padding:
            out -= 1
    else:
        out = span // stride + 1
    return out


def _window_args(
    op: str,
    x: Tensor,
    kernel_size: IntPair,
    stride: IntPair | None,
    padding: IntPair,
    dilation: IntPair,
    ceil_mode: bool,
) -> tuple[tuple[int, int], ...]:
    """Validated ``(kernel, stride, padding, dilation, out)`` pairs of a windowed pooling op."""
    k = pair(_one_for_both(kernel_size), "kernel_size", op)
    empty_stride = stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0)
    s = k if empty_stride else pair(_one_for_both(stride), "stride", op)
    p = pair(_one_for_both(padding), "padding", op, minimum=0)
    d = pair(_one_for_both(dilation), "dilation", op)
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ValueError(
            f"{op}: padding must be at most half the kernel size in each dim, got padding={p} "
            f"for kernel_size={k} (expected padding <= {(k[0] // 2, k[1] // 2)})"
        )
    h, w = x.shape[2], x.shape[3]
    out = (
        pool_output_size(h, k[0], s[0], p[0], d[0], ceil_mode),
        pool_output_size(w, k[1], s[1], p[1], d[1], ceil_mode),
    )
    if min(out) < 1:
        eff = (d[0] * (k[0] - 1) + 1, d[1] * (k[1] - 1) + 1)
        raise ValueError(
            f"{op}: input spatial size {(h, w)} with padding {p} is too small for the "
            f"(dilated) kernel {eff}: the output size would be {out}, expected >= 1 in each dim"
        )
    return k, s, p, d, out


# --------------------------------------------------------------------------- max pooling


def _empty_window(size: int, out: int, k: int, s: int, p: int, d: int) -> int | None:
    """The first output position along an axis whose dilated window has no tap inside
    ``[0, size)`` (taps ``o*s - p + i*d``, ``i < k``), or None when every window has one."""
    for o in range(out):
        start = o * s - p
        if not any(0 <= start + i * d < size for i in range(k)):
            return o
    return None


def _check_windows_touch_input(op: str, x: Tensor, args: tuple) -> None:
    """Refuse a dilated max pooling with a window lying entirely in the padding.

    Such a window has no input pixel: PyTorch returns -inf there with an index OUTSIDE the
    plane (e.g. 6 for a 2x2 input) and its backward then writes out of bounds; we raise.
    Only dilation > 1 can do it (padding <= kernel/2 keeps undilated windows inside).
    """
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (oh, ow) = args
    if dh == 1 and dw == 1:
        return
    h, w = x.shape[2], x.shape[3]
    for axis, (size, out, k, s, p, d) in (("H", (h, oh, kh, sh, ph, dh)),
                                           ("W", (w, ow, kw, sw, pw, dw))):
        o = _empty_window(size, out, k, s, p, d)
        if o is not None:
            raise ValueError(
                f"{op}: with input size {(h, w)}, kernel_size {(kh, kw)}, stride {(sh, sw)}, "
                f"padding {(ph, pw)} and dilation {(dh, dw)}, the window at output {axis} "
                f"position {o} lies entirely in the padding (no input pixel: its maximum "
                f"would be -inf with no valid index); use a smaller dilation or padding"
            )


class _MaxPool2d(Function):
    @staticmethod
    def forward(ctx: Context, x: Any, args: tuple, out_indices: dict) -> Any:
        (kh, kw), (sh, sw), (ph, pw), (dh, dw), (oh, ow) = args
        be = backend_of(x)
        y, argmax = be.maxpool2d_forward(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
        ctx.args, ctx.hw, ctx.argmax = args, x.shape[2:], argmax
        out_indices["indices"] = argmax
        return y

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        (kh, kw), (sh, sw), (ph, pw), (dh, dw), _ = ctx.args
        h, w = ctx.hw
        be = backend_of(g)
        return be.maxpool2d_backward(g, ctx.argmax, h, w, kh, kw, sh, sw, ph, pw, dh, dw)


@accepts_unbatched
def max_pool2d(
    x: Tensor,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """2-D max pooling of ``x`` (N, C, H, W) → (N, C, oh, ow), PyTorch semantics.

    Args:
        kernel_size, stride, padding, dilation: int or (h, w); ``stride`` defaults to
            ``kernel_size``; ``padding`` (implicit -inf) is at most half the kernel.
        ceil_mode: round the output size up (the last window must start inside the input or
            the left padding).
        return_indices: also return the int64 argmax ``h*W + w`` in each input plane.

    NaN is the maximum of any window containing it; ties go to the first position.
    """
    op = "max_pool2d"
    x = _check_4d(op, x)
    args = _window_args(op, x, kernel_size, stride, padding, dilation, bool(ceil_mode))
    _check_windows_touch_input(op, x, args)
    holder: dict = {}
    y = _MaxPool2d.apply(x, args, holder)
    if return_indices:
        return y, Tensor(holder["indices"])
    return y


# --------------------------------------------------------------------------- average pooling


class _AvgPool2d(Function):
    @staticmethod
    def forward(ctx: Context, x: Any, args: tuple, cip: bool, divisor: int) -> Any:
        (kh, kw), (sh, sw), (ph, pw), _, (oh, ow) = args
        be = backend_of(x)
        ctx.args, ctx.hw, ctx.cip, ctx.divisor = args, x.shape[2:], cip, divisor
        return be.avgpool2d_forward(x, kh, kw, sh, sw, ph, pw, oh, ow, cip, divisor)

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        (kh, kw), (sh, sw), (ph, pw), _, _ = ctx.args
        h, w = ctx.hw
        be = backend_of(g)
        return be.avgpool2d_backward(g, h, w, kh, kw, sh, sw, ph, pw, ctx.cip, ctx.divisor)


@accepts_unbatched
def avg_pool2d(
    x: Tensor,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: IntPair = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> Tensor:
    """2-D average pooling of ``x`` (N, C, H, W) → (N, C, oh, ow), PyTorch semantics.

    The divisor is ``divisor_override`` if given, else the window size clipped to the padded
    input (``count_include_pad=True``; ``ceil_mode`` windows running past the padded edge
    count only the part inside it) or to the input (``count_include_pad=False``).
    """
    op = "avg_pool2d"
    x = _check_4d(op, x)
    args = _window_args(op, x, kernel_size, stride, padding, 1, bool(ceil_mode))
    divisor = 0
    if divisor_override is not None:
        if isinstance(divisor_override, bool) or not hasattr(divisor_override, "__index__"):
            raise TypeError(f"{op}: divisor_override must be an int, got {divisor_override!r}")
        divisor = int(divisor_override)
        if divisor < 1:
            raise ValueError(f"{op}: divisor_override must be >= 1, got {divisor}")
    return _AvgPool2d.apply(x, args, bool(count_include_pad), divisor)


# --------------------------------------------------------------------------- adaptive pooling


def _adaptive_size(op: str, x: Tensor, output_size: Any) -> tuple[int, int]:
    h, w = x.shape[2], x.shape[3]
    if output_size is None:
        raise TypeError(f"{op}: output_size must be an int or a pair, got None")
    if isinstance(output_size, int) or hasattr(output_size, "__index__"):
        sizes: tuple = (output_size, output_size)
    else:
        if not isinstance(output_size, (tuple, list)) or len(output_size) != 2:
            raise (ValueError if isinstance(output_size, (str, tuple, list)) else TypeError)(
                f"{op}: output_size must be an int or a pair (oh, ow), got {output_size!r}"
            )
        sizes = tuple(output_size)
    for v in sizes:
        if v is not None and (isinstance(v, bool) or not hasattr(v, "__index__")):
            raise TypeError(
                f"{op}: output_size must be an int or a pair (oh, ow) of ints or None, got "
                f"{output_size!r}"
            )
    out = (h if sizes[0] is None else int(sizes[0]), w if sizes[1] is None else int(sizes[1]))
    if min(out) < 1:
        raise ValueError(f"{op}: output size must be >= 1 in each dim, got {out}")
    if h < 1 or w < 1:
        raise ValueError(f"{op}: input spatial size must be >= 1 in each dim, got {(h, w)}")
    return out


class _AdaptiveAvgPool2d(Function):
    @staticmethod
    def forward(ctx: Context, x: Any, oh: int, ow: int) -> Any:
        ctx.hw = x.shape[2:]
        return backend_of(x).adaptive_avgpool2d_forward(x, oh, ow)

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        h, w = ctx.hw
        return backend_of(g).adaptive_avgpool2d_backward(g, h, w)


@accepts_unbatched
def adaptive_avg_pool2d(x: Tensor, output_size: int | Sequence[int | None]) -> Tensor:
    """Adaptive average pooling of ``x`` (N, C, H, W) → (N, C, oh, ow).

    Bin ``i`` of an axis of length ``n`` pooled to ``m`` covers
    ``[floor(i*n/m), ceil((i+1)*n/m))`` (PyTorch's bins; ``m > n`` upsamples). ``output_size``
    is an int or a pair; ``None`` in the pair keeps that dim.
    """
    op = "adaptive_avg_pool2d"
    x = _check_4d(op, x)
    oh, ow = _adaptive_size(op, x, output_size)
    return _AdaptiveAvgPool2d.apply(x, oh, ow)


class _AdaptiveMaxPool2d(Function):
    @staticmethod
    def forward(ctx: Context, x: Any, oh: int, ow: int, out_indices: dict) -> Any:
        y, argmax = backend_of(x).adaptive_maxpool2d_forward(x, oh, ow)
        ctx.hw, ctx.argmax = x.shape[2:], argmax
        out_indices["indices"] = argmax
        return y

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        h, w = ctx.hw
        return backend_of(g).adaptive_maxpool2d_backward(g, ctx.argmax, h, w)


@accepts_unbatched
def adaptive_max_pool2d(
    x: Tensor, output_size: int | Sequence[int | None], return_indices: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """Adaptive max pooling of ``x`` (N, C, H, W) → (N, C, oh, ow) (bins as
    :func:`adaptive_avg_pool2d`); with ``return_indices`` also the int64 argmax ``h*W + w``."""
    op = "adaptive_max_pool2d"
    x = _check_4d(op, x)
    oh, ow = _adaptive_size(op, x, output_size)
    holder: dict = {}
    y = _AdaptiveMaxPool2d.apply(x, oh, ow, holder)
    if return_indices:
        return y, Tensor(holder["indices"])
    return y


# --------------------------------------------------------------------------- global pooling


class _GlobalAvgPool2d(Function):
    @staticmethod
    def forward(ctx: Context, x: Any, keepdims: bool) -> Any:
        ctx.shape, ctx.keepdims = x.shape, keepdims
        # Contiguous first: the summation order (and so the result) must not depend on layout.
        return backend_of(x).xp.ascontiguousarray(x).mean(axis=(2, 3), keepdims=keepdims)

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        n, c, h, w = ctx.shape
        xp = backend_of(g).xp
        g = g.reshape(n, c, 1, 1) * g.dtype.type(1.0 / (h * w))
        return xp.ascontiguousarray(xp.broadcast_to(g, ctx.shape))


def global_avg_pool2d(x: Tensor, keepdims: bool = False) -> Tensor:
    """Mean over H and W of ``x`` (N, C, H, W) → (N, C), or (N, C, 1, 1) with ``keepdims``."""
    op = "global_avg_pool2d"
    x = _check_4d(op, x, unbatched=False)
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"{op}: input spatial size must be >= 1 in each dim, got {x.shape[2:]}")
    return _GlobalAvgPool2d.apply(x, bool(keepdims))


def global_max_pool2d(x: Tensor, keepdims: bool = False) -> Tensor:
    """Max over H and W of ``x`` (N, C, H, W) → (N, C), or (N, C, 1, 1) with ``keepdims``.

    Same rules as :func:`adaptive_max_pool2d` with output 1: the first maximum gets the
    gradient; NaN is the maximum.
    """
    op = "global_max_pool2d"
    x = _check_4d(op, x, unbatched=False)
    oh, ow = _adaptive_size(op, x, 1)
    y = _AdaptiveMaxPool2d.apply(x, oh, ow, {})
    if keepdims:
        return y
    from gpucnn.functional.basic import reshape

    return reshape(y, x.shape[:2])
