"""ONNX export (gpucnn.onnx.export): every zoo model and every exportable layer, judged by
ONNX Runtime and by onnx.reference.ReferenceEvaluator, on batch sizes 1 and 7; opsets 17 and
21; dynamic batch; valid files (checker, strict shape inference, minimal IR); clear errors."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import gpucnn  # noqa: E402
import gpucnn.functional as F  # noqa: E402
import gpucnn.onnx as gx  # noqa: E402
from gpucnn import layers as L  # noqa: E402
from gpucnn import models  # noqa: E402
from gpucnn.onnx import ExportError  # noqa: E402


def _gpucnn_out(model: gpucnn.Module, x: np.ndarray) -> np.ndarray:
    model.eval()
    with gpucnn.no_grad():
        return model(gpucnn.Tensor(x).to(model.backend)).numpy()


def _close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """float32, 1e-4 relative (to each value, and to the output's scale near zero)."""
    scale = max(float(np.abs(want).max()), 1e-6)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale, err_msg=what)


def check_parity(model: gpucnn.Module, shape: tuple, path, opset: int = 21,
                 batches: tuple = (1, 7), reference: bool = True) -> onnx.ModelProto:
    """Export, validate, and compare ONNX Runtime (and the reference evaluator) with gpucnn."""
    proto = gx.export(model, path, input_shape=shape, opset=opset)
    loaded = onnx.load(str(path))
    onnx.checker.check_model(loaded, full_check=True)
    onnx.shape_inference.infer_shapes(loaded, check_type=True, strict_mode=True)
    assert loaded.ir_version == gx.min_ir_version(opset)
    assert [(o.domain, o.version) for o in loaded.opset_import] == [("", opset)]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(42)
    for n in batches:
        x = rng.standard_normal((n, *shape)).astype(np.float32)
        want = _gpucnn_out(model, x)
        (got,) = sess.run(None, {"input": x})
        assert got.shape == want.shape
        _close(got, want, f"onnxruntime, batch {n}")
        if reference and n == batches[0]:
            from onnx.reference import ReferenceEvaluator

            (ref,) = ReferenceEvaluator(loaded).run(None, {"input": x})
            _close(ref, want, f"ReferenceEvaluator, batch {n}")
    return proto


def _ops(proto: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in proto.graph.node]


# ----------------------------------------------------------------------------- the zoo

ZOO = [
    ("lenet5", {}, (1, 28, 28)),
    ("seed_lenet", {}, (3, 32, 32)),
    ("resnet20", {}, (3, 8, 8)),
    ("resnet20", {"shortcut": "B"}, (3, 8, 8)),
    ("resnet56", {}, (3, 8, 8)),
    ("resnet18", {"num_classes": 10}, (3, 16, 16)),
    ("resnet34", {"num_classes": 10}, (3, 16, 16)),
    ("inception_small", {"input_size": 16}, (3, 16, 16)),
    ("vgg11", {}, (3, 32, 32)),
]


def test_zoo_is_covered() -> None:
    assert {name for name, _, _ in ZOO} == set(models.MODEL_NAMES)


@pytest.mark.parametrize("name,kw,shape", ZOO, ids=[f"{n}{k}" for n, k, _ in ZOO])
def test_zoo_parity(name: str, kw: dict, shape: tuple, tmp_path) -> None:
    model = models.get_model(name, **kw)
    # Non-trivial batch-norm statistics, so inference-mode normalisation really is checked.
    rng = np.random.default_rng(1)
    for n, b in model.named_buffers():
        if n.endswith("running_mean"):
            b.data[...] = gpucnn.backend.to_backend(
                rng.normal(0, 0.1, b.shape).astype(np.float32), b.backend)
        elif n.endswith("running_var"):
            b.data[...] = gpucnn.backend.to_backend(
                rng.uniform(0.5, 1.5, b.shape).astype(np.float32), b.backend)
    proto = check_parity(model, shape, tmp_path / f"{name}.onnx")
    inits = {i.name for i in proto.graph.initializer}
    assert {n for n, _ in model.named_parameters()} <= inits
    assert not any(op in _ops(proto) for op in ("Dropout", "Identity"))


# ----------------------------------------------------------------------------- every layer


