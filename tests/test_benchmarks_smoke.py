"""Smoke test of the benchmark suite: tiny sizes, one repeat, valid JSON and markdown.

Benchmarks are never timed here; this only proves ``python -m benchmarks.run`` runs end to end.
The PyTorch columns are skipped when torch is not importable.
"""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from benchmarks import report
from benchmarks.run import main

HAS_TORCH = importlib.util.find_spec("torch") is not None


@pytest.fixture(scope="module")
def quick_doc(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench") / "cpu.json"
    argv = ["--device", "cpu", "--quick", "--repeats", "1", "--no-readme", "--silent",
            "--out", str(out)]
    if not HAS_TORCH:
        argv.append("--no-torch")
    main(argv)
    return json.loads(out.read_text()), str(out)


def test_json_has_environment_and_peak(quick_doc: tuple[dict, str]) -> None:
    doc, _ = quick_doc
    env = doc["env"]
    for key in ("date", "device", "cpu_model", "python", "numpy", "blas", "blas_threads",
                "torch", "git_commit", "device_name"):
        assert key in env, key
    assert env["device"] == "cpu"
    assert doc["peak"]["peak_flops"] > 0
    assert doc["timing"]["quick"] is True


def test_every_case_measured_or_skipped_never_errored(quick_doc: tuple[dict, str]) -> None:
    doc, _ = quick_doc
    groups = {r["group"] for r in doc["results"]}
    assert {"conv", "pool", "gemm", "xent"} <= groups
    if HAS_TORCH:
        assert {"optim", "train"} <= groups
    measured = 0
    for r in doc["results"]:
        sides = ["gpucnn"] + (["torch"] if HAS_TORCH else [])
        for side in sides:
            res = r[side]
            assert "error" not in res, f"{r['name']} ({side}): {res.get('error')}"
            if "median_s" in res:
                assert res["median_s"] > 0 and math.isfinite(res["median_s"])
                assert res["repeats"] == 1
                measured += 1
            else:
                assert "skipped" in res, r["name"]
        if HAS_TORCH and "median_s" in r["gpucnn"] and "median_s" in r["torch"]:
            assert r["ratio"] == pytest.approx(r["gpucnn"]["median_s"] / r["torch"]["median_s"])
    assert measured >= 10
    conv = [r for r in doc["results"] if r["name"].startswith("conv2d_fwd[")]
    assert conv and all(r["flops"] > 0 for r in conv)


def test_targets_and_markdown(quick_doc: tuple[dict, str], tmp_path) -> None:
    doc, path = quick_doc
    assert len(doc["targets"]) == 3
    assert all(t["status"] in ("PASS", "FAIL", "N/A") for t in doc["targets"])
    md = report.render_doc(doc)
    assert md.count("\n| ") >= len(doc["results"])
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\nintro\n")
    results_dir = tmp_path / "results"
    results_dir.mkdir()
    (results_dir / "cpu.json").write_text(json.dumps(doc))
    report.update_readme(str(readme), str(results_dir))
    report.update_readme(str(readme), str(results_dir))  # idempotent: one block, not two
    text = readme.read_text()
    assert text.startswith("# Benchmarks\n\nintro\n")
    assert text.count(report.START) == 1 and text.count(report.END) == 1
    assert "conv2d_fwd[lenet5.conv2]" in text
