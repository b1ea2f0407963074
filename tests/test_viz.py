"""gpucnn.viz: every picture is a valid PNG of a sensible size and the function returns its
matplotlib Figure; one picture of each kind is looked at (its pixels or its panels); bad input
is refused naming the function; writes are atomic; ``import gpucnn`` never needs matplotlib."""

from __future__ import annotations

import importlib.util
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from matplotlib.figure import Figure  # noqa: E402

import gpucnn  # noqa: E402
from gpucnn import viz  # noqa: E402
from gpucnn.layers import Conv2D, Dense, Flatten, MaxPooling2D  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parent.parent


def png_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the IHDR chunk, after checking the signature and file size."""
    assert path.is_file(), path
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG: {data[:8]!r}"
    assert data[12:16] == b"IHDR"
    assert len(data) > 1024, f"{path}: only {len(data)} bytes"
    w, h = struct.unpack(">II", data[16:24])
    return w, h


def assert_picture(fig, path: Path) -> tuple[int, int]:
    assert isinstance(fig, Figure)
    w, h = png_size(path)
    assert 200 <= w <= 4000 and 200 <= h <= 4000, (w, h)
    # the PNG is the figure at its dpi
    fw, fh = fig.get_size_inches() * fig.dpi
    assert abs(w - fw) <= 2 and abs(h - fh) <= 2, ((w, h), (fw, fh))
    return w, h


def small_net() -> gpucnn.Sequential:
    return gpucnn.Sequential([
        Conv2D(4, 3, activation="relu", input_shape=(1, 12, 12), name="conv_a"),
        MaxPooling2D(2, name="pool"),
        Conv2D(6, 3, activation="relu", name="conv_b"),
        Flatten(name="flat"),
        Dense(3, name="out"),
    ], name="small")


def image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 12, 12)).astype(np.float32)


# ----------------------------------------------------------------------------- import


def test_import_gpucnn_does_not_import_matplotlib():
    code = ("import gpucnn, sys; a = 'matplotlib' in sys.modules; "
            "from gpucnn import viz; print(a, 'matplotlib' in sys.modules)")
    env = dict(os.environ, GPUCNN_BACKEND="numpy")
    env.pop("GPUCNN_SIMULATE_CUDA", None)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["False", "False"]


def test_missing_matplotlib_raises_import_error_with_the_install_hint(tmp_path, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends",
                 "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    with pytest.raises(ImportError, match=r'plot_history.*pip install "gpucnn\[plot\]"'):
        viz.plot_history({"loss": [1.0, 0.5]}, tmp_path / "h.png")
    assert not (tmp_path / "h.png").exists()


# ----------------------------------------------------------------------------- plot_model


def test_plot_model_writes_a_column_of_blocks(tmp_path):
    from matplotlib.patches import Rectangle

    model = gpucnn.models.lenet5()
    fig = viz.plot_model(model, tmp_path / "lenet5.png")
    w, h = assert_picture(fig, tmp_path / "lenet5.png")
    assert h > w / 2  # a column
    ax = fig.axes[0]
    blocks = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(blocks) == len(model.layers) + 1  # the input and one per layer
    texts = [t.get_text() for t in ax.texts]
    for layer in model.layers:
        assert f"{layer.name} ({type(layer).__name__})" in texts
    assert "(6, 28, 28)" in texts and "(16, 5, 5)" in texts and "(10)" in texts
    # sized by the output shape: c1 (6 channels, 28x28) is narrower and taller than c3
    # (16 channels, 10x10); the flattened (400) vector is the widest and a flat bar
    c1, c3, flat = blocks[1], blocks[3], blocks[5]
    assert c1.get_width() < c3.get_width() < flat.get_width()
    assert c1.get_height() > c3.get_height() > flat.get_height()
    # ordered top to bottom (y grows downwards)
    ys = [b.get_y() for b in blocks]
    assert ys == sorted(ys)


def test_plot_model_input_shape_and_default_path(tmp_path, monkeypatch):
    net = gpucnn.Sequential([Conv2D(3, 3), Flatten(), Dense(2)])
    with pytest.raises(ValueError, match=r"plot_model.*input_shape"):
        viz.plot_model(net, tmp_path / "x.png")
    monkeypatch.chdir(tmp_path)
    fig = viz.plot_model(net, input_shape=(2, 9, 9))
    assert_picture(fig, tmp_path / "model.png")  # the default file name
    with pytest.raises(TypeError, match="plot_model"):
        viz.plot_model("lenet5", tmp_path / "x.png")


def test_plot_model_of_a_subclassed_model(tmp_path):
    class Net(gpucnn.Model):
        def __init__(self):
            super().__init__(name="net")
            self.features = Conv2D(5, 3, activation="relu")
            self.pool = MaxPooling2D(2)
            self.flat = Flatten()
            self.head = Dense(4)

        def forward(self, x):
            return self.head(self.flat(self.pool(self.features(x))))

    net = Net()
    fig = viz.plot_model(net, str(tmp_path / "sub" / "net.png"), input_shape=(1, 10, 10))
    assert_picture(fig, tmp_path / "sub" / "net.png")  # a str path; the folder is created
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "features (Conv2D)" in texts and "(5, 8, 8)" in texts and "(4)" in texts


# ----------------------------------------------------------------------------- plot_filters


def test_plot_filters_grid_of_kernels(tmp_path):
    model = gpucnn.models.lenet5()
    fig = viz.plot_filters(model.layers[0], tmp_path / "c1.png")
    assert_picture(fig, tmp_path / "c1.png")
    assert len(fig.axes) == 6
    shown = fig.axes[0].images[0].get_array()
    assert shown.shape == (5, 5)
    w = model.layers[0].weight.numpy()[0, 0]
    np.testing.assert_allclose(shown, (w - w.min()) / (w.max() - w.min()), atol=1e-6)
    # c3: the mean over its 6 input channels by default, or one channel
    c3 = model.layers[2]
    fig = viz.plot_filters(c3, tmp_path / "c3.png")
    assert_picture(fig, tmp_path / "c3.png")
    assert len(fig.axes) == 16 and "mean over its 6 input channels" in fig.texts[0].get_text()
    fig = viz.plot_filters(c3, tmp_path / "c3_ch2.png", channel=2)
    w = c3.weight.numpy()[4, 2]
    np.testing.assert_allclose(fig.axes[4].images[0].get_array(),
                               (w - w.min()) / (w.max() - w.min()), atol=1e-6)


def test_plot_filters_bad_input(tmp_path):
    model = gpucnn.models.lenet5()
    with pytest.raises(TypeError, match=r"plot_filters: expected a Conv2D layer, got Dense 'f5'"):
        viz.plot_filters(model.layers[5], tmp_path / "x.png")
    with pytest.raises(TypeError, match="plot_filters"):
        viz.plot_filters(model, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"plot_filters: channel .* got 6"):
        viz.plot_filters(model.layers[2], tmp_path / "x.png", channel=6)
    with pytest.raises(ValueError, match=r"plot_filters: Conv2D 'lazy' has no weights"):
        viz.plot_filters(Conv2D(3, 3, name="lazy"), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


# ----------------------------------------------------------------------------- feature maps


def test_plot_feature_maps_one_panel_per_channel(tmp_path):
    model = small_net()
    model.train()
    img = image()
    fig = viz.plot_feature_maps(model, img, "conv_a", tmp_path / "a.png")
    assert_picture(fig, tmp_path / "a.png")
    assert len(fig.axes) == 4  # one panel per channel of conv_a's output (4, 10, 10)
    assert fig.axes[0].images[0].get_array().shape == (10, 10)
    # the panels are the layer's output: conv_a applied to the image (ReLU), each scaled
    from gpucnn.tensor import no_grad

    with no_grad():
        ref = model.layers[0](gpucnn.tensor(img[None], backend=model.backend)).numpy()[0]
    for ch, ax in enumerate(fig.axes):
        r = ref[ch]
        if r.max() > r.min():
            np.testing.assert_allclose(ax.images[0].get_array(),
                                       (r - r.min()) / (r.max() - r.min()), atol=1e-5)
    # index, layer object and a (1, C, H, W) image all work; conv_b has 6 channels
    fig = viz.plot_feature_maps(model, img[None], 2, tmp_path / "b.png")
    assert_picture(fig, tmp_path / "b.png")
    assert len(fig.axes) == 6
    fig2 = viz.plot_feature_maps(model, img, model.layers[2], tmp_path / "b2.png")
    assert len(fig2.axes) == 6
    # the model is left as it was: training mode, its own forward
    assert model.training
    assert all("forward" not in layer.__dict__ for layer in model.layers)


def test_plot_feature_maps_look_at_the_png(tmp_path):
    """Open the PNG: it has the figure's pixels and is not blank (many colours)."""
    from matplotlib.image import imread

    model = gpucnn.models.lenet5()
    digit = np.zeros((1, 28, 28), dtype=np.float32)
    digit[0, 6:22, 12:16] = 2.8  # a "1"
    path = tmp_path / "c1.png"
    viz.plot_feature_maps(model, digit, "c1", path)
    pixels = imread(path)
    w, h = png_size(path)
    assert pixels.shape[:2] == (h, w)
    colours = np.unique((pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 20


def test_plot_feature_maps_bad_input(tmp_path):
    model = small_net()
    with pytest.raises(ValueError, match=r"plot_feature_maps: image shape \(1, 10, 10\) "):
        viz.plot_feature_maps(model, np.zeros((1, 10, 10)), "conv_a", tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"plot_feature_maps: image must be one image .*"
                                         r"\(2, 1, 12, 12\)"):
        viz.plot_feature_maps(model, np.zeros((2, 1, 12, 12)), "conv_a", tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"plot_feature_maps: no layer named 'conv_z'.*conv_a"):
        viz.plot_feature_maps(model, image(), "conv_z", tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"plot_feature_maps: layer index 9 "):
        viz.plot_feature_maps(model, image(), 9, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"plot_feature_maps: layer 'out' \(Dense\) outputs "
                                         r"\(3\), not \(C, H, W\)"):
        viz.plot_feature_maps(model, image(), "out", tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"plot_feature_maps: layer 'stray' .* not part of"):
        viz.plot_feature_maps(model, image(), Conv2D(2, 3, name="stray"), tmp_path / "x.png")
    with pytest.raises(TypeError, match="plot_feature_maps"):
        viz.plot_feature_maps(model, image(), 1.5, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
    assert all("forward" not in layer.__dict__ for layer in model.layers)


# ----------------------------------------------------------------------------- history


def test_plot_history_from_fit(tmp_path):
    model = small_net()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 1, 12, 12)).astype(np.float32)
    y = rng.integers(0, 3, 32)
    hist = model.fit(x, y, epochs=3, batch_size=16, verbose=0, validation_split=0.25)
    fig = viz.plot_history(hist, tmp_path / "h.png")
    assert_picture(fig, tmp_path / "h.png")
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy"]
    for ax in fig.axes:  # a training and a validation curve per panel, one point per epoch
        assert [line.get_label() for line in ax.get_lines()] == ["training", "validation"]
        assert list(ax.get_lines()[0].get_xdata()) == [1, 2, 3]
    np.testing.assert_allclose(fig.axes[0].get_lines()[1].get_ydata(), hist.history["val_loss"])
    # a fitted model and a plain dict work too
    assert len(viz.plot_history(model, tmp_path / "m.png").axes) == 2
    fig = viz.plot_history({"loss": [3.0, 2.0], "lr": [0.1, 0.05]}, tmp_path / "d.png")
    assert_picture(fig, tmp_path / "d.png")
    assert [ax.get_title() for ax in fig.axes] == ["loss", "learning rate"]
    assert all(ax.get_legend() is None for ax in fig.axes)  # one curve each: no legend


def test_plot_history_bad_input(tmp_path):
    with pytest.raises(ValueError, match="plot_history: the history is empty"):
        viz.plot_history(gpucnn.callbacks.History(), tmp_path / "x.png")
    with pytest.raises(TypeError, match="plot_history: expected a History"):
        viz.plot_history([1.0, 0.5], tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"plot_history: history\['loss'\]"):
        viz.plot_history({"loss": ["a"]}, tmp_path / "x.png")
    with pytest.raises(TypeError, match="plot_history: path"):
        viz.plot_history({"loss": [1.0]}, 3)
    assert not (tmp_path / "x.png").exists()


# ----------------------------------------------------------------------------- confusion


def test_plot_confusion_matrix_counts_and_pixels(tmp_path):
    from matplotlib.image import imread

    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    y_pred = np.array([0, 0, 1, 1, 1, 2, 2, 2, 0, 2])
    path = tmp_path / "cm.png"
    fig = viz.plot_confusion_matrix(y_true, y_pred, path, class_names=["cat", "dog", "fox"])
    assert_picture(fig, path)
    ax = fig.axes[0]
    np.testing.assert_array_equal(ax.images[0].get_array(),
                                  [[2, 1, 0], [0, 2, 0], [1, 0, 4]])
    assert sorted(t.get_text() for t in ax.texts) == sorted(["2", "1", "2", "1", "4"])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cat", "dog", "fox"]
    assert "accuracy 80.00%" in ax.get_title()
    # look at it: not blank, white (empty cells) and dark blue (the 4) are both there
    rgb = (imread(path)[..., :3] * 255).astype(int)
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 10
    assert (rgb.min(axis=2) > 245).any()  # near-white
    assert ((rgb[..., 2] > 80) & (rgb[..., 0] < 40)).sum() > 500  # dark blue cells
    # normalised by row; scores (N, K) are argmax'ed; one-hot truths too
    scores = np.eye(3)[y_pred] + 0.01
    fig = viz.plot_confusion_matrix(np.eye(3)[y_true], scores, tmp_path / "n.png",
                                    normalize=True)
    assert_picture(fig, tmp_path / "n.png")
    np.testing.assert_allclose(fig.axes[0].images[0].get_array()[2], [0.2, 0.0, 0.8])


def test_plot_confusion_matrix_bad_input(tmp_path):
    p = tmp_path / "x.png"
    with pytest.raises(ValueError, match="plot_confusion_matrix: y_true has 3 labels but "
                                         "y_pred has 2"):
        viz.plot_confusion_matrix([0, 1, 1], [0, 1], p)
    with pytest.raises(ValueError, match="plot_confusion_matrix: y_pred has a negative label"):
        viz.plot_confusion_matrix([0, 1], [0, -1], p)
    with pytest.raises(ValueError, match="plot_confusion_matrix: y_true must hold integer"):
        viz.plot_confusion_matrix([0.5, 1.0], [0, 1], p)
    with pytest.raises(ValueError, match="plot_confusion_matrix: 2 class_names for labels up "
                                         "to 2"):
        viz.plot_confusion_matrix([0, 2], [0, 1], p, class_names=["a", "b"])
    with pytest.raises(ValueError, match="plot_confusion_matrix: no labels"):
        viz.plot_confusion_matrix([], [], p)
    assert not p.exists()


# ----------------------------------------------------------------------------- writes


def test_writes_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / "cm.png"
    viz.plot_confusion_matrix([0, 1, 1], [0, 1, 0], path)
    before = path.read_bytes()

    def broken(self, f, **kwargs):
        f.write(PNG_SIGNATURE + b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        viz.plot_confusion_matrix([0, 1, 1], [1, 1, 0], path)
    assert path.read_bytes() == before  # the old picture, whole
    assert [p.name for p in tmp_path.iterdir()] == ["cm.png"]  # no temporary file left
    with pytest.raises(RuntimeError, match="disk full"):
        viz.plot_history({"loss": [1.0]}, tmp_path / "new.png")
    assert not (tmp_path / "new.png").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["cm.png"]


def test_path_must_name_a_file(tmp_path):
    with pytest.raises(ValueError, match="plot_confusion_matrix: path must name a file"):
        viz.plot_confusion_matrix([0, 1], [0, 1], tmp_path)


# ----------------------------------------------------------------------------- the example


def test_train_mnist_example_saves_the_pictures(tmp_path, capsys):
    path = ROOT / "examples" / "train_mnist.py"
    spec = importlib.util.spec_from_file_location("gpucnn_example_train_mnist_viz", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    prev = gpucnn.backend.current()
    try:
        res = mod.main(["--smoke", "--backend", "numpy", "--out", str(tmp_path)])
    finally:
        gpucnn.backend.use(prev)
    names = ["training_curves.png", "conv1_filters.png", "c1_feature_maps.png",
             "c3_feature_maps.png", "confusion_matrix.png"]
    for name in names:
        w, h = png_size(tmp_path / name)
        assert 200 <= w <= 4000 and 200 <= h <= 4000, (name, w, h)
        assert tmp_path / name in res["files"]
    out = capsys.readouterr().out
    assert "pictures: feature maps of c1 and c3" in out and "confusion_matrix.png" in out
    assert out.strip().splitlines()[-1].startswith("held-out test accuracy:")
