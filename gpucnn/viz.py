"""Pictures of networks and training runs (the ``plot`` extra: ``pip install "gpucnn[plot]"``).

===================================================  ==========================================
function                                             picture
===================================================  ==========================================
``plot_model(model, path, input_shape=None)``        the network as a column of blocks, one
                                                     per top-level layer (plus the input),
                                                     width ~ log(channels), height ~
                                                     log(spatial size), labelled with the
                                                     layer's name, type, output shape and
                                                     parameter count
``plot_filters(layer, path, channel=None)``          a ``Conv2D``'s kernels as a grid of
                                                     small grey images, one per filter
``plot_feature_maps(model, image, layer, path)``     every channel of ``layer``'s output for
                                                     one image, one panel per channel
``plot_history(history, path)``                      loss and each metric per epoch, training
                                                     and validation curves
``plot_confusion_matrix(y_true, y_pred, path)``      the confusion matrix, counts annotated
===================================================  ==========================================

Each function writes a PNG to ``path`` (a ``str`` or :class:`~pathlib.Path`; default a file
named after the picture in the current directory, e.g. ``model.png``; missing parent folders
are created; the content is PNG whatever the suffix) and returns the
:class:`matplotlib.figure.Figure`. The file is written atomically: to a temporary file in the
same folder, then ``os.replace``'d over ``path``, so ``path`` is never half-written.

The figures are drawn on matplotlib's Agg canvas without pyplot: nothing ever opens a window,
no pyplot state (or backend choice) is touched and there is nothing to ``close``; show one in
a notebook with ``display(fig)``, or save it again with ``fig.savefig``. matplotlib is
imported inside the functions, so ``import gpucnn`` never needs it; without it they raise
``ImportError`` saying ``pip install "gpucnn[plot]"``.

Bad input (a layer that is not a ``Conv2D`` for :func:`plot_filters`, an image of the wrong
shape, a layer the model does not have, label arrays of different lengths, ...) raises
``ValueError`` or ``TypeError`` naming the function and the offending value.
"""

from __future__ import annotations

import contextlib
import math
import os
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "plot_confusion_matrix",
    "plot_feature_maps",
    "plot_filters",
    "plot_history",
    "plot_model",
]

INSTALL_HINT = 'pip install "gpucnn[plot]"'
DPI = 100

# block colours of plot_model, by layer type (anything else: grey)
_COLOURS = {
    "Conv2D": "#4c78a8",
    "ZeroPadding2D": "#9ecae9",
    "MaxPooling2D": "#f58518",
    "AveragePooling2D": "#f58518",
    "GlobalAveragePooling2D": "#ffbf79",
    "GlobalMaxPooling2D": "#ffbf79",
    "AdaptiveAveragePooling2D": "#ffbf79",
    "AdaptiveMaxPooling2D": "#ffbf79",
    "Dense": "#54a24b",
    "Flatten": "#bab0ac",
    "Reshape": "#bab0ac",
    "BatchNormalization": "#b279a2",
    "Dropout": "#d6d6d6",
    "SpatialDropout2D": "#d6d6d6",
    "ResidualBlock": "#e45756",
    "InceptionBlock": "#e45756",
    "Sequential": "#e45756",
    "input": "#ffffff",
}
_ACTIVATIONS = ("Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax")


# ----------------------------------------------------------------------------- helpers


