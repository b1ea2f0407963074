"""ONNX import (gpucnn.onnx.load): networks exported by torch.onnx.export run in gpucnn with
torch's outputs and fine-tune; gpucnn -> ONNX -> gpucnn round trips; bad files and
unsupported graphs are clear errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

import gpucnn  # noqa: E402
import gpucnn.onnx as gx  # noqa: E402
from gpucnn import layers as L  # noqa: E402
from gpucnn import models  # noqa: E402
from gpucnn.onnx import UnsupportedOpError  # noqa: E402

helper = onnx.helper


def _run(model: gpucnn.Module, x: np.ndarray) -> np.ndarray:
    with gpucnn.no_grad():
        return model(gpucnn.Tensor(x).to(model.backend)).numpy()


def _close(got: np.ndarray, want: np.ndarray, what: str = "") -> None:
    scale = max(float(np.abs(want).max()), 1e-6)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale, err_msg=what)


# ----------------------------------------------------------------------------- from PyTorch


def _torch_export(torch, net, shape: tuple, path, opset: int = 17) -> None:
    """torch.onnx.export with the TorchScript exporter (``dynamo=False``: the torch.export
    based one needs the onnxscript package, which the test environment does not carry).
    ``TrainingMode.PRESERVE`` on an eval-mode net keeps BatchNormalization nodes (``EVAL``
    folds them into the convolutions)."""
    net.eval()
    x = torch.randn(2, *shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), str(path), dynamo=False, opset_version=opset,
                          training=torch.onnx.TrainingMode.PRESERVE,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})


def _torch_nets(torch):  # noqa: ANN202 - torch.nn modules
    nn = torch.nn

    class LeNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2))
            self.classifier = nn.Sequential(
                nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))

        def forward(self, x):  # noqa: ANN001, ANN202
            return self.classifier(torch.flatten(self.features(x), 1))

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.short = nn.Sequential()
            if stride != 1 or cin != cout:  # projection shortcut
                self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                           nn.BatchNorm2d(cout))

        def forward(self, x):  # noqa: ANN001, ANN202
            y = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(y)) + self.short(x))

    class ResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False),
                                      nn.BatchNorm2d(8), nn.ReLU())
            self.layers = nn.Sequential(Block(8, 8, 1), Block(8, 16, 2), Block(16, 24, 2))
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(24, 5)

        def forward(self, x):  # noqa: ANN001, ANN202
            return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))

    class Branches(nn.Module):
        """Concatenated branches plus the ops exporters emit around them."""

        def __init__(self) -> None:
            super().__init__()
            self.b1 = nn.Conv2d(3, 4, 1)
            self.b2 = nn.Sequential(nn.Conv2d(3, 4, 1), nn.PReLU(4), nn.Conv2d(4, 6, 3, padding=1))
            self.b3 = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(3, 2, 1), nn.ELU())
            self.b4 = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1, groups=3), nn.LeakyReLU(0.2))
            self.pool = nn.AvgPool2d(3, 2, 1)
            self.drop = nn.Dropout(0.5)
            self.fc = nn.Linear(15, 7)

        def forward(self, x):  # noqa: ANN001, ANN202
            y = torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], dim=1)
            y = nn.functional.relu6(self.pool(y))
            y = nn.functional.gelu(y) + torch.sigmoid(y) * torch.tanh(y)
            z = y.mean(dim=(2, 3))                      # ReduceMean
            z = self.drop(z.unsqueeze(1).squeeze(1))
            z = self.fc(z).unsqueeze(-1).transpose(1, 2).squeeze(1)
            return torch.log_softmax(z, dim=1) + torch.softmax(z, dim=1)

    return LeNet(), ResNet(), Branches()


def _randomize_bn(torch, net) -> None:  # noqa: ANN001
    g = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


TORCH_CASES = [("lenet", 0, (1, 28, 28)), ("resnet", 1, (3, 16, 16)),
               ("branches", 2, (3, 10, 10))]


@pytest.mark.parametrize("name,index,shape", TORCH_CASES, ids=[c[0] for c in TORCH_CASES])
def test_torch_exported_models_match_torch(name: str, index: int, shape: tuple,
                                           tmp_path) -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = _torch_nets(torch)[index]
    _randomize_bn(torch, net)
    path = tmp_path / f"{name}.onnx"
    _torch_export(torch, net, shape, path)
    model = gx.load(path)
    assert isinstance(model, gpucnn.Model)
    assert model.input_shape == shape
    for n in (1, 7):
        x = np.random.default_rng(n).standard_normal((n, *shape)).astype(np.float32)
        with torch.no_grad():
            want = net(torch.from_numpy(x)).numpy()
        _close(_run(model, x), want, f"{name}, batch {n}")
    n_params = sum(p.numel() for p in net.parameters())
    assert model.count_params() == n_params


def test_torch_resnet_fine_tunes(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = _torch_nets(torch)[1]
    _randomize_bn(torch, net)
    _torch_export(torch, net, (3, 8, 8), tmp_path / "r.onnx")
    model = gx.load(tmp_path / "r.onnx")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3, 8, 8)).astype(np.float32)
    y = rng.integers(0, 5, 8)
    # One manual step: every parameter gets a non-zero gradient.
    model.train()
    out = model(gpucnn.Tensor(x).to(model.backend))
    loss = gpucnn.functional.cross_entropy(out, gpucnn.Tensor(y).to(model.backend))
    loss.backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and float(np.abs(p.grad.numpy()).sum()) > 0, n
    model.zero_grad()
    # compile / fit: the loss falls.
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", lr=1e-2)
    hist = model.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False)
    losses = hist.history["loss"]
    assert losses[-1] < losses[0]
    assert len(list(model.buffers())) == 2 * 9  # batch-norm statistics: buffers, updated


def test_shape_computing_reshape_is_refused(tmp_path) -> None:
    torch = pytest.importorskip("torch")

    class ViewNet(torch.nn.Module):
        def forward(self, x):  # noqa: ANN001, ANN202
            return x.view(x.size(0), -1)

    _torch_export(torch, ViewNet(), (2, 3, 3), tmp_path / "v.onnx")
    with pytest.raises(UnsupportedOpError, match=r"op 'Shape' \(opset 17\) of node"):
        gx.load(tmp_path / "v.onnx")


# ----------------------------------------------------------------------------- round trip


def _graph_signature(proto: onnx.ModelProto) -> list:
    """Op types, attributes and input values of every node (names aside)."""
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    sig = []
    for n in proto.graph.node:
        attrs = sorted((a.name, str(helper.get_attribute_value(a))) for a in n.attribute)
        values = [inits[i].tolist() if i in inits else None for i in n.input]
        sig.append((n.op_type, attrs, values))
    return sig


@pytest.mark.parametrize("opset", [17, 21])
def test_round_trip(opset: int, tmp_path) -> None:
    src = gpucnn.Sequential([
        L.Conv2D(6, 3, padding="same", input_shape=(3, 12, 12)),
        L.BatchNormalization(),
        L.PReLU(),
        L.MaxPooling2D(2),
        L.ResidualBlock(8, strides=2),
        L.InceptionBlock(2, 2, 3, 2, 3, 2),
        L.ZeroPadding2D(1),
        L.AveragePooling2D(2, padding=1),
        L.Flatten(),
        L.Dense(12, activation="gelu"),
        L.Reshape((3, 4)),
        L.Softmax(axis=1),
        L.Flatten(),
        L.Dense(4),
    ])
    p1 = gx.export(src, tmp_path / "a.onnx", opset=opset)
    back = gx.load(tmp_path / "a.onnx")
    x = np.random.default_rng(3).standard_normal((5, 3, 12, 12)).astype(np.float32)
    src.eval()
    _close(_run(back, x), _run(src, x), "imported")
    p2 = gx.export(back, tmp_path / "b.onnx", opset=opset)
    assert _graph_signature(p2) == _graph_signature(p1)


def test_imported_zoo_model_runs_on_the_current_backend(tmp_path) -> None:
    src = models.resnet20(shortcut="B")
    gx.export(src, tmp_path / "r.onnx", input_shape=(3, 8, 8))
    back = gx.load(tmp_path / "r.onnx")
    assert back.backend == gpucnn.backend.current()
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    src.eval()
    _close(_run(back, x), _run(src, x))
    back.to("numpy")
    _close(_run(back, x), _run(src, x), "after .to('numpy')")


def test_external_data_inside_the_directory_loads(tmp_path) -> None:
    src = models.lenet5()
    proto = gx.to_model_proto(src)
    onnx.save(proto, str(tmp_path / "ext.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    assert (tmp_path / "weights.bin").exists()
    back = gx.load(tmp_path / "ext.onnx")
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    src.eval()
    _close(_run(back, x), _run(src, x))


# ----------------------------------------------------------------------------- bad input


def _tiny_graph(node: onnx.NodeProto, opset: int = 17, extra_inits: tuple = ()) -> onnx.ModelProto:
    g = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 3, 4, 4])],
        list(extra_inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def test_unsupported_op_names_op_opset_and_node(tmp_path) -> None:
    node = helper.make_node("LRN", ["x"], ["y"], name="norm1", size=3)
    onnx.save(_tiny_graph(node), str(tmp_path / "lrn.onnx"))
    with pytest.raises(UnsupportedOpError, match=r"op 'LRN' \(opset 17\) of node 'norm1'"):
        gx.load(tmp_path / "lrn.onnx")


def test_other_domains_are_refused(tmp_path) -> None:
    from gpucnn.onnx.importer import _from_proto

    node = helper.make_node("Relu", ["x"], ["y"], name="r", domain="com.example")
    m = _tiny_graph(node)
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(UnsupportedOpError, match="domain 'com.example'"):
        _from_proto(m)


def test_truncated_file(tmp_path) -> None:
    gx.export(models.lenet5(), tmp_path / "full.onnx")
    data = (tmp_path / "full.onnx").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        gx.load(tmp_path / "cut.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00\x01not onnx at all")
    with pytest.raises(ValueError, match="gpucnn.onnx.load"):
        gx.load(tmp_path / "junk.onnx")
    with pytest.raises(FileNotFoundError):
        gx.load(tmp_path / "missing.onnx")


@pytest.mark.parametrize("location", ["../outside.bin", "sub/../../outside.bin", "/etc/passwd"])
def test_external_data_escaping_the_directory_is_refused(location: str, tmp_path) -> None:
    (tmp_path / "outside.bin").write_bytes(np.zeros(4, np.float32).tobytes())
    inner = tmp_path / "model"
    inner.mkdir()
    w = onnx.TensorProto()
    w.name = "w"
    w.data_type = onnx.TensorProto.FLOAT
    w.dims.extend([4])
    w.data_location = onnx.TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "16")):
        e = w.external_data.add()
        e.key, e.value = k, v
    node = helper.make_node("Add", ["x", "w"], ["y"], name="add")
    onnx.save(_tiny_graph(node, extra_inits=(w,)), str(inner / "m.onnx"))
    with pytest.raises(ValueError, match="outside the model's directory"):
        gx.load(inner / "m.onnx")


def test_old_opset_is_refused(tmp_path) -> None:
    node = helper.make_node("Relu", ["x"], ["y"], name="r")
    m = _tiny_graph(node, opset=9)
    m.ir_version = 4
    onnx.save(m, str(tmp_path / "old.onnx"))
    with pytest.raises(UnsupportedOpError, match="opset 9 is not supported"):
        gx.load(tmp_path / "old.onnx")


def test_wrong_input_shape_is_a_clear_error(tmp_path) -> None:
    gx.export(models.lenet5(), tmp_path / "l.onnx")
    back = gx.load(tmp_path / "l.onnx")
    want = r"expects shape \(None, 1, 28, 28\), got \(2, 1, 20, 20\)"
    with pytest.raises(ValueError, match=want):
        _run(back, np.zeros((2, 1, 20, 20), np.float32))
    with pytest.raises(TypeError, match="expected 1 input"):
        back(gpucnn.Tensor(np.zeros((1, 1, 28, 28), np.float32)),
             gpucnn.Tensor(np.zeros((1, 1, 28, 28), np.float32)))
