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
from benchmarks.run import LOADER_TARGET, evaluate_targets, main

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
    assert {"conv", "pool", "gemm", "xent", "loader"} <= groups
    if HAS_TORCH:
        assert {"optim", "train"} <= groups
    measured = 0
    for r in doc["results"]:
        if r["group"] == "loader":  # gpucnn only, checked in the loader tests below
            sides = ["gpucnn"] + (["baseline"] if "baseline" in r else [])
        else:
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
        if HAS_TORCH and "median_s" in r["gpucnn"] and "median_s" in r.get("torch", {}):
            assert r["ratio"] == pytest.approx(r["gpucnn"]["median_s"] / r["torch"]["median_s"])
    assert measured >= 10
    conv = [r for r in doc["results"] if r["name"].startswith("conv2d_fwd[")]
    assert conv and all(r["flops"] > 0 for r in conv)


def test_targets_and_markdown(quick_doc: tuple[dict, str], tmp_path) -> None:
    doc, path = quick_doc
    assert len(doc["targets"]) == 4
    assert all(t["status"] in ("PASS", "FAIL", "N/A", "SKIP") for t in doc["targets"])
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


# ---------------------------------------------------------------------------- loader group
@pytest.fixture(scope="module")
def loader_doc(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench_loader") / "loader.json"
    main(["--device", "cpu", "--quick", "--repeats", "1", "--only", "loader", "--no-torch",
          "--no-readme", "--silent", "--out", str(out)])
    return json.loads(out.read_text()), str(out)


def test_loader_group_images_per_second_and_baseline_ratio(loader_doc: tuple[dict, str]) -> None:
    doc, _ = loader_doc
    rows = doc["results"]
    assert doc["groups"] == ["loader"] and {r["group"] for r in rows} == {"loader"}
    epochs = [r for r in rows if r["name"].startswith("loader_epoch[")]
    trains = [r for r in rows if r["name"].startswith("train_epoch[")]
    assert len(epochs) == 4 and len(trains) == 2
    assert {(r["params"]["augment"], r["params"]["prefetch"]) for r in epochs} == {
        ("none", 0), ("none", 2), ("crop+rot+noise", 0), ("crop+rot+noise", 2)}
    for r in rows:
        g = r["gpucnn"]
        assert "error" not in g, f"{r['name']}: {g.get('error')}"
        assert r["images"] == r["params"]["images"] == 256 and r["params"]["batch"] == 128
        assert g["images_per_s"] == pytest.approx(256 / g["median_s"])
    for r in trains:
        b = r["baseline"]
        assert "error" not in b, b.get("error")
        assert b["median_s"] > 0 and r["baseline_label"] == "pre-loaded batches"
        assert r["ratio_vs_baseline"] == pytest.approx(r["gpucnn"]["median_s"] / b["median_s"])
        assert r["ratio_vs_baseline_min"] == pytest.approx(r["gpucnn"]["min_s"] / b["min_s"])
    tg = {t["target"]: t for t in doc["targets"]}[LOADER_TARGET]
    assert tg["status"] == "SKIP" and "informational" in tg["detail"]
    md = report.render_doc(doc)
    assert "DataLoader (`loader`" in md and "train_epoch[lenet5,loader+aug,prefetch=2]" in md


def _cuda_doc(ratio: float | None) -> dict:
    row = {"group": "loader", "name": "train_epoch[lenet5,loader+aug,prefetch=2]"}
    if ratio is not None:
        row["ratio_vs_baseline"] = ratio
    return {"env": {"device": "cuda"}, "results": [row]}


@pytest.mark.parametrize(("ratio", "status"), [(1.04, "PASS"), (1.10, "PASS"), (1.11, "FAIL"),
                                               (None, "N/A")])
def test_loader_target_is_evaluated_on_cuda(ratio: float | None, status: str) -> None:
    tg = {t["target"]: t for t in evaluate_targets(_cuda_doc(ratio))}[LOADER_TARGET]
    assert tg["status"] == status
    if ratio is not None:
        assert tg["limit"] == 1.10 and tg["worst"] == ratio


def test_merge_replaces_only_the_merged_groups(quick_doc: tuple[dict, str],
                                               loader_doc: tuple[dict, str], tmp_path) -> None:
    base, _ = quick_doc
    new, new_path = loader_doc
    dst = tmp_path / "cpu.json"
    dst.write_text(json.dumps(base))
    main(["--device", "cpu", "--merge-from", new_path, "--out", str(dst), "--no-readme",
          "--silent"])
    merged = json.loads(dst.read_text())
    assert merged["env"] == base["env"] and merged["command"] == base["command"]
    others = [r for r in base["results"] if r["group"] != "loader"]
    assert [r for r in merged["results"] if r["group"] != "loader"] == others
    assert [r for r in merged["results"] if r["group"] == "loader"] == new["results"]
    assert merged["results"][-1]["group"] == "loader"  # suite order kept
    (run,) = merged["merged_runs"]
    assert run["groups"] == ["loader"] and run["command"] == new["command"]
    assert len(merged["targets"]) == 4
    assert "measured in a separate run" in report.render_doc(merged)
    # merging twice keeps one set of loader rows and one merged-run record
    main(["--device", "cpu", "--merge-from", new_path, "--out", str(dst), "--no-readme",
          "--silent"])
    again = json.loads(dst.read_text())
    assert again["results"] == merged["results"] and len(again["merged_runs"]) == 1


def test_merge_refuses_another_device(loader_doc: tuple[dict, str], tmp_path) -> None:
    doc, path = loader_doc
    dst = tmp_path / "cuda.json"
    dst.write_text(json.dumps({**doc, "env": {**doc["env"], "device": "cuda"}}))
    with pytest.raises(SystemExit, match="cannot be merged"):
        main(["--device", "cpu", "--merge-from", path, "--out", str(dst), "--no-readme",
              "--silent"])
    missing = tmp_path / "absent.json"
    with pytest.raises(SystemExit, match="no result JSON"):
        main(["--device", "cpu", "--merge-from", path, "--out", str(missing), "--silent"])
