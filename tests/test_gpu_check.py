"""gpucnn.testing.gpu_check without a GPU: the no-GPU run, each stage's parser on canned (and
real pytest) output, records written after each stage, timeouts recorded as ``timeout``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gpucnn import backend as B
from gpucnn.testing import gpu_check as gc

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _real_device(monkeypatch):
    monkeypatch.delenv("GPUCNN_SIMULATE_CUDA", raising=False)


@pytest.fixture
def gpu_present(monkeypatch):
    """Pretend the cuda backend is usable so the GPU stages run (their commands are fakes)."""
    monkeypatch.setattr(gc, "_cuda_status", lambda: (True, "available"))


def _load(out: Path) -> dict:
    rec = json.loads((out / "gpu_check.json").read_text())
    assert (out / "gpu_check.md").read_text().startswith("# gpu-check: ")
    return rec


def _stage(rec: dict, name: str) -> dict:
    return next(s for s in rec["stages"] if s["name"] == name)


# ------------------------------------------------------------------------------ no GPU
def test_no_gpu_run_records_env_skips_gpu_stages_exits_2(tmp_path, monkeypatch):
    if B.cuda_available():  # on a GPU machine, pretend there is none
        monkeypatch.setattr(gc, "_cuda_status", lambda: (False, "unavailable (test)"))
        reason = "test"
    else:
        reason = B.cuda_unavailable_reason()
    code = gc.main(["--out", str(tmp_path / "res")])
    assert code == 2
    rec = _load(tmp_path / "res")
    assert [s["name"] for s in rec["stages"]] == list(gc.STAGES)
    env_stage = _stage(rec, "env")
    assert env_stage["status"] == "passed"
    assert env_stage["summary"] == f"cuda: unavailable ({reason})"
    for name in ("tests", "main", "bench"):
        assert _stage(rec, name)["status"] == "skipped"
        assert _stage(rec, name)["summary"] == "skipped: no GPU"
    env = rec["env"]
    assert env["cuda"] == f"unavailable ({reason})" and env["simulated"] is False
    for key in ("gpu", "compute_capability", "memory_gib", "driver_version", "cuda_runtime",
                "nvrtc", "cupy", "numpy", "torch", "torch_cuda", "python", "gpucnn",
                "git_commit", "hostname", "utc"):
        assert key in env, key
    assert rec["exit_code"] == 2 and rec["finished_utc"] and rec["device"] == "no GPU"
    md = (tmp_path / "res" / "gpu_check.md").read_text()
    assert "| stage | status | seconds | summary |" in md
    assert "| tests | **skipped** |" in md and "## Environment" in md


def test_unknown_stage_is_rejected(tmp_path):
    with pytest.raises(SystemExit):
        gc.main(["--out", str(tmp_path), "--stages", "env,nope"])


# ------------------------------------------------------------------------------ parsers
JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites name="pytest tests"><testsuite name="pytest" errors="1" failures="1" skipped="1"
 tests="5" time="0.5">
<testcase classname="tests.test_conv" name="test_ok[cuda]" time="0.01" />
<testcase classname="tests.test_conv" name="test_ok2[cuda]" time="0.01" />
<testcase classname="tests.test_conv" name="test_bad[cuda]" time="0.02">
<failure message="AssertionError: max abs diff 0.3 &gt; 1e-5">def test_bad(): ...
E   AssertionError</failure></testcase>
<testcase classname="tests.test_pool" name="test_skip[cuda]" time="0.0">
<skipped type="pytest.skip" message="needs a GPU">skip</skipped></testcase>
<testcase classname="tests.test_pool" name="test_err[cuda]" time="0.0">
<error message="failed on setup with &quot;CUDARuntimeError: out of memory&quot;">trace
</error></testcase>
</testsuite></testsuites>
"""


def test_parse_junit_counts_and_failures(tmp_path):
    p = tmp_path / "j.xml"
    p.write_text(JUNIT)
    r = gc.parse_junit(p)
    assert (r["tests"], r["passed"], r["failed"], r["skipped"], r["errors"]) == (5, 2, 1, 1, 1)
    assert r["failures"] == [
        {"name": "tests.test_conv::test_bad[cuda]", "kind": "failure",
         "message": "AssertionError: max abs diff 0.3 > 1e-5"},
        {"name": "tests.test_pool::test_err[cuda]", "kind": "error",
         "message": 'failed on setup with "CUDARuntimeError: out of memory"'},
    ]


