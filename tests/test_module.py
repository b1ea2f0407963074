"""Module registration, traversal, modes, state dicts, devices, Sequential and ModuleList."""

from __future__ import annotations

import numpy as np
import pytest

import gpucnn
import gpucnn.functional as F
from gpucnn import layers as L
from gpucnn.model import Sequential
from gpucnn.module import (
    Module,
    ModuleList,
    deserialize,
    register_module,
    serialize,
)
from gpucnn.tensor import Parameter, Tensor


class Affine(Module):
    def __init__(self, n: int = 3, name: str | None = None) -> None:
        super().__init__(name=name)
        self.n = n
        self.w = Parameter(np.arange(n, dtype=np.float32) + 1)
        self.b = Parameter(np.zeros(n, dtype=np.float32))
        self.register_buffer("count", np.zeros(1, dtype=np.float32))
        self.register_buffer("scratch", np.zeros(2, dtype=np.float32), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.w + self.b


class Net(Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = Affine(3)
        self.blocks = [Affine(3), Affine(3)]  # a plain list becomes a ModuleList
        self.scale = Parameter(np.ones(1, dtype=np.float32))

    def forward(self, x: Tensor) -> Tensor:
        x = self.first(x)
        for b in self.blocks:
            x = b(x)
        return x * self.scale


def test_registration_and_traversal() -> None:
    net = Net()
    assert isinstance(net.blocks, ModuleList) and len(net.blocks) == 2
    names = [n for n, _ in net.named_parameters()]
    assert names == ["scale", "first.w", "first.b", "blocks.0.w", "blocks.0.b", "blocks.1.w",
                     "blocks.1.b"]
    assert len(list(net.parameters())) == 7
    assert [type(m).__name__ for m in net.children()] == ["Affine", "ModuleList"]
    assert len(list(net.modules())) == 5  # net, first, list, 2 blocks
    assert [n for n, _ in net.named_buffers()] == ["first.count", "first.scratch",
                                                  "blocks.0.count", "blocks.0.scratch",
                                                  "blocks.1.count", "blocks.1.scratch"]
    assert net.count_params() == 3 * 6 + 1


def test_shared_parameter_counted_once() -> None:
    net = Net()
    net.blocks[1].w = net.first.w
    assert len(list(net.parameters())) == 6
    assert net.count_params() == 16


def test_assignments_checked() -> None:
    a = Affine()
    with pytest.raises(TypeError, match="is a parameter"):
        a.w = np.ones(3)
    a.w = None  # allowed: removes the value
    assert a.w is None
    assert "w" not in dict(a.named_parameters())

    class Bad(Module):
        def __init__(self) -> None:
            self.x = 1  # before super().__init__()

    with pytest.raises(AttributeError, match="super"):
        Bad()
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = a.nope


def test_train_eval_recursive_and_zero_grad() -> None:
    net = Net()
    net.eval()
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    out = net(Tensor(np.ones((2, 3), dtype=np.float32)))
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_state_dict_copies_and_buffers() -> None:
    net = Net()
    sd = net.state_dict()
    assert "first.count" in sd and "first.scratch" not in sd  # non-persistent excluded
    assert "first.count" not in dict(net.named_parameters())
    sd["first.w"][0] = 99.0
    assert net.first.w.numpy()[0] == 1.0  # a copy


def test_load_state_dict_round_trip_and_errors() -> None:
    a, b = Net(), Net()
    for p in a.parameters():
        p.data[...] = np.random.default_rng(0).normal(size=p.shape)
    a.first.count.data[...] = 7
    ids = [id(p) for p in b.parameters()]
    b.load_state_dict(a.state_dict())
    assert [id(p) for p in b.parameters()] == ids  # in place: same Parameter objects
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb
        np.testing.assert_array_equal(va, vb)

    sd = a.state_dict()
    del sd["first.w"]
    sd["extra.weight"] = np.zeros(2)
    with pytest.raises(KeyError, match=r"missing keys \['first.w'\].*unexpected keys "
                                       r"\['extra.weight'\]"):
        b.load_state_dict(sd)
    res = b.load_state_dict(sd, strict=False)
    assert res == {"missing_keys": ["first.w"], "unexpected_keys": ["extra.weight"]}

    sd = a.state_dict()
    sd["first.b"] = np.zeros(5)
    with pytest.raises(ValueError, match=r"'first.b' has shape \(5,\).*\(3,\)"):
        b.load_state_dict(sd)


def test_load_state_dict_unbuilt_hint() -> None:
    m = Sequential([L.Dense(4)])
    with pytest.raises(KeyError, match="not built"):
        m.load_state_dict({"0.weight": np.zeros((4, 3))})


def test_to_numpy_keeps_parameter_objects() -> None:
    net = Net()
    before = list(net.parameters())
    assert net.to("cpu") is net
    assert list(net.parameters()) == before
    assert net.backend == "numpy"
    with pytest.raises(ValueError, match="unknown backend"):
        net.to("tpu")


@pytest.mark.gpu
def test_to_cuda_and_back() -> None:
    net = Net()
    opt = gpucnn.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    x = np.ones((2, 3), dtype=np.float32)
    ref = net(Tensor(x)).numpy()
    net.to("cuda")
    assert all(p.backend == "cuda" for p in net.parameters())
    assert all(b.backend == "cuda" for b in net.buffers())
    out = net(Tensor(x, backend="cuda"))
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-6)
    out.sum().backward()
    opt.step()  # the optimizer still holds the same Parameter objects
    net.to("numpy")
    assert all(p.backend == "numpy" for p in net.parameters())


def test_sequential_container() -> None:
    s = Sequential(name="stack")
    s.add(L.Dense(4)).add(L.Dense(2))
    assert len(s) == 2 and s.name == "stack"
    assert isinstance(s[0], L.Dense) and s[-1].units == 2
    sub = s[:1]
    assert isinstance(sub, Sequential) and len(sub) == 1 and sub[0] is s[0]
    y = s(Tensor(np.ones((5, 3), dtype=np.float32)))
    assert y.shape == (5, 2)
    assert [n for n, _ in s.named_parameters()] == ["0.weight", "0.bias", "1.weight", "1.bias"]
    last = s.pop()
    assert last.units == 2 and len(s) == 1
    with pytest.raises(TypeError, match="expected a layer"):
        s.add("relu")  # type: ignore[arg-type]


def test_sequential_eager_build_with_input_shape() -> None:
    s = Sequential([L.Flatten(input_shape=(2, 3)), L.Dense(4)])
    assert s.built and s[1].weight.shape == (4, 6)
    assert s.input_shape == (2, 3)
    with pytest.raises(ValueError, match=r"expected \(None, 2, 3\), received \(N, 3, 2\)"):
        s(Tensor(np.ones((1, 3, 2), dtype=np.float32)))


def test_module_list_ops() -> None:
    ml = ModuleList([Affine(), Affine()])
    ml.append(Affine())
    ml.insert(0, Affine(2))
    assert len(ml) == 4 and ml[0].n == 2
    assert [k for k, _ in ml.named_children()] == ["0", "1", "2", "3"]
    with pytest.raises(TypeError):
        ml.append(3)  # type: ignore[arg-type]


def test_get_set_weights() -> None:
    a, b = Net(), Net()
    a.first.w.data[...] = 5
    b.set_weights(a.get_weights())
    np.testing.assert_array_equal(b.first.w.numpy(), 5)
    with pytest.raises(ValueError, match="expected"):
        b.set_weights([])


def test_trainable_flag_freezes() -> None:
    net = Net()
    net.first.trainable = False
    assert net.count_params(trainable=False) == 6
    assert len(net.trainable_parameters()) == 5


@register_module
class Scaled(Module):
    def __init__(self, factor: float = 2.0, name: str | None = None) -> None:
        super().__init__(name=name)
        self.factor = factor
        self.inner = L.Dense(3)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.inner(x)) * self.factor

    def get_config(self) -> dict:
        return {"factor": self.factor, "name": self.name}


