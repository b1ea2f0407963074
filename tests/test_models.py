"""Model zoo: parameter counts against published numbers and independent formulas, one forward
and backward pass per model, option-A shortcuts, serialisation, get_model."""

from __future__ import annotations

import numpy as np
import pytest

import gpucnn
import gpucnn.functional as F
from gpucnn import models

# ----------------------------------------------------------------------------- formulas
# Written from the architecture descriptions, independently of gpucnn.models.


def conv(cin: int, cout: int, k: int, bias: bool = True) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def bn(c: int) -> int:
    return 2 * c


def dense(i: int, o: int) -> int:
    return i * o + o


def cifar_resnet_count(depth: int, shortcut: str, classes: int = 10, cin: int = 3) -> int:
    n = (depth - 2) // 6
    total = conv(cin, 16, 3, False) + bn(16)
    c = 16
    for stage, w in enumerate((16, 32, 64)):
        for j in range(n):
            s = 2 if stage and j == 0 else 1
            total += conv(c, w, 3, False) + bn(w) + conv(w, w, 3, False) + bn(w)
            if shortcut == "B" and (s != 1 or c != w):
                total += conv(c, w, 1, False) + bn(w)
            c = w
    return total + dense(64, classes)


def imagenet_resnet_count(blocks: list[int], classes: int = 1000, cin: int = 3,
                          stem_k: int = 7) -> int:
    total = conv(cin, 64, stem_k, False) + bn(64)
    c = 64
    for stage, (w, nb) in enumerate(zip((64, 128, 256, 512), blocks)):
        for j in range(nb):
            s = 2 if stage and j == 0 else 1
            total += conv(c, w, 3, False) + bn(w) + conv(w, w, 3, False) + bn(w)
            if s != 1 or c != w:
                total += conv(c, w, 1, False) + bn(w)
            c = w
    return total + dense(512, classes)


INCEPTION_WIDTHS = [(16, 16, 24, 4, 8, 8), (24, 24, 32, 8, 16, 16), "pool",
                    (32, 32, 48, 8, 16, 16), (40, 32, 56, 8, 16, 16)]


def inception_count(classes: int = 10, cin: int = 3) -> int:
    total = conv(cin, 32, 3, False) + bn(32)
    c = 32
    for spec in INCEPTION_WIDTHS:
        if spec == "pool":
            continue
        c1, c3r, c3, c5r, c5, pp = spec
        total += conv(c, c1, 1) + conv(c, c3r, 1) + conv(c3r, c3, 3) + conv(c, c5r, 1) \
            + conv(c5r, c5, 5) + conv(c, pp, 1)
        c = c1 + c3 + c5 + pp
    return total + dense(c, classes)


def vgg11_count(classes: int = 10, cin: int = 3, batch_norm: bool = True,
                imagenet: bool = False) -> int:
    total, c = 0, cin
    for v in (64, 128, 256, 256, 512, 512, 512, 512):
        total += conv(c, v, 3) + (bn(v) if batch_norm else 0)
        c = v
    if imagenet:
        return total + dense(512 * 7 * 7, 4096) + dense(4096, 4096) + dense(4096, classes)
    return total + dense(512, 512) + dense(512, 512) + dense(512, classes)


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def _numpy_backend():
    prev = gpucnn.backend.current()
    gpucnn.backend.use("numpy")
    gpucnn.manual_seed(0)
    yield
    gpucnn.backend.use(prev)


