"""The ``gpucnn`` command line: info, models, summary, a train smoke run, usage errors (exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import gpucnn
from gpucnn import cli
from gpucnn.models import MODEL_NAMES

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _restore_backend():
    prev = gpucnn.backend.current()
    yield
    gpucnn.backend.use(prev)


def test_info(capsys):
    assert cli.main(["info", "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    assert "backend: numpy" in out
    assert "cuda available:" in out
    if not gpucnn.backend.cuda_available():
        assert gpucnn.backend.cuda_unavailable_reason() in out
    assert "kernel sources:" in out and "im2col.cu" in out
    assert "cupy kernel cache:" in out and "emulator kernel cache:" in out


def test_info_cuda_request_without_gpu(capsys):
    if gpucnn.backend.cuda_available():
        pytest.skip("a GPU is usable here")
    assert cli.main(["info", "--backend", "cuda"]) == 0
    assert "not usable" in capsys.readouterr().out


def test_models_lists_zoo(capsys):
    assert cli.main(["models"]) == 0
    assert capsys.readouterr().out.split() == list(MODEL_NAMES)


def test_summary_resnet18(capsys):
    assert cli.main(["summary", "--model", "resnet18", "--input", "3,32,32",
                     "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    # 32x32 input: the small-input stem (3x3 conv, no max pool) and 10 classes
    assert "Total params: 11,173,962" in out
    assert "(None, 10)" in out


def test_summary_lenet5(capsys):
    assert cli.main(["summary", "--model", "lenet5", "--input", "1,28,28"]) == 0
    out = capsys.readouterr().out
    assert "Total params: 61,706" in out and "(None, 6, 28, 28)" in out


def test_train_smoke(tmp_path, capsys):
    rc = cli.main(["train", "--model", "lenet5", "--dataset", "mnist-sample", "--epochs", "2",
                   "--batch-size", "64", "--lr", "3e-3", "--limit", "512",
                   "--test-limit", "200", "--backend", "numpy", "--out", str(tmp_path),
                   "--verbose", "2"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "Epoch 2/2" in out and "test accuracy:" in out
    assert (tmp_path / "lenet5.npz").is_file()
    hist = json.loads((tmp_path / "history.json").read_text())
    assert hist["model"] == "lenet5" and hist["dataset"] == "mnist-sample"
    assert hist["history"]["loss"][1] < hist["history"]["loss"][0]
    assert hist["test_accuracy"] > 0.3  # chance is 0.1


def test_train_pads_digits_for_32x32_models(tmp_path, capsys):
    rc = cli.main(["train", "--model", "seed_lenet", "--dataset", "mnist-sample", "--epochs",
                   "1", "--limit", "64", "--test-limit", "32", "--backend", "numpy",
                   "--out", str(tmp_path), "--verbose", "0", "--augment"])
    assert rc == 0
    assert "(1, 32, 32)" in capsys.readouterr().out


@pytest.mark.parametrize("argv, words", [
    (["train", "--model", "alexnet"], ["unknown model 'alexnet'", *MODEL_NAMES]),
    (["summary", "--model", "nope"], ["unknown model 'nope'", "resnet18"]),
    (["train", "--dataset", "imagenet"], ["unknown dataset 'imagenet'", *cli.DATASET_NAMES]),
    (["summary", "--model", "lenet5", "--input", "3,32"], ["--input must be C,H,W"]),
    (["summary", "--model", "lenet5", "--input", "1,30,30"], ["28x28 or 32x32"]),
    (["train", "--epochs", "0"], ["--epochs must be >= 1"]),
])
def test_usage_errors_exit_2(argv, words, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--backend", "tpu"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        cli.main([])
    assert e.value.code == 2


def test_missing_dataset_exits_1(tmp_path, capsys):
    rc = cli.main(["train", "--dataset", "cifar10", "--data-dir", str(tmp_path),
                   "--backend", "numpy", "--out", str(tmp_path / "o")])
    assert rc == 1
    assert "cifar" in capsys.readouterr().err.lower()


def test_python_dash_m(tmp_path):
    r = subprocess.run([sys.executable, "-m", "gpucnn", "train", "--model", "bogus"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and "valid models" in r.stderr


def test_set_blas_threads_is_harmless():
    assert isinstance(cli.set_blas_threads(1), bool)