def test_registry_round_trip_and_unregistered_error() -> None:
    m = Scaled(3.0, name="sc")
    m2 = deserialize(serialize(m))
    assert isinstance(m2, Scaled) and m2.factor == 3.0 and m2.name == "sc"
    with pytest.raises(ValueError, match="register_module"):
        serialize(Affine())
    with pytest.raises(ValueError, match="unknown module class 'Nope'"):
        deserialize({"class_name": "Nope", "config": {}})


def test_generic_module_build_and_output_shape() -> None:
    m = Scaled()
    assert not m.built
    m.build((5,))
    assert m.built and m.inner.weight.shape == (3, 5)
    assert m.output_shape((5,)) == (3,)
    assert m.flops((5,)) == 2 * 5 * 3 + 3


def test_repr_lists_children() -> None:
    r = repr(Sequential([L.Dense(2), L.ReLU()]))
    assert "(0): Dense" in r and "(1): ReLU" in r


# ----------------------------------------------------------------------------- Module vs Model

_TRAINING_API = ("compile", "fit", "evaluate", "predict", "train_on_batch", "summary", "save",
                 "save_weights", "load_weights", "optimizer", "history", "stop_training")


def test_module_has_no_training_api() -> None:
    net = Net()
    for attr in _TRAINING_API:
        assert not hasattr(Module, attr), attr
        with pytest.raises(AttributeError, match=f"no attribute '{attr}'"):
            getattr(net, attr)
    blocks = (L.ResidualBlock(4), L.InceptionBlock(2, 2, 3, 1, 2, 2))
    for layer in (L.Dense(3), L.Conv2D(2, 3), *blocks, ModuleList([L.Dense(2)])):
        assert not isinstance(layer, gpucnn.Model), type(layer).__name__
        assert not hasattr(layer, "fit"), type(layer).__name__