def every_layer_sequential() -> gpucnn.Sequential:
    return gpucnn.Sequential([
        L.Conv2D(8, 3, padding="same", activation="relu", input_shape=(3, 15, 15)),
        L.BatchNormalization(),
        L.ZeroPadding2D(((1, 0), (0, 2))),
        L.Conv2D(8, 4, padding="same", groups=2, activation="leaky_relu"),  # even kernel
        L.MaxPooling2D(3, strides=2, padding="same"),                        # -inf padding
        L.PReLU(),
        L.ResidualBlock(12, strides=2),                                      # projection
        L.ResidualBlock(12),                                                 # identity
        L.InceptionBlock(4, 4, 6, 2, 3, 3),
        L.AveragePooling2D(3, strides=1, padding="same"),                    # Keras "same"
        L.AveragePooling2D(2, strides=1, padding=1),                         # count pad
        L.Conv2D(8, 3, padding=2, dilation_rate=2, activation="elu"),
        L.SpatialDropout2D(0.3),
        L.ELU(0.5),
        L.LeakyReLU(0.2),
        L.ReLU(),
        L.PReLU(shared=True),
        L.AdaptiveAveragePooling2D((5, 3)),                                  # from 5x6
        L.Activation("sigmoid"),
        L.Flatten(),
        L.Dense(16, activation="tanh"),
        L.Dropout(0.4),
        L.Dense(12, activation="gelu"),
        L.BatchNormalization(),
        L.Activation("softplus"),
        L.Reshape((3, 4)),
        L.Softmax(axis=1),
        L.Reshape((12,)),
        L.Dense(6, use_bias=False, activation="log_softmax"),
    ])


@pytest.mark.parametrize("opset", [17, 21])
def test_every_layer_sequential(opset: int, tmp_path) -> None:
    model = every_layer_sequential()
    proto = check_parity(model, (3, 15, 15), tmp_path / "seq.onnx", opset=opset)
    ops = set(_ops(proto))
    want = {"Conv", "Relu", "LeakyRelu", "Elu", "PRelu", "Sigmoid", "Tanh", "Softplus",
            "Softmax", "LogSoftmax", "BatchNormalization", "MaxPool", "AveragePool", "Pad",
            "Add", "Concat", "Flatten", "Reshape", "Gemm"}
    assert want <= ops, want - ops
    assert ("Gelu" in ops) == (opset >= 20)
    assert ("Erf" in ops) == (opset < 20)
    pools = [n for n in proto.graph.node if n.op_type == "AveragePool"]
    assert all(any(a.name == "count_include_pad" for a in n.attribute) for n in pools)


def test_global_and_adaptive_max_pooling(tmp_path) -> None:
    model = gpucnn.Sequential([
        L.Conv2D(4, 3, input_shape=(2, 10, 10)),
        L.AdaptiveMaxPooling2D((4, 2)),
        L.GlobalMaxPooling2D(keepdims=True),
        L.GlobalAveragePooling2D(),
    ])
    proto = check_parity(model, (2, 10, 10), tmp_path / "pool.onnx")
    assert {"MaxPool", "GlobalMaxPool", "GlobalAveragePool"} <= set(_ops(proto))


