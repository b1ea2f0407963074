"""THE MAIN JOB's claim: examples/train_mnist.py with its FULL DEFAULT settings reaches at least
97% accuracy on the 1,000 held-out digits on the NumPy backend (in about a minute on 2 cores).

Marked ``slow`` but part of the default ``python -m pytest`` run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

import gpucnn

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "train_mnist.py"


@pytest.mark.slow
def test_main_job_reaches_97_percent(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("gpucnn_main_job", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    prev = gpucnn.backend.current()
    try:
        res = mod.main(["--backend", "numpy", "--out", str(tmp_path), "--verbose", "2"])
    finally:
        gpucnn.backend.use(prev)
    out = capsys.readouterr().out
    # the defaults: 25 epochs, the fixed 4,000 / 1,000 split, augmentation on
    assert "train 4000 / held-out test 1000" in out and "epochs 25" in out
    assert "RandomRotation" in out and "RandomCrop" in out
    assert out.count("Epoch ") >= 25
    assert len(res["history"]["loss"]) == 25
    assert res["history"]["loss"][-1] < res["history"]["loss"][0] / 5
    last = out.strip().splitlines()[-1]
    assert last.startswith("held-out test accuracy:")
    assert res["accuracy"] >= 0.97, last
    assert (tmp_path / "lenet5.npz").is_file()
    print(f"main job: held-out accuracy {res['accuracy']:.4f}, training {res['seconds']:.1f} s",
          file=sys.stderr)