def test_module_subclass_stays_plain_and_model_subclass_trains() -> None:
    class Plain(Module):
        def __init__(self) -> None:
            super().__init__()
            self.d = L.Dense(2)

        def forward(self, x: Tensor) -> Tensor:
            return self.d(x)

    class Trained(gpucnn.Model):
        def __init__(self) -> None:
            super().__init__()
            self.d = L.Dense(2)

        def forward(self, x: Tensor) -> Tensor:
            return self.d(x)

    p = Plain()
    assert not isinstance(p, gpucnn.Model)
    with pytest.raises(AttributeError, match="no attribute 'fit'"):
        _ = p.fit
    t = Trained()
    assert isinstance(t, Module) and isinstance(t, gpucnn.Model)
    assert t.optimizer is None and t.completed_epochs == 0
    x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    t.compile("sgd", "sparse_categorical_crossentropy", lr=0.1)
    t.fit(x, np.arange(8) % 2, batch_size=4, epochs=1, verbose=0)
    assert t.completed_epochs == 1 and t.predict(x).shape == (8, 2)


def test_sequential_and_the_zoo_are_models() -> None:
    from gpucnn import model as model_mod
    from gpucnn import models

    assert gpucnn.Sequential is Sequential is model_mod.Sequential
    assert issubclass(Sequential, gpucnn.Model) and issubclass(gpucnn.Model, Module)
    assert isinstance(Sequential([L.Dense(2)]), gpucnn.Model)
    assert isinstance(models.lenet5(), gpucnn.Model)
    assert issubclass(models.CifarResNet, gpucnn.Model) and issubclass(models.ResNet, gpucnn.Model)
    assert not issubclass(models.BasicBlock, gpucnn.Model)  # a block stays a plain Module
    import gpucnn.module as module_mod

    assert not hasattr(module_mod, "Sequential")  # it lives in gpucnn.model only


def test_module_imports_neither_model_nor_saving() -> None:
    """gpucnn.module loads with gpucnn.model and gpucnn.saving blocked (the package's
    __init__, which imports both, is bypassed), and neither module.py nor saving.py has an
    import statement naming gpucnn.model (the module <-> model <-> saving cycle is gone)."""
    import ast
    import pathlib
    import subprocess
    import sys

    pkg = pathlib.Path(gpucnn.__file__).parent
    code = (
        "import sys, types\n"
        f"pkg = types.ModuleType('gpucnn'); pkg.__path__ = [{str(pkg)!r}]\n"
        "sys.modules['gpucnn'] = pkg\n"
        "sys.modules['gpucnn.model'] = None\n"
        "sys.modules['gpucnn.saving'] = None\n"
        "import numpy as np\n"
        "from gpucnn.module import Module, ModuleList\n"
        "from gpucnn.tensor import Parameter\n"
        "class M(Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.w = Parameter(np.ones(3, np.float32))\n"
        "m = M().to('numpy')\n"
        "assert list(m.state_dict()) == ['w'] and not hasattr(m, 'fit')\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "GPUCNN_SIMULATE_CUDA"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr

    def imported(path: pathlib.Path) -> set[str]:
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
        return names

    mod, sav = imported(pkg / "module.py"), imported(pkg / "saving.py")
    assert not {"gpucnn.model", "gpucnn.saving"} & mod, mod
    assert "gpucnn.model" not in sav, sav