def test_parse_junit_of_a_real_pytest_run(tmp_path):
    (tmp_path / "test_tiny.py").write_text(textwrap.dedent("""
        import pytest
        def test_pass(): assert True
        def test_fail(): assert 1 == 2, "one is not two"
        @pytest.mark.skip(reason="nope")
        def test_skip(): pass
    """))
    junit = tmp_path / "junit.xml"
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          f"--junitxml={junit}", "--rootdir", str(tmp_path), "-c", os.devnull,
                          str(tmp_path / "test_tiny.py")], capture_output=True, text=True,
                         cwd=tmp_path, timeout=60)
    r = gc.parse_junit(junit)
    assert (r["tests"], r["passed"], r["failed"], r["skipped"], r["errors"]) == (3, 1, 1, 1, 0)
    assert len(r["failures"]) == 1 and r["failures"][0]["name"].endswith("test_fail")
    assert "one is not two" in r["failures"][0]["message"]
    text = gc.parse_pytest_output(res.stdout)  # the terminal summary agrees with the xml
    assert (text["passed"], text["failed"], text["skipped"]) == (1, 1, 1)
    assert text["failures"][0]["name"].endswith("test_tiny.py::test_fail")


def test_parse_pytest_output_cut_short_counts_progress_characters():
    out = "..F.s.E\n....                                              [ 40%]\n..F"
    r = gc.parse_pytest_output(out)
    assert (r["passed"], r["failed"], r["skipped"], r["errors"]) == (10, 2, 1, 1)
    assert r["source"].startswith("progress")


# The lines examples/train_mnist.py prints, as its f-strings produce them.
TRAIN_OUT = """\
backend: cuda | train 4000 / held-out test 1000 | epochs 25, batch 64, peak lr 0.002 | \
augmentation: Compose(...)
Epoch 1/25 - loss 1.2 - accuracy 0.61 - val_loss 0.4 - val_accuracy 0.88
saved: /tmp/x/lenet5.npz, /tmp/x/history.json
training time 41.3 s on cuda
held-out test accuracy: 0.9810 (981/1000)
"""


def test_parse_train_output_matches_train_mnist():
    src = (ROOT / "examples" / "train_mnist.py").read_text()
    assert 'f"held-out test accuracy: {acc:.4f} ({int(round(acc * len(y_te)))}/' in src
    assert 'f"training time {seconds:.1f} s on {gpucnn.backend.current()}"' in src
    assert 'f"backend: {gpucnn.backend.current()} | train {len(x_tr)}' in src
    r = gc.parse_train_output(TRAIN_OUT)
    assert r == {"accuracy": 0.981, "correct": 981, "total": 1000, "train_seconds": 41.3,
                 "backend": "cuda", "epochs": 25}
    assert gc.parse_train_output("Traceback ...\nRuntimeError: boom")["accuracy"] is None


def _bench_doc() -> dict:
    return {"env": {"device": "cuda"}, "wall_s": 80.0, "targets": [
        {"target": "GPU: LeNet-5 step", "status": "PASS", "worst": 0.8, "limit": 1.0, "op": "<="},
        {"target": "GPU: ResNet-20 step", "status": "FAIL", "worst": 2.1, "limit": 1.7,
         "op": "<="},
        {"target": "GPU: loader", "status": "N/A", "detail": "no measurement"}],
        "results": [{"name": "conv2d_fwd[a]", "group": "conv", "gpucnn": {"median_s": 1e-3},
                     "torch": {"median_s": 1e-3}},
                    {"name": "train_step[b]", "group": "train",
                     "gpucnn": {"error": "CUDARuntimeError: boom"}, "torch": {}}]}