class TorchStyle(gpucnn.Model):
    """A PyTorch-style model: layers plus functional ops and Tensor arithmetic in forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = L.Conv2D(6, 3, padding=1)
        self.bn = L.BatchNormalization()
        self.branch = L.Conv2D(6, 1)
        self.add = L.Add()
        self.cat = L.Concatenate()
        self.head = L.Dense(5)

    def forward(self, x: gpucnn.Tensor) -> gpucnn.Tensor:
        y = F.relu(self.bn(self.conv(x)))
        y = self.add([y, self.branch(y)])
        y = self.cat([y, F.max_pool2d(y, 3, 1, 1), y[:, :2] * 0.5 - 1.0])
        y = F.pad(y, (1, 0, 0, 1))
        y = F.avg_pool2d(y, 2, ceil_mode=True, count_include_pad=False)
        y = F.clip(y, 0.0, 6.0) + F.gelu(y, approximate="tanh") + F.exp(-(y ** 2))
        z = F.transpose(y, (0, 2, 3, 1))                  # NHWC
        z = F.mean(z, axis=(1, 2)) + F.sum(z, axis=1).max(axis=1) / 10.0
        z = F.softplus(z, beta=2.0) + F.abs(z).sqrt() + F.log(F.sigmoid(z))
        eye = gpucnn.Tensor(np.eye(5, dtype=np.float32)).to(z.backend)
        return F.log_softmax(self.head(z) @ eye, axis=1)


@pytest.mark.parametrize("opset", [17, 18, 21])
def test_torch_style_module(opset: int, tmp_path) -> None:
    model = TorchStyle()
    model.build((3, 9, 9))
    check_parity(model, (3, 9, 9), tmp_path / "m.onnx", opset=opset)


def test_dynamic_and_fixed_batch(tmp_path) -> None:
    model = models.lenet5()
    dyn = gx.export(model, tmp_path / "dyn.onnx")
    dim = dyn.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param == "batch"
    assert dyn.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    fixed = gx.export(model, tmp_path / "fix.onnx", dynamic_batch=False, batch_size=3)
    assert fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 3
    sess = ort.InferenceSession(str(tmp_path / "fix.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    _close(sess.run(None, {"input": x})[0], _gpucnn_out(model, x), "fixed batch")
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument):  # fixed batch
        sess.run(None, {"input": x[:2]})


def test_ir_version_is_minimal_for_each_opset() -> None:
    table = {17: 8, 18: 8, 19: 9, 20: 9, 21: 10}
    for opset, ir in table.items():
        assert gx.min_ir_version(opset) == ir


def test_export_from_a_model_left_in_training_mode(tmp_path) -> None:
    model = every_layer_sequential()
    model.train()
    gx.export(model, tmp_path / "t.onnx")
    assert model.training  # restored
    assert not any(m.training is False for m in model.modules())


def test_export_restores_the_tracing_hooks(tmp_path) -> None:
    from gpucnn.module import Module
    from gpucnn.tensor import Function, Tensor

    before = (Function.__dict__["apply"], Module.__dict__["__call__"], Tensor.__dict__["_cmp"])
    with pytest.raises(ExportError):
        gx.export(_WhereModel(), tmp_path / "w.onnx", input_shape=(4,))
    gx.export(models.lenet5(), tmp_path / "ok.onnx")
    after = (Function.__dict__["apply"], Module.__dict__["__call__"], Tensor.__dict__["_cmp"])
    assert before == after


# ----------------------------------------------------------------------------- errors


class _WhereModel(gpucnn.Model):
    def __init__(self) -> None:
        super().__init__()
        self.dense = L.Dense(4)

    def forward(self, x: gpucnn.Tensor) -> gpucnn.Tensor:
        return self.dense(F.where(x > 0, x, x * 0.1))


class _LossLayer(gpucnn.Module):
    def forward(self, x: gpucnn.Tensor) -> gpucnn.Tensor:
        return F.mse_loss(x, gpucnn.Tensor(np.zeros(x.shape, dtype=np.float32)).to(x.backend))


def test_unexportable_op_names_the_layer(tmp_path) -> None:
    with pytest.raises(ExportError, match="comparison|where"):
        gx.export(_WhereModel(), tmp_path / "w.onnx", input_shape=(4,))
    seq = gpucnn.Sequential([L.Dense(3, input_shape=(4,)), _LossLayer(name="my_loss")])
    with pytest.raises(ExportError, match=r"'my_loss'.*mse_loss"):
        gx.export(seq, tmp_path / "l.onnx")


def test_adaptive_pool_must_divide(tmp_path) -> None:
    model = gpucnn.Sequential([L.AdaptiveAveragePooling2D(3, input_shape=(2, 8, 8),
                                                          name="ada")])
    with pytest.raises(ExportError, match=r"'ada'.*8x8 to 3x3.*divide"):
        gx.export(model, tmp_path / "a.onnx")


def test_divisor_override_is_refused(tmp_path) -> None:
    class M(gpucnn.Model):
        def forward(self, x: gpucnn.Tensor) -> gpucnn.Tensor:
            return F.avg_pool2d(x, 2, divisor_override=3)

    with pytest.raises(ExportError, match="divisor_override"):
        gx.export(M(), tmp_path / "d.onnx", input_shape=(1, 4, 4))


def test_batch_mixing_reshape_needs_fixed_batch(tmp_path) -> None:
    class M(gpucnn.Model):
        def forward(self, x: gpucnn.Tensor) -> gpucnn.Tensor:
            return F.reshape(x, (-1, 2))

    with pytest.raises(ExportError, match="batch axis.*dynamic_batch=False"):
        gx.export(M(), tmp_path / "r.onnx", input_shape=(3,))
    proto = gx.export(M(), tmp_path / "r.onnx", input_shape=(4,), dynamic_batch=False,
                      batch_size=2)
    sess = ort.InferenceSession(str(tmp_path / "r.onnx"), providers=["CPUExecutionProvider"])
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(sess.run(None, {"input": x})[0], x.reshape(-1, 2))
    assert proto.graph.output[0].type.tensor_type.shape.dim[0].dim_value == 4


@pytest.mark.parametrize("opset", [16, 22, 3])
def test_bad_opset(opset: int, tmp_path) -> None:
    with pytest.raises(ValueError, match=r"opset must be between 17 and 21"):
        gx.export(models.lenet5(), tmp_path / "o.onnx", opset=opset)


def test_unknown_input_shape(tmp_path) -> None:
    model = gpucnn.Sequential([L.Conv2D(4, 3), L.Flatten(), L.Dense(2)])
    with pytest.raises(ValueError, match="input shape .* is unknown; pass input_shape"):
        gx.export(model, tmp_path / "u.onnx")
    check_parity(model, (1, 6, 6), tmp_path / "u.onnx", batches=(2,), reference=False)


def test_bad_arguments(tmp_path) -> None:
    with pytest.raises(TypeError, match="expected a gpucnn Module"):
        gx.export(object(), tmp_path / "x.onnx", input_shape=(1,))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="opset must be an int"):
        gx.export(models.lenet5(), tmp_path / "x.onnx", opset="21")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        gx.export(models.lenet5(), tmp_path / "x.onnx", dynamic_batch=False, batch_size=0)


# ----------------------------------------------------------------------------- packaging, CLI


def test_onnx_is_imported_lazily(monkeypatch, tmp_path) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r'pip install "gpucnn\[onnx\]"'):
        gx.export(models.lenet5(), tmp_path / "x.onnx")
    with pytest.raises(ImportError, match=r'pip install "gpucnn\[onnx\]"'):
        gx.load(tmp_path / "x.onnx")


def test_command_line_export_and_inspect(tmp_path, capsys) -> None:
    from gpucnn.onnx.cli import main

    out = tmp_path / "r.onnx"
    assert main(["export", "--model", "resnet20", "--input", "3,8,8", "--opset", "17",
                 "--out", str(out)]) == 0
    assert "opset 17, IR 8" in capsys.readouterr().out
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == ["batch", 3, 8, 8]
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "input:     input (batch, 3, 8, 8)" in text
    assert "Conv x19" in text and "gpucnn:    importable" in text
    assert main(["export", "--model", "lenet5", "--opset", "16", "--out", str(out)]) == 2
    assert "opset must be between 17 and 21" in capsys.readouterr().err
    assert main(["export", "--out", str(out)]) == 2
    assert "exactly one of --model" in capsys.readouterr().err


def test_gpucnn_command_has_the_onnx_subcommands(tmp_path, capsys, monkeypatch) -> None:
    """``gpucnn onnx export/inspect`` is the same command under the main CLI; without the onnx
    package it fails with exit code 1 and the install hint, not a traceback."""
    import sys

    from gpucnn import cli

    out = tmp_path / "l.onnx"
    assert cli.main(["onnx", "export", "--model", "lenet5", "--input", "1,28,28",
                     "--out", str(out)]) == 0
    assert out.exists() and "wrote" in capsys.readouterr().out
    assert cli.main(["onnx", "inspect", str(out)]) == 0
    assert "Conv x2" in capsys.readouterr().out
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert cli.main(["onnx", "inspect", str(out)]) == 1
    assert 'pip install "gpucnn[onnx]"' in capsys.readouterr().err


def test_an_interrupted_export_leaves_no_partial_file(tmp_path, monkeypatch) -> None:
    """The file is written atomically: a write that fails part way (here the fsync) leaves
    neither ``path`` nor a temporary file behind, and an earlier export at ``path`` intact."""
    import os

    path = tmp_path / "m.onnx"
    gx.export(models.lenet5(), path)
    before = path.read_bytes()

    def fail(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        gx.export(models.resnet20(), path, input_shape=(3, 8, 8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    assert path.read_bytes() == before
