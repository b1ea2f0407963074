"""Classic edge detectors on an MNIST digit, run through gpucnn's conv2d.

Loads one digit from the MNIST sample that ships with gpucnn (no download), applies the
vertical- and horizontal-edge kernels, Sobel and Scharr (x, y and magnitude), prints a numeric
summary of every map, and saves the input and the maps as PNG images into ``--out`` when
matplotlib is installed (``pip install "gpucnn[plot]"``).

    python examples/edge_detection.py --index 7 --out edge_out --backend auto
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import gpucnn
from gpucnn import filters
from gpucnn.cli import add_backend_argument
from gpucnn.datasets import mnist_sample


def edge_maps(image: np.ndarray, backend: str = "numpy") -> dict[str, np.ndarray]:
    """All edge maps of a (28, 28) image, computed on ``backend``; NumPy arrays back."""
    be = gpucnn.backend.get_backend(backend)
    x = be.xp.asarray(image[None, None].astype(np.float32))
    maps = {
        "vertical_edge": filters.filter2d(x, filters.vertical_edge()),
        "horizontal_edge": filters.filter2d(x, filters.horizontal_edge()),
        "sobel_x": filters.filter2d(x, filters.sobel("x")),
        "sobel_y": filters.filter2d(x, filters.sobel("y")),
        "sobel_magnitude": filters.edge_magnitude(x, "sobel"),
        "scharr_x": filters.filter2d(x, filters.scharr("x")),
        "scharr_y": filters.filter2d(x, filters.scharr("y")),
        "scharr_magnitude": filters.edge_magnitude(x, "scharr"),
    }
    return {k: gpucnn.backend.to_numpy(v)[0, 0] for k, v in maps.items()}


def _save_png(path: Path, arr: np.ndarray, title: str, signed: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 3))
    if signed:
        lim = float(np.abs(arr).max()) or 1.0
        im = ax.imshow(arr, cmap="coolwarm", vmin=-lim, vmax=lim)
    else:
        im = ax.imshow(arr, cmap="gray")
    ax.set_title(title)
    ax.axis("off")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--index", type=int, default=0, help="which of the 5,000 sample digits")
    p.add_argument("--out", default="edge_out", help="folder for the PNG images")
    add_backend_argument(p)  # a name or alias; default $GPUCNN_BACKEND, else auto
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)

    be = gpucnn.backend.use(args.backend)
    images, labels = mnist_sample()
    if not 0 <= args.index < len(images):
        p.error(f"--index must be in [0, {len(images) - 1}]")
    image = images[args.index, 0]
    print(f"digit #{args.index} (label {labels[args.index]}), backend {be.name}")
    maps = edge_maps(image, be.name)
    print(f"{'map':<18}{'min':>9}{'max':>9}{'mean |v|':>10}")
    for name, m in maps.items():
        print(f"{name:<18}{m.min():>9.3f}{m.max():>9.3f}{np.abs(m).mean():>10.4f}")

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print('matplotlib is not installed: no PNG images written. Install it with '
              'pip install "gpucnn[plot]"')
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _save_png(out / "input.png", image, f"input (label {labels[args.index]})", signed=False)
    for name, m in maps.items():
        _save_png(out / f"{name}.png", m, name, signed=not name.endswith("magnitude"))
    print(f"wrote {len(maps) + 1} PNG images to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