def _mpl(who: str) -> tuple[Any, Any]:
    """``(Figure, FigureCanvasAgg)``, or ImportError with the install hint."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(
            f"gpucnn.viz.{who} needs matplotlib, which is not installed: {INSTALL_HINT} "
            "(or: pip install matplotlib)"
        ) from e
    return Figure, FigureCanvasAgg


def _new_figure(who: str, figsize: tuple[float, float]) -> Any:
    Figure, FigureCanvasAgg = _mpl(who)
    fig = Figure(figsize=figsize, dpi=DPI, facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def _check_path(path: Any, who: str) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{who}: path must be a str or a Path, got {type(path).__name__}")
    p = Path(path)
    if str(path) == "" or p.is_dir():
        raise ValueError(f"{who}: path must name a file, got {str(path)!r}")
    return p


def _save(fig: Any, path: Path, dpi: int) -> None:
    """Write ``fig`` as PNG to ``path`` atomically: a temporary file next to it (named as
    :mod:`gpucnn.saving` names its own, so a killed writer's leftovers are cleaned up by the
    next write), flushed and fsync'ed, then ``os.replace``'d over ``path``."""
    from gpucnn.saving import remove_orphans, temp_done, temp_file

    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(str(path), ".tmp")
    fd, tmp = temp_file(str(path), ".tmp")
    try:
        # mkstemp creates 0600: keep the old file's mode, else rw-r--r--
        mode = os.stat(path).st_mode & 0o777 if path.exists() else 0o644
        with contextlib.suppress(OSError):
            os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png", dpi=dpi, facecolor="white")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        temp_done(tmp)


def _to_numpy(a: Any) -> np.ndarray:
    from gpucnn.backend import to_numpy
    from gpucnn.tensor import Tensor

    if isinstance(a, Tensor):
        return a.numpy()
    if isinstance(a, (list, tuple)):
        return np.asarray([_to_numpy(v) if not np.isscalar(v) else v for v in a])
    return to_numpy(a)


def _shape_text(shape: Any) -> str:
    if shape is None:
        return "(not called)"
    if isinstance(shape, list):
        return "[" + ", ".join(_shape_text(s) for s in shape) + "]"
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def _unit(img: np.ndarray) -> tuple[np.ndarray, bool]:
    """``(img scaled to [0, 1] by its own min and max, whether it is constant)``; a constant
    image is all 0."""
    img = np.asarray(img, dtype=np.float64)
    lo, hi = float(np.min(img)), float(np.max(img))
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return np.zeros(img.shape), True
    return (img - lo) / (hi - lo), False


def _wrap(text: str, width_in: float, fontsize: float) -> str:
    """``text`` wrapped to lines that fit ``width_in`` inches at ``fontsize`` points."""
    chars = max(20, int(width_in * 72 / (0.6 * fontsize)))
    return "\n".join(textwrap.wrap(text, chars)) or text


def _grid(n: int) -> tuple[int, int]:
    cols = max(1, math.ceil(math.sqrt(n)))
    return math.ceil(n / cols), cols


def _image_grid(heading: str, images: np.ndarray, titles: list[str], cmap: str, path: Path,
                dpi: int, who: str) -> Any:
    """One panel per image, each scaled to its own range, in a near-square grid (only the
    used cells get axes: ``len(fig.axes) == len(images)``)."""
    n = len(images)
    rows, cols = _grid(n)
    panel = min(1.4, 18.0 / cols)  # inches; the figure stays below ~20 inches wide
    pad = 0.08
    label_h = 0.2 if panel >= 1 else 0.14
    grid_w = cols * panel + (cols - 1) * pad
    fig_w = max(3.6, grid_w + 2 * pad)
    text = _wrap(heading, fig_w - 0.2, 9)
    head_h = 0.15 + 0.17 * (text.count("\n") + 1)
    fig_h = head_h + rows * (label_h + panel) + (rows - 1) * pad + pad
    fig = _new_figure(who, (fig_w, fig_h))
    fs = 7 if panel >= 1 else 5
    left0 = (fig_w - grid_w) / 2
    for i in range(n):
        r, c = divmod(i, cols)
        top = head_h + r * (label_h + panel + pad) + label_h  # inches from the top
        ax = fig.add_axes(((left0 + c * (panel + pad)) / fig_w, 1 - (top + panel) / fig_h,
                           panel / fig_w, panel / fig_h))
        img, const = _unit(images[i])
        ax.imshow(img, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
        label = titles[i]
        if const:
            label += f" (all {float(np.asarray(images[i]).flat[0]):.3g})"
        ax.set_title(label, fontsize=fs, pad=2)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.text(0.5, 1 - 0.08 / fig_h, text, fontsize=9, ha="center", va="top")
    _save(fig, path, dpi)
    return fig


# ----------------------------------------------------------------------------- plot_model


def _input_shape_of(model: Any, input_shape: Any) -> Any:
    shape = input_shape
    if shape is None:
        shape = getattr(model, "input_shape", None) or model.__dict__.get("_build_input_shape")
    if shape is None:
        raise ValueError(
            f"plot_model: the input shape of {getattr(model, 'name', model)!r} is unknown; pass "
            "input_shape=(C, H, W), give the first layer input_shape=..., or run a batch "
            "through the model first"
        )
    if isinstance(shape, (list, tuple)) and shape and isinstance(shape[0], (list, tuple)):
        return [tuple(int(v) for v in s) for s in shape]
    try:
        return tuple(int(v) for v in shape)
    except (TypeError, ValueError):
        raise ValueError(f"plot_model: input_shape must be a tuple of ints such as (1, 28, 28), "
                         f"got {input_shape!r}") from None


def _layer_rows(model: Any, shape: Any) -> list[tuple[str, str, Any, int]]:
    """``(name, type, output shape or None, params)`` of each top-level layer (a
    ``Sequential``'s layer names; another model's attribute names)."""
    layers = getattr(model, "layers", None)
    rows = []
    if isinstance(layers, list) and type(model).__name__ == "Sequential":
        s = shape
        if not model.built:
            model.build(s)
        for layer in layers:
            out = layer.output_shape(s)
            out = [tuple(o) for o in out] if isinstance(out, list) else tuple(out)
            rows.append((layer.name, type(layer).__name__, out, layer.count_params()))
            s = out
        return rows
    if not model.built:
        model.build(shape)
    table = model._trace_children(shape)
    for key, child in model.named_children():  # the attribute names the model's code uses
        out = table[id(child)][1] if id(child) in table else None
        rows.append((key, type(child).__name__, out, child.count_params()))
    return rows


def _extent(shape: Any) -> tuple[float, float]:
    """``(channels, spatial)`` of a per-sample shape: (C, H, W) -> (C, sqrt(H*W)); a vector
    (F,) -> (F, 1)."""
    if isinstance(shape, list):
        shape = shape[0] if shape else None
    if not shape:
        return 1.0, 1.0
    c = float(shape[0])
    rest = [float(v) for v in shape[1:]]
    spatial = math.sqrt(math.prod(rest)) if len(rest) >= 2 else (rest[0] if rest else 1.0)
    return max(c, 1.0), max(spatial, 1.0)


def plot_model(model: Any, path: Any = "model.png", input_shape: Any = None, *,
               title: str | None = None, dpi: int = DPI) -> Any:
    """Draw ``model`` as a column of blocks, input at the top, one block per top-level layer
    (a ``Sequential``'s layers; a model's children, in the order they were registered).

    Each block's WIDTH grows with the log of the layer's output channels (features for a
    vector) and its HEIGHT with the log of the spatial size (sqrt(H * W); a vector is a flat
    bar), both relative to the largest in the model; blocks are coloured by layer type and
    labelled with the layer's name, type, output shape (per sample, as ``summary()``) and
    parameter count.

    Args:
        model: a ``Sequential`` or any built (or buildable) ``Model``/``Module``.
        path: the PNG to write (default ``model.png``).
        input_shape: per-sample input shape, needed when the model is not built and its
            first layer has no ``input_shape``.
        title: the heading (default: the model's name and parameter count).
        dpi: pixels per inch of the PNG.

    Returns:
        The matplotlib ``Figure``.
    """
    from gpucnn.module import Module

    if not isinstance(model, Module):
        raise TypeError(f"plot_model: expected a gpucnn Model or Module, got "
                        f"{type(model).__name__}")
    p = _check_path(path, "plot_model")
    _mpl("plot_model")
    shape = _input_shape_of(model, input_shape)
    rows = [("input", "input", shape, 0), *_layer_rows(model, shape)]
    if len(rows) == 1:
        raise ValueError(f"plot_model: {model.name!r} has no layers to draw")

    ext = [_extent(r[2]) for r in rows]
    cmax = max(2.0, *(c for c, _ in ext))
    smax = max(2.0, *(s for _, s in ext))
    w_min, w_max, h_min, h_max, gap = 0.35, 3.0, 0.24, 1.0, 0.16
    widths = [w_min + (w_max - w_min) * math.log(c) / math.log(cmax) for c, _ in ext]
    heights = [h_min + (h_max - h_min) * math.log(s) / math.log(smax) for _, s in ext]
    total = sum(heights) + gap * (len(rows) - 1)
    scale = min(1.0, 36.0 / total)  # keep the picture below ~40 inches
    heights = [h * scale for h in heights]
    gap *= scale
    total = sum(heights) + gap * (len(rows) - 1)
    head = 0.6
    fs = 9 if scale > 0.6 else 7
    char_w = 0.62 * fs / 72  # inches per character (DejaVu Sans; monospace is ~0.6 em)
    labels = ["input" if kind == "input" else f"{name} ({kind})" for name, kind, _, _ in rows]
    shapes = [_shape_text(r[2]) for r in rows]
    params = ["" if r[1] == "input" else f"{r[3]:,}" for r in rows]
    x_label = w_max + 0.5
    x_shape = x_label + max(1.3, char_w * max(map(len, labels))) + 0.3
    x_params = x_shape + max(1.2, char_w * max(map(len, shapes))) + 0.3 + max(
        0.6, char_w * max(map(len, params)))
    fig_w, fig_h = x_params + 0.2, total + head + 0.25
    fig = _new_figure("plot_model", (fig_w, fig_h))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, fig_w)
    ax.set_ylim(fig_h, 0)  # y down, in inches
    ax.axis("off")

    from matplotlib.patches import FancyArrowPatch, Rectangle

    n_params = model.count_params()
    heading = title or f"{model.name} ({type(model).__name__}): {n_params:,} parameters"
    ax.text(0.2, 0.25, heading, fontsize=11, fontweight="bold", va="center")
    for x, text, ha in ((x_label, "layer (type)", "left"), (x_shape, "output shape", "left"),
                        (x_params, "params", "right")):
        ax.text(x, head - 0.06, text, fontsize=8, color="#555555", ha=ha)
    cx, y = 0.2 + w_max / 2, head + 0.1
    prev_bottom = None
    for (_, kind, _, _), label, shp, par, w, h in zip(rows, labels, shapes, params, widths,
                                                       heights):
        colour = _COLOURS.get(kind, "#f2cf5b" if kind in _ACTIVATIONS else "#cccccc")
        ax.add_patch(Rectangle((cx - w / 2, y), w, h, facecolor=colour, edgecolor="#333333",
                               linewidth=0.8))
        if prev_bottom is not None and gap > 0.05:
            ax.add_patch(FancyArrowPatch((cx, prev_bottom), (cx, y), arrowstyle="-|>",
                                         mutation_scale=7, color="#555555", linewidth=0.7,
                                         shrinkA=0, shrinkB=0))
        mid = y + h / 2
        ax.text(x_label, mid, label, fontsize=fs, va="center")
        ax.text(x_shape, mid, shp, fontsize=fs, va="center", family="monospace")
        ax.text(x_params, mid, par, fontsize=fs, va="center", ha="right")
        prev_bottom = y + h
        y += h + gap
    _save(fig, p, dpi)
    return fig


# ----------------------------------------------------------------------------- plot_filters


def plot_filters(layer: Any, path: Any = "filters.png", channel: int | None = None, *,
                 cmap: str = "gray", title: str | None = None, dpi: int = DPI) -> Any:
    """Draw a ``Conv2D`` layer's kernels, weight ``(O, C/groups, kh, kw)``, as a grid of
    ``O`` small images: by default the MEAN over the input channels of each filter (the
    filter itself for a one-channel input), or input channel ``channel`` only. Each image is
    scaled to its own min..max for display (grey: dark = most negative, light = most
    positive).

    Args:
        layer: a built ``gpucnn.layers.Conv2D``.
        path: the PNG to write (default ``filters.png``).
        channel: ``None`` (mean over input channels) or an input-channel index.
        cmap: a matplotlib colour map name.
        title: the heading (default: the layer's name, shape and what is shown).
        dpi: pixels per inch of the PNG.

    Returns:
        The matplotlib ``Figure``.
    """
    from gpucnn.layers import Conv2D

    if not isinstance(layer, Conv2D):
        desc = f"{type(layer).__name__} {getattr(layer, 'name', '')!r}".strip()
        raise TypeError(f"plot_filters: expected a Conv2D layer, got {desc}")
    if not layer.built:
        raise ValueError(f"plot_filters: Conv2D {layer.name!r} has no weights yet: build it "
                         "(give it input_shape=..., or run a batch through the model) first")
    p = _check_path(path, "plot_filters")
    _mpl("plot_filters")
    w = layer.weight.numpy().astype(np.float64)  # (O, C/groups, kh, kw)
    o, cin = w.shape[:2]
    if channel is None:
        imgs = w.mean(axis=1)
        what = "its one input channel" if cin == 1 else f"mean over its {cin} input channels"
    else:
        if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)) or not (
                -cin <= channel < cin):
            raise ValueError(f"plot_filters: channel must be None or an input-channel index in "
                             f"[0, {cin}), got {channel!r}")
        imgs = w[:, int(channel)]
        what = f"input channel {int(channel) % cin}"
    heading = title or (f"{layer.name} (Conv2D) filters, weight {_shape_text(w.shape)}: "
                        f"{what}, each scaled to its own range")
    return _image_grid(heading, imgs, [f"{i}" for i in range(o)], cmap, p, dpi, "plot_filters")


# ----------------------------------------------------------------------------- feature maps


class _Captured(Exception):
    def __init__(self, value: Any) -> None:
        super().__init__("captured")
        self.value = value


def _find_layer(model: Any, layer: Any) -> Any:
    from gpucnn.module import Module

    top = [m for _, m in model.named_children()]
    if isinstance(layer, bool):
        raise TypeError(f"plot_feature_maps: layer must be an index, a name or a layer, got "
                        f"{layer!r}")
    if isinstance(layer, (int, np.integer)):
        if not -len(top) <= layer < len(top):
            raise ValueError(f"plot_feature_maps: layer index {int(layer)} is out of range for "
                             f"{model.name!r} ({len(top)} layers)")
        return top[int(layer)]
    named = list(model.named_modules())
    if isinstance(layer, str):
        for path, m in named:
            if m is not model and (m.name == layer or path == layer):
                return m
        names = ", ".join(m.name for m in top)
        raise ValueError(f"plot_feature_maps: no layer named {layer!r} in {model.name!r} "
                         f"(its layers: {names})")
    if isinstance(layer, Module):
        if layer is not model and any(m is layer for _, m in named):
            return layer
        raise ValueError(f"plot_feature_maps: layer {layer.name!r} ({type(layer).__name__}) "
                         f"is not part of {model.name!r}")
    raise TypeError(f"plot_feature_maps: layer must be an index, a name or a layer, got "
                    f"{type(layer).__name__}")


def _image_batch(model: Any, image: Any) -> np.ndarray:
    try:
        x = _to_numpy(image)
    except TypeError:
        raise TypeError(f"plot_feature_maps: image must be an array or a Tensor, got "
                        f"{type(image).__name__}") from None
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3:
        raise ValueError(f"plot_feature_maps: image must be one image (C, H, W) or (1, C, H, W), "
                         f"got shape {tuple(x.shape)}")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise TypeError(f"plot_feature_maps: image must hold real numbers, got dtype {x.dtype}")
    want = getattr(model, "input_shape", None) or model.__dict__.get("_build_input_shape")
    if want is not None and not isinstance(want[0], (list, tuple)) and tuple(want) != x.shape:
        raise ValueError(f"plot_feature_maps: image shape {tuple(x.shape)} does not match the "
                         f"input shape {tuple(want)} of {model.name!r}")
    return x[None]


def plot_feature_maps(model: Any, image: Any, layer: Any, path: Any = "feature_maps.png", *,
                      cmap: str = "viridis", title: str | None = None, dpi: int = DPI) -> Any:
    """Run ``model`` on one image, in eval mode without gradients, up to ``layer``, and draw
    each channel of that layer's output (after its activation) as one panel of a grid, each
    scaled to its own min..max.

    Args:
        model: a gpucnn ``Model`` (e.g. a ``Sequential``).
        image: one image ``(C, H, W)`` or ``(1, C, H, W)`` (array or Tensor), preprocessed as
            the model's training data.
        layer: a top-level layer index (negative counts from the end), a layer name (or
            ``named_modules`` path, for a layer inside a block), or the layer object; its
            output must be ``(C, H, W)`` maps.
        path: the PNG to write (default ``feature_maps.png``).
        cmap: a matplotlib colour map name.
        title: the heading (default: the layer's name, type and output shape).
        dpi: pixels per inch of the PNG.

    Returns:
        The matplotlib ``Figure`` (one axes per channel).
    """
    from gpucnn.module import Module
    from gpucnn.tensor import Tensor, no_grad

    if not isinstance(model, Module):
        raise TypeError(f"plot_feature_maps: expected a gpucnn Model, got "
                        f"{type(model).__name__}")
    target = _find_layer(model, layer)
    p = _check_path(path, "plot_feature_maps")
    _mpl("plot_feature_maps")
    x = _image_batch(model, image)
    if model.built:
        xt = Tensor(x, dtype=model.dtype, backend=model.backend)
    else:
        xt = Tensor(x.astype(np.float32))

    def capture(*args: Any, **kwargs: Any) -> Any:
        raise _Captured(type(target).forward(target, *args, **kwargs))

    was = model.training
    model.eval()
    object.__setattr__(target, "forward", capture)
    out: Any = None
    try:
        with no_grad():
            model(xt)
    except _Captured as c:
        out = c.value
    finally:
        target.__dict__.pop("forward", None)
        model.train(was)
    if out is None:
        raise ValueError(f"plot_feature_maps: layer {target.name!r} was not called by the "
                         f"forward pass of {model.name!r}")
    if not isinstance(out, Tensor):
        raise ValueError(f"plot_feature_maps: layer {target.name!r} returned "
                         f"{type(out).__name__}, not one (1, C, H, W) tensor")
    maps = out.numpy()
    if maps.ndim != 4:
        raise ValueError(f"plot_feature_maps: layer {target.name!r} ({type(target).__name__}) "
                         f"outputs {_shape_text(maps.shape[1:])}, not (C, H, W) feature maps")
    maps = maps[0].astype(np.float64)
    heading = title or (f"{target.name} ({type(target).__name__}) output "
                        f"{_shape_text(maps.shape)}: one panel per channel, each scaled to its "
                        "own range")
    return _image_grid(heading, maps, [f"ch {i}" for i in range(len(maps))], cmap, p, dpi,
                       "plot_feature_maps")


# ----------------------------------------------------------------------------- history


def _history_dict(history: Any) -> tuple[dict[str, list[float]], list[int] | None]:
    from gpucnn.callbacks import History

    epochs = None
    if isinstance(history, History):
        epochs, hist = list(history.epoch), history.history
    elif isinstance(history, Mapping):
        hist = history
    elif isinstance(getattr(history, "history", None), History):  # a fitted Model
        return _history_dict(history.history)
    else:
        raise TypeError(f"plot_history: expected a History (from fit), a dict of per-epoch "
                        f"lists or a fitted Model, got {type(history).__name__}")
    out: dict[str, list[float]] = {}
    for k, vs in hist.items():
        try:
            vals = [float(v) for v in vs]
        except (TypeError, ValueError):
            raise ValueError(f"plot_history: history[{k!r}] must be a list of numbers, got "
                             f"{vs!r}") from None
        out[str(k)] = vals
    if not out or not any(out.values()):
        raise ValueError("plot_history: the history is empty (no epochs recorded)")
    return out, epochs


def plot_history(history: Any, path: Any = "history.png", *, title: str | None = None,
                 dpi: int = DPI) -> Any:
    """Draw the loss and each metric per epoch, one panel each: the training curve and, where
    the history has ``val_<name>``, the validation curve on the same axes (a learning-rate
    log, ``lr``, gets its own panel).

    Args:
        history: the :class:`gpucnn.callbacks.History` that ``fit`` returns, a model after
            ``fit`` (its ``history``), or a dict ``{name: [value per epoch]}``.
        path: the PNG to write (default ``history.png``).
        title: the heading (default: "training history").
        dpi: pixels per inch of the PNG.

    Returns:
        The matplotlib ``Figure`` (one axes per panel).
    """
    hist, epochs = _history_dict(history)
    p = _check_path(path, "plot_history")
    _mpl("plot_history")
    bases: list[str] = []
    for k in hist:
        base = k[4:] if k.startswith("val_") else k
        if base not in bases:
            bases.append(base)
    if "loss" in bases:
        bases.remove("loss")
        bases.insert(0, "loss")
    n = len(bases)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = _new_figure("plot_history", (max(4.5, 4.2 * cols), 3.3 * rows + 0.4))
    for i, base in enumerate(bases):
        ax = fig.add_subplot(rows, cols, i + 1)
        for key, label, style in ((base, "training", "o-"), (f"val_{base}", "validation", "s--")):
            vals = hist.get(key)
            if not vals:
                continue
            if epochs is not None and len(epochs) == len(vals):
                xs = [e + 1 for e in epochs]
            else:
                xs = list(range(1, len(vals) + 1))
            ax.plot(xs, vals, style, label=label, markersize=3.5, linewidth=1.4)
        ax.set_title("learning rate" if base == "lr" else base, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(ax.get_lines()) > 1:
            ax.legend(fontsize=8)
    fig.suptitle(title or "training history", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    _save(fig, p, dpi)
    return fig


# ----------------------------------------------------------------------------- confusion


def _labels(y: Any, name: str) -> np.ndarray:
    try:
        a = _to_numpy(y)
    except (TypeError, ValueError):
        raise TypeError(f"plot_confusion_matrix: {name} must be an array of labels, got "
                        f"{type(y).__name__}") from None
    if a.ndim == 2:  # one-hot targets, or scores/logits per class
        a = a.argmax(axis=1)
    if a.ndim != 1:
        raise ValueError(f"plot_confusion_matrix: {name} must be labels (N,) or scores (N, K), "
                         f"got shape {tuple(a.shape)}")
    if a.size and a.dtype.kind not in "iub":
        if a.dtype.kind != "f" or not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
            raise ValueError(f"plot_confusion_matrix: {name} must hold integer class labels, "
                             f"got dtype {a.dtype} with values such as {a[:3].tolist()}")
    a = a.astype(np.int64)
    if a.size and a.min() < 0:
        raise ValueError(f"plot_confusion_matrix: {name} has a negative label {int(a.min())}")
    return a


def plot_confusion_matrix(y_true: Any, y_pred: Any, path: Any = "confusion_matrix.png",
                          class_names: Any = None, normalize: bool = False, *,
                          title: str | None = None, dpi: int = DPI) -> Any:
    """Draw the confusion matrix: row = true class, column = predicted class, each cell
    annotated with its count (and with ``normalize``, the fraction of its row, which then sets
    the colour); the title gives the number of samples and the accuracy.

    Args:
        y_true: true labels (N,) (or one-hot (N, K)).
        y_pred: predicted labels (N,), or scores/logits (N, K) (their argmax is taken).
        path: the PNG to write (default ``confusion_matrix.png``).
        class_names: a name per class (at least as many as the largest label + 1); default
            the class indices.
        normalize: colour by the fraction of each true class (row) instead of the count.
        title: the heading (default: "confusion matrix" with N and the accuracy).
        dpi: pixels per inch of the PNG.

    Returns:
        The matplotlib ``Figure``.
    """
    yt = _labels(y_true, "y_true")
    yp = _labels(y_pred, "y_pred")
    if len(yt) != len(yp):
        raise ValueError(f"plot_confusion_matrix: y_true has {len(yt)} labels but y_pred has "
                         f"{len(yp)}")
    if len(yt) == 0:
        raise ValueError("plot_confusion_matrix: no labels (y_true is empty)")
    k = int(max(yt.max(), yp.max())) + 1
    if class_names is not None:
        if isinstance(class_names, str):
            raise TypeError("plot_confusion_matrix: class_names must be a list of names, got a "
                            "str")
        class_names = [str(c) for c in class_names]
        if len(class_names) < k:
            raise ValueError(f"plot_confusion_matrix: {len(class_names)} class_names for labels "
                             f"up to {k - 1}")
        k = len(class_names)
    names = class_names or [str(i) for i in range(k)]
    p = _check_path(path, "plot_confusion_matrix")
    _mpl("plot_confusion_matrix")
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (yt, yp), 1)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    shown = frac if normalize else cm
    side = min(24.0, max(4.5, 0.55 * k + 2.0))
    fig = _new_figure("plot_confusion_matrix", (side + 1.0, side))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1.0 if normalize else max(1, cm.max()),
                   interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04,
                 label="fraction of the true class" if normalize else "count")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    small = 8 if k <= 20 else 6
    ax.set_xticklabels(names, fontsize=small, rotation=45 if max(map(len, names)) > 3 else 0,
                       ha="right" if max(map(len, names)) > 3 else "center")
    ax.set_yticklabels(names, fontsize=small)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if k <= 40:
        hi = float(shown.max()) if shown.size else 1.0
        fs = 8 if k <= 12 else (6 if k <= 25 else 4)
        for i in range(k):
            for j in range(k):
                if cm[i, j] == 0 and (i != j or rows[i, 0] == 0):
                    continue
                txt = f"{cm[i, j]}" if not normalize else f"{cm[i, j]}\n{frac[i, j]:.0%}"
                ax.text(j, i, txt, ha="center", va="center", fontsize=fs,
                        color="white" if shown[i, j] > 0.5 * hi else "black")
    acc = float(np.trace(cm)) / len(yt)
    ax.set_title(title or f"confusion matrix: {len(yt):,} samples, accuracy {acc:.2%}",
                 fontsize=10)
    fig.tight_layout()
    _save(fig, p, dpi)
    return fig
