"""The ``gpucnn`` command line: info, models, summary, a train smoke run, usage errors (exit 2)."""

from __future__ import annotations

import json
import re
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


def test_models_describes_each_model_in_one_line(capsys):
    from gpucnn.models import get_model

    assert set(cli.MODEL_DESCRIPTIONS) == set(MODEL_NAMES)
    assert cli.main(["models"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split()[:3] == ["model", "input", "parameters"]
    assert [r.split()[0] for r in rows] == list(MODEL_NAMES)
    for name, row in zip(MODEL_NAMES, rows):
        model = get_model(name)
        _, shape, params, classes, *what = row.split()
        assert shape == "x".join(str(d) for d in model.input_shape)
        assert params == f"{model.count_params():,}"
        assert int(classes) == model.output_shape(model.input_shape)[-1]
        assert " ".join(what) == cli.MODEL_DESCRIPTIONS[name]
    lenet = rows[0].split()
    assert lenet[1:4] == ["1x28x28", "61,706", "10"] and "LeNet-5" in rows[0]


def test_summary_resnet18(capsys):
    assert cli.main(["summary", "--model", "resnet18", "--input", "3,32,32",
                     "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    # 32x32 input: the small-input stem (3x3 conv, no max pool) and 10 classes
    assert "Trainable params: 11,173,962" in out
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
    (["train", "--limit", "0"], ["--limit must be >= 1, got 0"]),
    (["train", "--seed", "-1"], ["--seed must be >= 0"]),
    (["train", "--threads", "-2"], ["--threads must be >= 0"]),
    (["train", "--weight-decay", "-0.1"], ["--weight-decay must be >= 0"]),
    (["train", "--lr", "0"], ["--lr must be > 0"]),
    (["summary", "--model", "lenet5", "--num-classes", "0"], ["--num-classes must be >= 1"]),
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


def test_missing_dataset_exits_1_naming_the_flags(tmp_path, capsys):
    rc = cli.main(["train", "--dataset", "cifar10", "--data-dir", str(tmp_path),
                   "--backend", "numpy", "--out", str(tmp_path / "o")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "cifar" in err.lower()
    # the library says download=True / root=...; the CLI user reads the flags
    assert "--download" in err and "--data-dir DIR" in err
    assert "download=True" not in err and "root=" not in err
    assert not (tmp_path / "o").exists()  # nothing created for a run that could not start


# ----------------------------------------------------------------------------- help, backends


def _option_blocks(help_text: str) -> dict[str, str]:
    """``--flag`` -> its help text (whitespace collapsed) from an argparse help screen."""
    body = help_text.split("options:", 1)[1]
    out = {}
    for block in re.split(r"\n  (?=-)", body)[1:]:
        head = re.split(r"\s{2,}|\n", block.strip(), maxsplit=1)[0]  # "-h, --help", "--lr LR"
        flag = max(re.findall(r"(?<![\w-])--?[\w-]+", head), key=len)
        out[flag] = " ".join(block.split())
    return out


@pytest.mark.parametrize("command", ["train", "summary", "info"])
def test_help_shows_help_and_default_of_every_option(command, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--help"])
    assert e.value.code == 0
    blocks = _option_blocks(capsys.readouterr().out)
    flags = set(blocks) - {"--help"}
    parser_flags = {f for f in cli._flags(cli.build_parser(), command).values()}
    assert flags == parser_flags
    for flag in flags:
        text = blocks[flag]
        assert "default" in text, text
        assert len(text.split("default", 1)[0].split()) > 2, f"{flag} has no help text: {text}"
    if command == "train":
        assert "(default: 10)" in blocks["--epochs"] and "(default: 0.001)" in blocks["--lr"]
        assert "(default: off)" in blocks["--download"]


def test_backend_aliases_are_accepted(capsys):
    parser = cli.build_parser()
    assert parser.parse_args(["train", "--backend", "cpu"]).backend == "numpy"
    assert parser.parse_args(["train", "--backend", "GPU"]).backend == "cuda"
    assert parser.parse_args(["info", "--backend", "gpu"]).backend == "cuda"
    assert cli.main(["summary", "--model", "lenet5", "--input", "1,28,28",
                     "--backend", "cpu"]) == 0
    assert gpucnn.backend.current() == "numpy"
    assert "Total params: 61,706" in capsys.readouterr().out


def test_backend_default_honours_the_environment(monkeypatch, capsys):
    monkeypatch.setenv("GPUCNN_BACKEND", "cpu")
    assert cli.build_parser().parse_args(["train"]).backend == "numpy"
    monkeypatch.setenv("GPUCNN_BACKEND", "numpy")
    assert cli.build_parser().parse_args(["summary", "--model", "x"]).backend == "numpy"
    monkeypatch.delenv("GPUCNN_BACKEND")
    assert cli.build_parser().parse_args(["train"]).backend == "auto"
    monkeypatch.setenv("GPUCNN_BACKEND", "tpu")
    with pytest.raises(SystemExit) as e:
        cli.build_parser().parse_args(["train"])
    assert e.value.code == 2
    assert "$GPUCNN_BACKEND" in capsys.readouterr().err
    # a flag overrides a bad environment value
    assert cli.build_parser().parse_args(["train", "--backend", "numpy"]).backend == "numpy"


# ----------------------------------------------------------------------------- library errors


def test_flag_message():
    flags = cli._flags(cli.build_parser(), "train")
    assert cli.flag_message("pass download=True (needs network)", flags) == (
        "pass --download (needs network)", True)
    assert cli.flag_message("or root=... to use another folder", flags)[0] == \
        "or --data-dir DIR to use another folder"
    assert cli.flag_message("fit: batch_size must be >= 1, got 0", flags)[0] == \
        "fit: --batch-size must be >= 1, got 0"
    assert cli.flag_message("fit: epochs must be a non-negative int", flags)[0] == \
        "fit: --epochs must be a non-negative int"
    assert cli.flag_message("Adam: learning_rate=-1 is negative", flags)[0] == \
        "Adam: --lr -1 is negative"
    # environment variables, ordinary words and unknown names are left alone
    for text in ("set GPUCNN_DATA_DIR", "the epochs ran", "conv: in_channels must match",
                 "model: the model has no weights", "a tensor.batch_size attribute"):
        assert cli.flag_message(text, flags) == (text, False)
    summary_flags = cli._flags(cli.build_parser(), "summary")
    assert cli.flag_message("resnet: num_classes must be >= 1", summary_flags)[0] == \
        "resnet: --num-classes must be >= 1"


def test_library_value_errors_are_reported_under_their_flag(monkeypatch, capsys):
    def bad(*a, **k):
        raise ValueError("fit: batch_size must be an int >= 1, got 100000")

    monkeypatch.setattr(cli, "load_dataset", bad)
    assert cli.main(["train", "--backend", "numpy"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpucnn train: error: ") and "--batch-size" in err
    assert "batch_size" not in err

    def bug(*a, **k):
        raise ValueError("an internal invariant broke")

    monkeypatch.setattr(cli, "load_dataset", bug)
    with pytest.raises(ValueError, match="internal invariant"):  # a bug keeps its traceback
        cli.main(["train", "--backend", "numpy"])


def test_unwritable_out_exits_1_before_training(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    rc = cli.main(["train", "--limit", "64", "--test-limit", "32", "--epochs", "1",
                   "--backend", "numpy", "--out", str(blocker / "run"), "--verbose", "2"])
    assert rc == 1
    captured = capsys.readouterr()
    assert "--out" in captured.err and "cannot create the output folder" in captured.err
    assert "Epoch" not in captured.out  # it stopped before training


def test_python_dash_m(tmp_path):
    r = subprocess.run([sys.executable, "-m", "gpucnn", "train", "--model", "bogus"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and "valid models" in r.stderr


def test_set_blas_threads_is_harmless():
    assert isinstance(cli.set_blas_threads(1), bool)


def test_train_mixed_precision_flag(tmp_path, capsys):
    rc = cli.main(["train", "--model", "lenet5", "--epochs", "1", "--batch-size", "64",
                   "--limit", "256", "--test-limit", "64", "--backend", "numpy",
                   "--mixed-precision", "bfloat16", "--out", str(tmp_path), "--verbose", "0"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| bfloat16" in out and "test accuracy:" in out
    hist = json.loads((tmp_path / "history.json").read_text())
    assert hist["args"]["mixed_precision"] == "bfloat16"


def test_train_cuda_graph_needs_the_cuda_backend(tmp_path, capsys):
    rc = cli.main(["train", "--model", "lenet5", "--epochs", "1", "--limit", "64",
                   "--test-limit", "32", "--backend", "numpy", "--cuda-graph",
                   "--out", str(tmp_path), "--verbose", "0"])
    assert rc == 1
    assert "fit: --cuda-graph needs the cuda backend; the model is on 'numpy'" in \
        capsys.readouterr().err


def test_train_cuda_graph_on_the_simulated_device(tmp_path, capsys):
    from gpucnn.testing import simulated_device

    with simulated_device():
        rc = cli.main(["train", "--model", "lenet5", "--epochs", "1", "--batch-size", "8",
                       "--limit", "48", "--test-limit", "16", "--backend", "cuda",
                       "--cuda-graph", "--out", str(tmp_path), "--verbose", "0"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| CUDA graph" in out and "test accuracy:" in out