def forward_backward(model, shape, classes):
    """One training-mode forward + backward pass; checks output shape and that every
    parameter got a finite gradient (and most of them a non-zero one)."""
    x = gpucnn.Tensor(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    y = gpucnn.Tensor(np.arange(shape[0]) % classes)
    model.train()
    out = model(x)
    assert out.shape == (shape[0], classes)
    assert np.isfinite(out.numpy()).all()
    loss = F.cross_entropy(out, y)
    model.zero_grad()
    loss.backward()
    params = list(model.parameters())
    assert params
    nonzero = 0
    for p in params:
        assert p.grad is not None, "a parameter got no gradient"
        g = p.grad.numpy()
        assert g.shape == p.shape and np.isfinite(g).all()
        nonzero += bool(np.abs(g).max() > 0)
    assert nonzero >= 0.9 * len(params)
    return out


def layer_counts(model):
    return [m.count_params() for m in model.layers if m.count_params()]


# ----------------------------------------------------------------------------- LeNet


def test_lenet5_counts_and_pass():
    m = models.lenet5()
    assert m.count_params() == 61_706
    assert layer_counts(m) == [156, 2_416, 48_120, 10_164, 850]
    assert m.output_shape((1, 28, 28)) == (10,)
    forward_backward(m, (2, 1, 28, 28), 10)


def test_lenet5_32_and_classic():
    m = models.lenet5(input_size=32, classic=True)
    assert m.count_params() == 61_706
    names = [type(layer).__name__ for layer in m.layers]
    assert names.count("AveragePooling2D") == 2 and "MaxPooling2D" not in names
    assert m.layers[0].activation == "tanh"
    forward_backward(m, (2, 1, 32, 32), 10)
    with pytest.raises(ValueError, match="input_size"):
        models.lenet5(input_size=30)


def test_lenet5_other_classes_channels():
    m = models.lenet5(num_classes=7, in_channels=3)
    assert m.count_params() == 61_706 + 2 * 150 + (84 * 7 + 7) - 850
    forward_backward(m, (2, 3, 28, 28), 7)


def test_seed_lenet_counts_and_pass():
    m = models.seed_lenet()
    assert layer_counts(m) == [608, 3_216, 48_120, 10_164, 850]
    assert m.count_params() == 62_958
    forward_backward(m, (2, 3, 32, 32), 10)


# ----------------------------------------------------------------------------- ResNets


@pytest.mark.parametrize("depth", [20, 56])
@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_cifar_resnet_counts(depth, shortcut):
    m = models.get_model(f"resnet{depth}", shortcut=shortcut)
    assert m.count_params() == cifar_resnet_count(depth, shortcut)


def test_cifar_resnet_exact_counts():
    # option A (parameter-free shortcuts) is the "0.27M" / "0.85M" of the paper
    assert models.resnet20().count_params() == 269_722
    assert models.resnet56().count_params() == 853_018
    # option B adds a 1x1 conv + BN at the two stage transitions
    assert models.resnet20(shortcut="B").count_params() == 272_474
    assert models.resnet56(shortcut="B").count_params() == 855_770


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_resnet20_forward_backward(shortcut):
    m = models.resnet20(shortcut=shortcut)
    forward_backward(m, (2, 3, 32, 32), 10)


@pytest.mark.slow
def test_resnet56_forward_backward():
    forward_backward(models.resnet56(num_classes=5, in_channels=1), (2, 1, 16, 16), 5)


def test_option_a_shortcut_is_subsample_and_zero_pad():
    blk = models.BasicBlock(4, 8, stride=2, shortcut="A")
    assert blk.count_params() == conv(4, 8, 3, False) + bn(8) + conv(8, 8, 3, False) + bn(8)
    x = np.random.default_rng(1).standard_normal((2, 4, 6, 6)).astype(np.float32)
    sc = blk._shortcut(gpucnn.Tensor(x)).numpy()
    want = np.zeros((2, 8, 3, 3), np.float32)
    want[:, 2:6] = x[:, :, ::2, ::2]
    np.testing.assert_array_equal(sc, want)
    # the block's output is relu(residual + shortcut): check it against its parts
    blk.eval()
    xt = gpucnn.Tensor(x)
    res = blk.bn2(blk.conv2(F.relu(blk.bn1(blk.conv1(xt))))).numpy()
    np.testing.assert_allclose(blk(xt).numpy(), np.maximum(res + want, 0), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="shortcut"):
        models.BasicBlock(4, 8, 2, shortcut="C")
    with pytest.raises(ValueError, match="depth"):
        models.cifar_resnet(21)


def test_imagenet_resnet_counts():
    r18, r34 = models.resnet18(), models.resnet34()
    assert r18.count_params() == 11_689_512 == imagenet_resnet_count([2, 2, 2, 2])
    assert r34.count_params() == 21_797_672 == imagenet_resnet_count([3, 4, 6, 3])
    small = models.resnet18(num_classes=10, small_input=True)
    assert small.count_params() == imagenet_resnet_count([2, 2, 2, 2], 10, stem_k=3)
    assert small.input_shape == (3, 32, 32) and r18.input_shape == (3, 224, 224)


def test_resnet18_small_input_forward_backward():
    m = models.resnet18(num_classes=10, small_input=True)
    forward_backward(m, (2, 3, 16, 16), 10)


@pytest.mark.slow
def test_resnet34_forward_backward():
    # the 7x7/2 stem + max pool reduce 32x32 to 8x8 before the stages; 1x1 at the end
    m = models.resnet34(num_classes=10)
    forward_backward(m, (2, 3, 32, 32), 10)


# ----------------------------------------------------------------------------- Inception, VGG


def test_inception_small():
    assert list(models.INCEPTION_SMALL_WIDTHS) == INCEPTION_WIDTHS
    m = models.inception_small()
    assert m.count_params() == inception_count() == 77_390
    blocks = [layer for layer in m.layers if type(layer).__name__ == "InceptionBlock"]
    assert len(blocks) == 4
    assert m.output_shape((3, 32, 32)) == (10,)
    forward_backward(m, (2, 3, 32, 32), 10)
    m1 = models.inception_small(num_classes=4, in_channels=1, input_size=28)
    assert m1.count_params() == inception_count(4, 1)


def test_vgg11_bn():
    m = models.vgg11()
    assert m.count_params() == vgg11_count() == 9_756_426
    assert sum(type(layer).__name__ == "Conv2D" for layer in m.layers) == 8
    forward_backward(m, (2, 3, 32, 32), 10)
    plain = models.vgg11(batch_norm=False, num_classes=100, in_channels=1)
    assert plain.count_params() == vgg11_count(100, 1, batch_norm=False)


@pytest.mark.slow
def test_vgg11_imagenet_count():
    m = models.vgg11(num_classes=1000, batch_norm=False, input_size=224)
    assert m.count_params() == vgg11_count(1000, 3, False, imagenet=True) == 132_863_336


# ----------------------------------------------------------------------------- registry


def test_get_model_names_and_errors():
    assert set(models.MODEL_NAMES) == {"lenet5", "seed_lenet", "resnet20", "resnet56",
                                       "resnet18", "resnet34", "inception_small", "vgg11"}
    assert models.get_model("LeNet5").count_params() == 61_706
    assert models.get_model("seed-lenet").count_params() == 62_958
    with pytest.raises(ValueError) as e:
        models.get_model("alexnet")
    for name in models.MODEL_NAMES:
        assert name in str(e.value)


@pytest.mark.parametrize("build", [
    lambda: models.lenet5(),
    lambda: models.resnet20(num_classes=3, in_channels=1),
    lambda: models.inception_small(num_classes=3, in_channels=1, input_size=16),
])
def test_save_load_round_trip(tmp_path, build):
    from gpucnn.saving import load_model

    m = build()
    shape = (2, *m.input_shape)
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    # one training step so batch-norm running statistics differ from their initial values
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    m.train_on_batch(x, np.array([0, 1]))
    m.save(tmp_path / "m.npz")
    m2 = load_model(tmp_path / "m.npz")
    assert type(m2) is type(m) and m2.count_params() == m.count_params()
    np.testing.assert_allclose(m2.predict(x), m.predict(x), rtol=1e-6, atol=1e-6)


def cifar_conv_macs(depth: int = 20) -> int:
    """Multiply-adds of the convolutions and the classifier of a CIFAR ResNet on 32x32."""
    n = (depth - 2) // 6
    macs = 3 * 16 * 9 * 32 * 32
    c, side = 16, 32
    for stage, w in enumerate((16, 32, 64)):
        for j in range(n):
            if stage and j == 0:
                side //= 2
            macs += (c * w * 9 + w * w * 9) * side * side
            c = w
    return macs + 64 * 10


def test_summary_lists_layers():
    m = models.resnet20()
    text = m.summary(print_fn=None)
    state = sum(int(b.data.size) for b in m.buffers())  # BN moving statistics (Keras: counted)
    assert f"Total params: {269_722 + state:,}" in text and "Trainable params: 269,722" in text
    assert "stage3 (Sequential)" in text and "(None, 64, 8, 8)" in text
    flops = int(text.split("Forward FLOPs per sample: ")[1].split()[0].replace(",", ""))
    # 2 FLOPs per multiply-add, plus a few percent for batch norm, ReLU and the additions
    assert 2 * cifar_conv_macs() < flops < 2.05 * cifar_conv_macs()
    text = models.lenet5().summary(print_fn=None)
    assert "61,706" in text and "c1 (Conv2D)" in text
