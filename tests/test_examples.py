"""Every example runs end to end on NumPy in its --smoke mode: the training loss falls and the
output files are written (plots only when matplotlib is importable)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

import gpucnn

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
HAS_MPL = importlib.util.find_spec("matplotlib") is not None


def load_example(name: str):
    path = EXAMPLES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"gpucnn_example_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(autouse=True)
def _restore_backend():
    prev = gpucnn.backend.current()
    yield
    gpucnn.backend.use(prev)


def assert_loss_falls(losses: list[float]) -> None:
    losses = [float(v) for v in losses]
    assert len(losses) >= 3 and all(math.isfinite(v) for v in losses)
    k = max(1, len(losses) // 3)
    assert np.mean(losses[-k:]) < 0.9 * np.mean(losses[:k]), losses


def test_train_mnist_smoke(tmp_path, capsys):
    mod = load_example("train_mnist")
    res = mod.main(["--smoke", "--backend", "numpy", "--out", str(tmp_path)])
    assert_loss_falls(res["batch_losses"])
    assert (tmp_path / "lenet5.npz").is_file() and (tmp_path / "history.json").is_file()
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["test_accuracy"] == pytest.approx(res["accuracy"])
    assert 0.0 <= res["accuracy"] <= 1.0
    assert res["accuracy"] > 0.2  # above chance (0.1) after one short epoch
    out = capsys.readouterr().out
    assert "Epoch 1/1" in out
    assert out.strip().splitlines()[-1].startswith("held-out test accuracy:")
    pngs = {"training_curves.png", "conv1_filters.png"}
    if HAS_MPL:
        assert pngs <= {p.name for p in tmp_path.iterdir()}
    else:
        assert "pip install" in out and not any((tmp_path / p).exists() for p in pngs)
    # the saved model reloads and reproduces the reported accuracy
    from gpucnn.saving import load_model

    model = load_model(tmp_path / "lenet5.npz")
    _, _, x_te, y_te = mod.load_split(0)
    pred = model.predict(x_te[:256]).argmax(axis=1)
    assert np.mean(pred == y_te[:256]) == pytest.approx(res["accuracy"])


def test_train_mnist_split_is_stratified_and_fixed():
    mod = load_example("train_mnist")
    x_tr, y_tr, x_te, y_te = mod.load_split(0)
    assert x_tr.shape == (4000, 1, 28, 28) and x_te.shape == (1000, 1, 28, 28)
    assert np.bincount(y_te, minlength=10).tolist() == [100] * 10
    again = mod.load_split(0)
    np.testing.assert_array_equal(again[3], y_te)
    np.testing.assert_array_equal(again[2], x_te)


def test_train_cifar10_synthetic_smoke(tmp_path):
    mod = load_example("train_cifar10")
    res = mod.main(["--synthetic", "--smoke", "--backend", "numpy", "--out", str(tmp_path)])
    assert_loss_falls(res["batch_losses"])
    assert (tmp_path / "resnet20.npz").is_file() and (tmp_path / "history.json").is_file()


def test_train_cifar10_missing_data_exits_2(tmp_path, capsys):
    mod = load_example("train_cifar10")
    with pytest.raises(SystemExit) as e:
        mod.main(["--data-dir", str(tmp_path / "none"), "--backend", "numpy", "--smoke",
                  "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--download" in err and "--data-dir DIR" in err
    assert "download=True" not in err and "root=" not in err  # flags, not Python arguments


def test_inception_demo_smoke(tmp_path, capsys):
    mod = load_example("inception_demo")
    res = mod.main(["--smoke", "--backend", "numpy", "--out", str(tmp_path)])
    assert_loss_falls(res["batch_losses"])
    assert "InceptionBlock" in res["summary"] and "Total params" in capsys.readouterr().out
    assert (tmp_path / "inception_small.npz").is_file()


def test_residual_vs_plain_smoke(tmp_path, capsys):
    mod = load_example("residual_vs_plain")
    res = mod.main(["--smoke", "--backend", "numpy", "--out", str(tmp_path)])
    for kind in ("plain", "residual"):
        assert_loss_falls(res[kind]["batch_losses"])
    assert len(res["difference"]) == 1
    assert res["difference"][0] == pytest.approx(
        res["plain"]["epoch_losses"][0] - res["residual"]["epoch_losses"][0])
    # same data, same initial weights, different architectures: the curves differ
    assert res["plain"]["batch_losses"] != res["residual"]["batch_losses"]
    assert res["plain"]["batch_losses"][0] != pytest.approx(0.0)
    assert "plain - residual" in capsys.readouterr().out
    assert (tmp_path / "losses.json").is_file()
    if HAS_MPL:
        assert (tmp_path / "residual_vs_plain.png").is_file()


def test_custom_kernel_smoke(tmp_path):
    mod = load_example("custom_kernel")
    res = mod.main(["--smoke", "--backend", "numpy", "--out", str(tmp_path)])
    assert (tmp_path / "swish.cu").is_file()
    assert_loss_falls(res["batch_losses"])
    from gpucnn.testing.emulator import compiler_available

    if compiler_available():
        assert res["emulator_error"] is not None and res["emulator_error"] < 1e-5


def test_custom_kernel_parity_catches_a_wrong_kernel(tmp_path):
    """The example's parity check is not a tautology: a planted bug is reported."""
    from gpucnn.testing.emulator import compiler_available

    if not compiler_available():
        pytest.skip("no host C++ compiler")
    mod = load_example("custom_kernel")
    bad = mod.SWISH_CU.replace("dx[i] = g[i] * (s + v * s * (T(1) - s));",
                               "dx[i] = g[i] * s;")
    assert bad != mod.SWISH_CU
    path = tmp_path / "bad" / "swish.cu"
    path.parent.mkdir()
    path.write_text(bad)
    with pytest.raises(AssertionError, match="backward"):
        mod.emulator_parity(path, (37,))


def test_edge_detection_runs(tmp_path):
    mod = load_example("edge_detection")
    assert mod.main(["--backend", "numpy", "--out", str(tmp_path)]) == 0
    if HAS_MPL:
        assert any(p.suffix == ".png" for p in tmp_path.iterdir())


EXAMPLE_NAMES = ("custom_kernel", "edge_detection", "inception_demo", "residual_vs_plain",
                 "train_cifar10", "train_mnist")


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_backend_default_honours_gpucnn_backend(name, monkeypatch, capsys):
    mod = load_example(name)
    monkeypatch.delenv("GPUCNN_BACKEND", raising=False)
    assert mod.build_parser().parse_args([]).backend == "auto"
    for env, want in (("cpu", "numpy"), ("numpy", "numpy"), ("gpu", "cuda"), ("CUDA", "cuda")):
        monkeypatch.setenv("GPUCNN_BACKEND", env)
        parser = mod.build_parser()
        assert parser.parse_args([]).backend == want
        assert parser.parse_args(["--backend", "cpu"]).backend == "numpy"  # the flag wins
        assert f"(default: {env}, from $GPUCNN_BACKEND)" in " ".join(parser.format_help().split())
    monkeypatch.setenv("GPUCNN_BACKEND", "tpu")
    with pytest.raises(SystemExit) as e:
        mod.build_parser().parse_args([])
    assert e.value.code == 2
    assert "$GPUCNN_BACKEND" in capsys.readouterr().err


def test_example_runs_on_the_backend_of_the_environment(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GPUCNN_BACKEND", "cpu")
    mod = load_example("edge_detection")
    assert mod.main(["--out", str(tmp_path)]) == 0
    assert "backend numpy" in capsys.readouterr().out