def test_parse_bench_from_json_and_from_output():
    from benchmarks import report

    doc = _bench_doc()
    r = gc.parse_bench(doc, "")
    assert [t["status"] for t in r["targets"]] == ["PASS", "FAIL", "N/A"]
    assert r["cases"] == 2
    assert r["case_errors"] == [{"case": "train_step[b]", "side": "gpucnn",
                                 "error": "CUDARuntimeError: boom"}]
    # no JSON (cut short or crashed): the printed Targets block and progress lines
    out = "[  1/40] conv2d_fwd[a] ...\n[  7/40] pool ...\n" + report.targets_text(doc) + "\n"
    r2 = gc.parse_bench(None, out)
    assert [(t["status"], t["target"]) for t in r2["targets"]] == [
        ("PASS", "GPU: LeNet-5 step"), ("FAIL", "GPU: ResNet-20 step"), ("N/A", "GPU: loader")]
    assert r2["targets"][1]["worst"] == "2.1 <= 1.7"
    assert (r2["cases"], r2["cases_planned"]) == (7, 40)


# ------------------------------------------------------------------------------ subprocesses
def test_run_command_timeout_keeps_output_and_kills(tmp_path):
    t0 = time.perf_counter()
    res = gc.run_command([sys.executable, "-c", "import time; print('started', flush=True); "
                          "time.sleep(60)"], timeout=1.0)
    assert res.timed_out and res.returncode is None
    assert "started" in res.output
    assert time.perf_counter() - t0 < 20


def test_child_env_prefixes_pythonpath(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    env = gc.child_env()
    assert env["PYTHONPATH"] == f"{gc.ROOT}{os.pathsep}/elsewhere"
    assert env["GPUCNN_BACKEND"] == "cuda"
    assert gc.ROOT == ROOT


FAKE_PYTHON = '''#!{exe}
"""Stands in for the interpreter: answers the three stage commands with canned results."""
import json, os, sys, time
args = sys.argv[1:]
with open({log!r}, "a") as f:
    f.write(json.dumps({{"args": args, "PYTHONPATH": os.environ.get("PYTHONPATH"),
                        "GPUCNN_BACKEND": os.environ.get("GPUCNN_BACKEND")}}) + "\\n")
if os.environ.get("FAKE_SLEEP"):
    print("working", flush=True)
    time.sleep(60)
if args[:2] == ["-m", "pytest"]:
    junit = [a.split("=", 1)[1] for a in args if a.startswith("--junitxml=")][0]
    open(junit, "w").write({junit!r})
    print("FAILED tests/test_conv.py::test_bad[cuda] - AssertionError")
    print("1 failed, 2 passed, 1 skipped, 1 error in 0.50s")
    sys.exit(1)
if args[0].endswith("train_mnist.py"):
    print({train!r}, end="")
    sys.exit(0)
if args[:2] == ["-m", "benchmarks.run"]:
    out = args[args.index("--out") + 1]
    json.dump({doc!r}, open(out, "w"))
    print("Targets:")
    sys.exit(0)
sys.exit(3)
'''


def _fake_python(tmp_path: Path, doc: dict) -> tuple[Path, Path]:
    log = tmp_path / "calls.jsonl"
    exe = tmp_path / "fakepython"
    exe.write_text(FAKE_PYTHON.format(exe=sys.executable, log=str(log), junit=JUNIT,
                                      train=TRAIN_OUT, doc=doc))
    exe.chmod(0o755)
    return exe, log


def test_stages_through_subprocesses(tmp_path, gpu_present):
    doc = _bench_doc()
    doc["targets"] = doc["targets"][:1]
    doc["results"] = doc["results"][:1]
    exe, log = _fake_python(tmp_path, doc)
    out = tmp_path / "res"
    code = gc.main(["--out", str(out), "--stages", "tests,main,bench", "--python", str(exe)])
    rec = _load(out)
    tests, main_, bench = (_stage(rec, n) for n in ("tests", "main", "bench"))
    assert tests["status"] == "failed" and tests["counts_source"] == "junit xml"
    assert tests["counts"] == {"tests": 5, "passed": 2, "failed": 1, "skipped": 1, "errors": 1}
    assert tests["failures"][0]["name"] == "tests.test_conv::test_bad[cuda]"
    assert main_["status"] == "passed" and main_["accuracy"] == 0.981
    assert main_["mode"] == "full" and main_["accuracy_target"] == gc.MAIN_TARGET
    assert bench["status"] == "passed" and bench["json"] == str(out / "cuda.json")
    assert [t["status"] for t in bench["targets"]] == ["PASS"]
    assert code == 1  # the tests stage failed
    md = (out / "gpu_check.md").read_text()
    assert "tests.test_conv::test_bad[cuda]" in md and "## Failures" in md
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(calls) == 3
    for c in calls:
        assert c["PYTHONPATH"].split(os.pathsep)[0] == str(ROOT)
        assert c["GPUCNN_BACKEND"] == "cuda"
    assert calls[0]["args"][:5] == ["-m", "pytest", "-m", "gpu", "-q"]
    assert "--backend" in calls[1]["args"] and "cuda" in calls[1]["args"]
    assert calls[2]["args"][:4] == ["-m", "benchmarks.run", "--device", "cuda"]
    assert "--no-readme" in calls[2]["args"]


def test_subprocess_timeout_is_recorded_as_timeout(tmp_path, gpu_present, monkeypatch):
    exe, _ = _fake_python(tmp_path, {})
    monkeypatch.setenv("FAKE_SLEEP", "1")
    out = tmp_path / "res"
    t0 = time.perf_counter()
    code = gc.main(["--out", str(out), "--stages", "main", "--python", str(exe),
                    "--main-timeout", "1"])
    assert time.perf_counter() - t0 < 20
    st = _stage(_load(out), "main")
    assert st["status"] == "timeout" and st["returncode"] is None
    assert "working" in st["output_tail"]
    assert code == 1


def test_records_written_after_each_stage(tmp_path, gpu_present, monkeypatch):
    out = tmp_path / "res"
    seen: dict = {}

    def tests_ok(ctx):
        return {"status": "passed", "summary": "3 passed"}

    def main_crashes(ctx):
        seen["during_main"] = json.loads((out / "gpu_check.json").read_text())
        raise RuntimeError("the main job exploded")

    def bench_ok(ctx):
        seen["during_bench"] = json.loads((out / "gpu_check.json").read_text())
        return {"status": "passed", "summary": "fine"}

    monkeypatch.setitem(gc._RUNNERS, "tests", tests_ok)
    monkeypatch.setitem(gc._RUNNERS, "main", main_crashes)
    monkeypatch.setitem(gc._RUNNERS, "bench", bench_ok)
    code = gc.main(["--out", str(out), "--stages", "tests,main,bench"])
    during = seen["during_main"]  # on disk while main ran: tests done, main running
    assert _stage(during, "tests")["status"] == "passed"
    assert _stage(during, "main")["status"] == "running"
    assert _stage(during, "bench")["status"] == "pending"
    assert during["finished_utc"] is None
    assert _stage(seen["during_bench"], "main")["status"] == "error"
    rec = _load(out)
    assert _stage(rec, "main")["status"] == "error"
    assert "the main job exploded" in _stage(rec, "main")["summary"]
    assert _stage(rec, "bench")["status"] == "passed"
    assert code == 1 and rec["exit_code"] == 1


def test_budget_caps_timeouts_and_skips_late_stages(tmp_path, gpu_present, monkeypatch):
    timeouts = []

    def fake_run(self, cmd, timeout):
        timeouts.append(timeout)
        time.sleep(0.2)
        return gc.CommandResult(cmd, None, "", timeout, True)

    monkeypatch.setattr(gc._Ctx, "run", fake_run)
    monkeypatch.setattr(gc, "MIN_STAGE_S", 0.5)
    out = tmp_path / "res"
    code = gc.main(["--out", str(out), "--stages", "tests,main,bench", "--budget", "0.6"])
    rec = _load(out)
    assert _stage(rec, "tests")["status"] == "timeout"
    assert timeouts[0] <= 1.0  # capped by the budget, not the 150 s default
    assert _stage(rec, "bench")["status"] == "skipped"
    assert "budget" in _stage(rec, "bench")["summary"]
    assert code == 1


def test_simulated_device_runs_the_stages(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUCNN_SIMULATE_CUDA", "1")
    monkeypatch.setattr(gc, "_cuda_status", lambda: (False, "unavailable (no simcuda here)"))
    exe, _ = _fake_python(tmp_path, {})
    out = tmp_path / "res"
    code = gc.main(["--out", str(out), "--stages", "main", "--python", str(exe)])
    rec = _load(out)
    assert rec["simulated"] is True and rec["cuda"].startswith("simulated (")
    assert "simulated" in rec["device"]
    assert _stage(rec, "main")["status"] == "passed"
    assert code == 0
