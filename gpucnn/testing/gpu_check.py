"""One command for the day a GPU is lent: environment, GPU tests, the main job, benchmarks.

    PYTHONPATH=. python -m gpucnn.testing.gpu_check --out benchmarks/results/

Stages, in this order (``--stages`` picks a subset):

1. ``env``: GPU name, compute capability, memory, driver / CUDA runtime / NVRTC versions,
   CuPy, NumPy, PyTorch, Python, gpucnn, git commit, hostname, UTC time. A value that cannot
   be read is recorded as the error string.
2. ``tests``: ``python -m pytest -m gpu`` with ``GPUCNN_BACKEND=cuda``; counts, failures
   (name and short message, from the junit XML) and the tail of the output.
3. ``main``: ``examples/train_mnist.py --backend cuda`` (the full default job, or ``--smoke``
   with ``--main-smoke``): wall time, held-out accuracy, return code, output tail.
4. ``bench``: ``python -m benchmarks.run --device cuda --out DIR/cuda.json --no-readme``:
   the JSON path, the target PASS/FAIL lines and case errors.

``DIR/gpu_check.json`` and ``DIR/gpu_check.md`` are rewritten before and after each stage, so
a run cut short still reports what it did (the stage under way reads ``running``). Every
subprocess has its own timeout, capped by the overall ``--budget``, and gets ``PYTHONPATH``
prefixed with the repository root. Exit code: 0 when every stage run passed, 1 otherwise, 2
when no usable CUDA device exists (the GPU stages are then ``skipped: no GPU``), unless
``GPUCNN_SIMULATE_CUDA=1`` selects the simulated device, when the stages run anyway.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "STAGES",
    "CommandResult",
    "run_command",
    "collect_env",
    "parse_junit",
    "parse_pytest_output",
    "parse_train_output",
    "parse_bench",
    "render_markdown",
    "build_parser",
    "main",
]

STAGES = ("env", "tests", "main", "bench")
ROOT = Path(__file__).resolve().parents[2]  # the repository root (gpucnn/testing/ -> ..)
TAIL_CHARS = 6000
MAIN_TARGET = 0.97  # the main job's claim: >= 97% held-out accuracy with its full defaults
MIN_STAGE_S = 5.0  # a stage with less budget left than this is not started


# ------------------------------------------------------------------------------ subprocesses
@dataclass
class CommandResult:
    """What one subprocess did: return code (None on timeout), output, wall time."""

    cmd: list[str]
    returncode: int | None
    output: str
    seconds: float
    timed_out: bool


class _Interrupted(Exception):
    """SIGTERM reached the check: records are written, then it exits."""


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        try:
            proc.kill()
        except OSError:
            pass


def run_command(cmd: list[str], timeout: float, env: dict[str, str] | None = None,
                cwd: str | Path | None = None) -> CommandResult:
    """Run ``cmd`` (stdout and stderr together) for at most ``timeout`` seconds.

    The child gets its own process group, killed as a whole on timeout or interruption; the
    output read up to then is kept.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=env, cwd=cwd,
                            start_new_session=True)
    timed_out = False
    try:
        out, _ = proc.communicate(timeout=max(timeout, 0.1))
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
        out, _ = proc.communicate()
    except BaseException:
        _kill_group(proc)
        proc.communicate()
        raise
    text = out.decode("utf-8", "replace") if out else ""
    return CommandResult(cmd=[str(c) for c in cmd], returncode=None if timed_out
                         else proc.returncode, output=text,
                         seconds=time.perf_counter() - t0, timed_out=timed_out)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every stage's subprocess: ours, ``GPUCNN_BACKEND=cuda``, unbuffered
    output, and ``PYTHONPATH`` prefixed with the repository root."""
    env = dict(os.environ)
    env["GPUCNN_BACKEND"] = "cuda"
    env["PYTHONUNBUFFERED"] = "1"
    old = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + old if old else "")
    env.update(extra or {})
    return env


def _tail(text: str, n: int = TAIL_CHARS) -> str:
    return text if len(text) <= n else "..." + text[-n:]


# ------------------------------------------------------------------------------ environment
def _safe(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:
        return f"error: {type(exc).__name__}: {exc}"


def _cuda_version(v: int) -> str:
    if not v:
        return "none (0: no CUDA driver loaded)"
    return f"{v // 1000}.{(v % 1000) // 10} ({v})"


def _cuda_status() -> tuple[bool, str]:
    """(usable, text): whether gpucnn's cuda backend can run here, and the reason if not."""
    from gpucnn import backend as B

    try:
        reason = B.cuda_unavailable_reason()
    except Exception as exc:
        reason = f"the probe raised {type(exc).__name__}: {exc}"
    return reason is None, "available" if reason is None else f"unavailable ({reason})"


def _cupy() -> Any:
    from gpucnn.backend.device import cupy_module

    return cupy_module()


def _device_props() -> dict[str, Any]:
    cp = _cupy()
    props = cp.cuda.runtime.getDeviceProperties(0)
    name = props.get("name", b"")
    return {
        "name": name.decode() if isinstance(name, bytes) else str(name),
        "compute_capability": f"{props.get('major')}.{props.get('minor')}",
        "memory_gib": round(int(props.get("totalGlobalMem", 0)) / 2**30, 2),
    }


def _git_commit() -> str:
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True, timeout=10)
    if head.returncode != 0:
        raise RuntimeError(head.stderr.strip() or f"git exited {head.returncode}")
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain",
                            "--untracked-files=no"], capture_output=True, text=True, timeout=10)
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _nvidia_smi() -> str:
    r = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,"
                        "power.limit,clocks.max.sm", "--format=csv,noheader"],
                       capture_output=True, text=True, timeout=20)
    return r.stdout.strip() or r.stderr.strip() or f"nvidia-smi exited {r.returncode}"


def _torch_info() -> dict[str, Any]:
    import torch

    return {"torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "torch_cuda_available": bool(torch.cuda.is_available()),
            "cudnn": _safe(lambda: torch.backends.cudnn.version())}


def collect_env() -> dict[str, Any]:
    """The environment record; every value that cannot be read is its error string."""
    import numpy as np

    import gpucnn
    from gpucnn.backend.device import simulated

    usable, cuda = _cuda_status()
    sim = simulated()
    env: dict[str, Any] = {
        "cuda": f"simulated ({cuda})" if sim else cuda,
        "cuda_usable": usable,
        "simulated": sim,
        "utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "hostname": _safe(socket.gethostname),
        "python": f"{platform.python_version()} ({sys.executable})",
        "gpucnn": getattr(gpucnn, "__version__", "unknown"),
        "git_commit": _safe(_git_commit),
        "numpy": np.__version__,
        "cupy": _safe(lambda: _cupy().__version__),
        "device_count": _safe(lambda: int(_cupy().cuda.runtime.getDeviceCount())),
    }
    props = _safe(_device_props)
    if isinstance(props, dict):
        env["gpu"], env["compute_capability"] = props["name"], props["compute_capability"]
        env["memory_gib"] = props["memory_gib"]
    else:
        env["gpu"] = env["compute_capability"] = env["memory_gib"] = props
    env["driver_version"] = _safe(lambda: _cuda_version(_cupy().cuda.runtime.driverGetVersion()))
    env["cuda_runtime"] = _safe(lambda: _cuda_version(_cupy().cuda.runtime.runtimeGetVersion()))
    env["nvrtc"] = _safe(lambda: ".".join(str(v) for v in _cupy().cuda.nvrtc.getVersion()))
    torch_info = _safe(_torch_info)
    if isinstance(torch_info, dict):
        env.update(torch_info)
    else:
        env["torch"] = env["torch_cuda"] = torch_info
    env["nvidia_smi"] = _safe(_nvidia_smi)
    return env


def _device_name(env: dict[str, Any]) -> str:
    gpu = env.get("gpu")
    if isinstance(gpu, str) and gpu and not gpu.startswith("error:"):
        return gpu + (" (simulated)" if env.get("simulated") else "")
    return "simulated device" if env.get("simulated") else "no GPU"


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


# ------------------------------------------------------------------------------ parsers
def parse_junit(path: str | Path) -> dict[str, Any]:
    """Counts and failures from a pytest junit XML: ``{"tests", "passed", "failed",
    "skipped", "errors", "failures": [{"name", "kind", "message"}]}``."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {"tests": 0, "failed": 0, "skipped": 0, "errors": 0}
    failures: list[dict[str, str]] = []
    for suite in suites:
        for case in suite.iter("testcase"):
            counts["tests"] += 1
            for child in case:
                kind = {"failure": "failed", "error": "errors", "skipped": "skipped"}.get(
                    child.tag)
                if kind is None:
                    continue
                counts[kind] += 1
                if kind != "skipped":
                    cls, name = case.get("classname", ""), case.get("name", "")
                    text_lines = (child.text or "").strip().splitlines()
                    msg = child.get("message") or (text_lines[-1] if text_lines else "")
                    failures.append({"name": f"{cls}::{name}" if cls else name,
                                     "kind": child.tag, "message": msg[:400]})
                break
    counts["passed"] = counts["tests"] - counts["failed"] - counts["skipped"] - counts["errors"]
    return {**counts, "failures": failures}


_SUMMARY_WORD = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)")


def parse_pytest_output(text: str) -> dict[str, Any]:
    """Counts from pytest's terminal output: the final summary line when there is one, else
    the progress characters of ``-q`` (a run cut short); ``FAILED``/``ERROR`` short-summary
    lines become failures."""
    counts: dict[str, Any] = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    summary = None
    for line in text.splitlines():
        if re.search(r"\d+ (passed|failed|skipped|errors?|deselected).* in [\d.]+s", line):
            summary = line
    if summary is not None:
        for n, word in _SUMMARY_WORD.findall(summary):
            key = {"error": "errors"}.get(word, word)
            if key in counts:
                counts[key] = int(n)
        counts["source"] = "summary line"
    else:
        prog = re.compile(r"^([.FEsxX]+)\s*(\[\s*\d+%\])?\s*$")
        chars = "".join(m.group(1) for m in map(prog.match, text.splitlines()) if m)
        counts.update(passed=chars.count(".") + chars.count("X"), failed=chars.count("F"),
                      skipped=chars.count("s") + chars.count("x"), errors=chars.count("E"),
                      source="progress characters (no summary line)")
    failures = []
    for line in text.splitlines():
        m = re.match(r"^(FAILED|ERROR) (\S+)(?: - (.*))?$", line)
        if m:
            failures.append({"name": m.group(2), "kind": "failure" if m.group(1) == "FAILED"
                             else "error", "message": (m.group(3) or "")[:400]})
    counts["tests"] = counts["passed"] + counts["failed"] + counts["skipped"] + counts["errors"]
    counts["failures"] = failures
    return counts


_ACC = re.compile(r"held-out test accuracy:\s*([0-9.]+)\s*\((\d+)/(\d+)\)")


def parse_train_output(text: str) -> dict[str, Any]:
    """What examples/train_mnist.py printed: ``accuracy`` (last ``held-out test accuracy:``
    line), ``correct``/``total``, ``train_seconds``, ``backend``, ``epochs``; None if absent."""
    out: dict[str, Any] = {"accuracy": None, "correct": None, "total": None,
                           "train_seconds": None, "backend": None, "epochs": None}
    accs = _ACC.findall(text)
    if accs:
        acc, correct, total = accs[-1]
        out.update(accuracy=float(acc), correct=int(correct), total=int(total))
    m = re.findall(r"training time ([0-9.]+) s on (\w+)", text)
    if m:
        out["train_seconds"] = float(m[-1][0])
    m2 = re.search(r"^backend: (\w+) \|.*\| epochs (\d+)", text, re.M)
    if m2:
        out["backend"], out["epochs"] = m2.group(1), int(m2.group(2))
    elif m:
        out["backend"] = m[-1][1]
    return out


def parse_bench(doc: dict[str, Any] | None, output: str) -> dict[str, Any]:
    """Targets and case errors of a benchmark run: from its JSON document when there is one,
    else the ``Targets:`` lines and ``[i/n]`` progress lines of its output."""
    out: dict[str, Any] = {"targets": [], "cases": None, "case_errors": []}
    if doc is not None:
        for t in doc.get("targets", []):
            out["targets"].append({"target": t.get("target"), "status": t.get("status"),
                                   "worst": t.get("worst"), "limit": t.get("limit"),
                                   "op": t.get("op")})
        rows = doc.get("results", [])
        out["cases"] = len(rows)
        for r in rows:
            for side in ("gpucnn", "torch", "baseline"):
                err = (r.get(side) or {}).get("error")
                if err:
                    out["case_errors"].append({"case": r.get("name"), "side": side,
                                               "error": str(err)[:400]})
        out["wall_s"] = doc.get("wall_s")
        return out
    lines = output.splitlines()
    if "Targets:" in lines:
        for line in lines[lines.index("Targets:") + 1:]:
            m = re.match(r"^\s+(PASS|FAIL|N/A|SKIP)\s+(.*?)(?: \(worst (.*)\))?$", line)
            if not m:
                break
            out["targets"].append({"target": m.group(2), "status": m.group(1),
                                   "worst": m.group(3)})
    prog = re.findall(r"^\[\s*(\d+)/(\d+)\]", output, re.M)
    if prog:
        out["cases"] = int(prog[-1][0])
        out["cases_planned"] = int(prog[-1][1])
    return out


# ------------------------------------------------------------------------------ stages
def _stage_env(ctx: _Ctx) -> dict[str, Any]:
    env = collect_env()
    ctx.record["env"] = env
    ctx.record["device"] = _device_name(env)
    ctx.record["device_slug"] = _slug(ctx.record["device"])
    if env["cuda_usable"] and isinstance(env.get("gpu"), str):
        sim = "simulated: " if env["simulated"] else ""
        summary = (f"{sim}{env['gpu']}, cc {env['compute_capability']}, {env['memory_gib']} GiB, "
                   f"driver {env['driver_version']}, CUDA runtime {env['cuda_runtime']}, "
                   f"CuPy {env['cupy']}")
    else:
        summary = f"cuda: {env['cuda']}"
    return {"status": "passed", "summary": summary}


def _stage_tests(ctx: _Ctx) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        junit = Path(tmp) / "junit.xml"
        cmd = [ctx.python, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
               f"--junitxml={junit}", *ctx.extra["tests"]]
        res = ctx.run(cmd, ctx.timeout("tests"))
        parsed: dict[str, Any] | None = None
        if junit.is_file():
            try:
                parsed = parse_junit(junit)
                parsed["source"] = "junit xml"
            except (ET.ParseError, OSError) as exc:
                parsed = None
                ctx.notes.append(f"tests: unreadable junit xml ({exc})")
    if parsed is None:
        parsed = parse_pytest_output(res.output)
    rec = _cmd_record(res)
    rec["counts"] = {k: parsed[k] for k in ("tests", "passed", "failed", "skipped", "errors")}
    rec["counts_source"] = parsed.get("source")
    rec["failures"] = parsed["failures"]
    c = rec["counts"]
    summary = (f"{c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped, "
               f"{c['errors']} errors")
    if res.timed_out:
        status = "timeout"
        summary += f" before the {ctx.timeout_used:.0f} s timeout"
    elif res.returncode == 0 and c["failed"] == 0 and c["errors"] == 0 and c["passed"] > 0:
        status = "passed"
    else:
        status = "failed"
        if c["tests"] == 0:
            summary = "no test ran"
        summary += f" (pytest exit {res.returncode})"
    return {"status": status, "summary": summary, **rec}


def _stage_main(ctx: _Ctx) -> dict[str, Any]:
    smoke = ctx.args.main_smoke
    with tempfile.TemporaryDirectory(prefix="gpu_check_mnist_") as tmp:
        cmd = [ctx.python, str(ROOT / "examples" / "train_mnist.py"), "--backend", "cuda",
               "--out", tmp, "--verbose", "2", *(["--smoke"] if smoke else []),
               *ctx.extra["main"]]
        res = ctx.run(cmd, ctx.timeout("main"))
        history = None
        hist_path = Path(tmp) / "history.json"
        if hist_path.is_file():
            history = _safe(lambda: json.loads(hist_path.read_text()))
    parsed = parse_train_output(res.output)
    rec = _cmd_record(res)
    rec["mode"] = "smoke" if smoke else "full"
    rec.update(parsed)
    target = None if smoke or ctx.extra["main"] else MAIN_TARGET
    rec["accuracy_target"] = target
    if isinstance(history, dict):
        rec["history"] = history.get("history")
    acc = parsed["accuracy"]
    acc_txt = (f"held-out accuracy {acc:.4f} ({parsed['correct']}/{parsed['total']})"
               if acc is not None else "no accuracy line")
    summary = f"{rec['mode']}: {acc_txt}, wall {res.seconds:.1f} s"
    if parsed["train_seconds"] is not None:
        summary += f" (training {parsed['train_seconds']:.1f} s)"
    if res.timed_out:
        return {"status": "timeout", "summary": summary + f", cut at {ctx.timeout_used:.0f} s",
                **rec}
    ok = res.returncode == 0 and acc is not None and parsed["backend"] in (None, "cuda")
    if ok and target is not None and acc < target:
        ok = False
        summary += f", below the {target:.0%} target"
    if res.returncode != 0:
        summary += f", exit {res.returncode}"
    return {"status": "passed" if ok else "failed", "summary": summary, **rec}


def _stage_bench(ctx: _Ctx) -> dict[str, Any]:
    path = ctx.out / "cuda.json"
    cmd = [ctx.python, "-m", "benchmarks.run", "--device", "cuda", "--out", str(path),
           "--no-readme", *ctx.extra["bench"]]
    t_start = time.time()
    res = ctx.run(cmd, ctx.timeout("bench"))
    doc = None
    if path.is_file() and path.stat().st_mtime >= t_start - 1:  # written by this run
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            ctx.notes.append(f"bench: unreadable {path} ({exc})")
    parsed = parse_bench(doc, res.output)
    rec = _cmd_record(res)
    rec["json"] = str(path) if doc is not None else None
    rec.update(parsed)
    statuses = [t["status"] for t in parsed["targets"]]
    counts = ", ".join(f"{statuses.count(s)} {s}" for s in ("PASS", "FAIL", "N/A", "SKIP")
                       if s in statuses) or "no targets"
    cases = parsed["cases"]
    summary = f"targets: {counts}; {cases if cases is not None else '?'} cases"
    if parsed.get("cases_planned"):
        summary += f" of {parsed['cases_planned']}"
    summary += f", {len(parsed['case_errors'])} case errors"
    summary += f"; JSON {path}" if doc is not None else "; no JSON written"
    if res.timed_out:
        return {"status": "timeout", "summary": summary + f" (cut at {ctx.timeout_used:.0f} s)",
                **rec}
    ok = (res.returncode == 0 and doc is not None and "FAIL" not in statuses
          and not parsed["case_errors"])
    if res.returncode != 0:
        summary += f", exit {res.returncode}"
    return {"status": "passed" if ok else "failed", "summary": summary, **rec}


def _cmd_record(res: CommandResult) -> dict[str, Any]:
    return {"command": shlex.join(res.cmd), "returncode": res.returncode,
            "wall_s": round(res.seconds, 2), "output_tail": _tail(res.output)}


_RUNNERS: dict[str, Callable[[_Ctx], dict[str, Any]]] = {
    "env": _stage_env, "tests": _stage_tests, "main": _stage_main, "bench": _stage_bench,
}


class _Ctx:
    """What the stages share: options, the record being written, the time budget."""

    def __init__(self, args: argparse.Namespace, record: dict[str, Any]) -> None:
        self.args = args
        self.record = record
        self.out = Path(os.path.abspath(args.out))  # the subprocesses run in the repository root
        self.python = os.path.abspath(args.python) if os.sep in args.python else args.python
        self.notes: list[str] = record.setdefault("notes", [])
        self.t0 = time.perf_counter()
        self.timeout_used = 0.0
        self.extra = {s: shlex.split(getattr(args, f"{s}_args") or "")
                      for s in ("tests", "main", "bench")}

    def remaining(self) -> float:
        return self.args.budget - (time.perf_counter() - self.t0)

    def timeout(self, stage: str) -> float:
        self.timeout_used = max(1.0, min(getattr(self.args, f"{stage}_timeout"),
                                         self.remaining()))
        return self.timeout_used

    def run(self, cmd: list[str], timeout: float) -> CommandResult:
        return run_command(cmd, timeout, env=child_env(), cwd=ROOT)


# ------------------------------------------------------------------------------ records
def _fmt(v: Any) -> str:
    s = json.dumps(v) if isinstance(v, (dict, list)) else str(v)
    return s.replace("|", "\\|").replace("\n", " ")


def render_markdown(record: dict[str, Any]) -> str:
    """The readable report: stage table, environment, failures, tails of stages that failed."""
    done = record.get("finished_utc")
    lines = [f"# gpu-check: {record.get('device', '?')}", "",
             f"Started {record.get('started_utc')} on {record.get('hostname')}; "
             f"{'finished ' + str(done) if done else 'not finished'}"
             f"; exit code {record.get('exit_code', '—')}. Command: `{record.get('command')}`.",
             "", "| stage | status | seconds | summary |", "| --- | --- | ---: | --- |"]
    for st in record["stages"]:
        secs = f"{st['seconds']:.1f}" if st.get("seconds") is not None else "—"
        lines.append(f"| {st['name']} | **{st['status']}** | {secs} | "
                     f"{_fmt(st.get('summary', ''))} |")
    env = record.get("env")
    if env:
        lines += ["", "## Environment", "", "| key | value |", "| --- | --- |"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in env.items()]
    fails: list[str] = []
    for st in record["stages"]:
        for f in st.get("failures", []):
            fails.append(f"- `{f['name']}` ({f['kind']}): {_fmt(f['message'])}")
        for t in st.get("targets", []):
            if t.get("status") in ("FAIL", "N/A"):
                worst = f" (worst {t['worst']:.3g} {t.get('op')} {t.get('limit')})" if isinstance(
                    t.get("worst"), (int, float)) else ""
                fails.append(f"- bench target **{t['status']}**: {t['target']}{worst}")
        for e in st.get("case_errors", []):
            fails.append(f"- bench case `{e['case']}` ({e['side']}): {_fmt(e['error'])}")
        if st.get("error"):
            fails.append(f"- stage {st['name']}: {_fmt(st['error'])}")
    if fails:
        lines += ["", "## Failures", "", *fails]
    for note in record.get("notes", []):
        lines += ["", f"Note: {note}"]
    for st in record["stages"]:
        if st["status"] not in ("passed", "pending") and st.get("output_tail"):
            tail = "\n".join(st["output_tail"].splitlines()[-40:])
            lines += ["", f"## Output tail: {st['name']} ({st['status']})", "", "```", tail,
                      "```"]
    return "\n".join(lines) + "\n"


def _write(record: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("gpu_check.json", json.dumps(record, indent=1, default=str) + "\n"),
                       ("gpu_check.md", render_markdown(record))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)


# ------------------------------------------------------------------------------ CLI
def _stage_list(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in STAGES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown stages {bad}; valid: {','.join(STAGES)}")
    return [s for s in STAGES if s in names]  # always in the fixed order


def build_parser() -> argparse.ArgumentParser:
    """The command-line options of ``python -m gpucnn.testing.gpu_check``."""
    p = argparse.ArgumentParser(prog="python -m gpucnn.testing.gpu_check",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="benchmarks/results/",
                   help="folder for gpu_check.json / gpu_check.md (and the bench's cuda.json)")
    p.add_argument("--stages", type=_stage_list, default=list(STAGES),
                   help=f"comma list, a subset of {','.join(STAGES)} (run in that order)")
    p.add_argument("--tests-timeout", type=float, default=150.0)
    p.add_argument("--main-timeout", type=float, default=90.0)
    p.add_argument("--bench-timeout", type=float, default=120.0)
    p.add_argument("--budget", type=float, default=290.0,
                   help="seconds for the whole check: each stage's timeout is capped by what "
                   "is left, and a stage is not started with under 5 s left (default 290)")
    p.add_argument("--python", default=sys.executable,
                   help="interpreter for the subprocesses (default: this one)")
    p.add_argument("--main-smoke", action="store_true",
                   help="run train_mnist.py --smoke instead of the full main job")
    p.add_argument("--tests-args", default="", help="extra pytest arguments (one string)")
    p.add_argument("--main-args", default="", help="extra train_mnist.py arguments")
    p.add_argument("--bench-args", default="",
                   help="extra benchmarks.run arguments, e.g. '--only conv,train,loader'")
    return p


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Interrupted(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Run the selected stages, writing the records after each; return the exit code."""
    from gpucnn.backend.device import simulated

    args = build_parser().parse_args(argv)
    out = Path(args.out)
    cmd = "python -m gpucnn.testing.gpu_check " + shlex.join(
        sys.argv[1:] if argv is None else argv)
    record: dict[str, Any] = {
        "schema": 1, "tool": "gpucnn.testing.gpu_check", "command": cmd.strip(),
        "started_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "finished_utc": None, "hostname": _safe(socket.gethostname), "exit_code": None,
        "stages": [{"name": s, "status": "pending"} for s in args.stages], "notes": [],
    }
    usable, cuda = _cuda_status()
    sim = simulated()
    record.update(cuda=f"simulated ({cuda})" if sim else cuda, simulated=sim,
                  device="simulated device" if sim else ("GPU" if usable else "no GPU"))
    if usable or sim:
        props = _safe(_device_props)
        if isinstance(props, dict) and props.get("name"):
            record["device"] = props["name"] + (" (simulated)" if sim else "")
    record["device_slug"] = _slug(record["device"])
    run_gpu = usable or sim
    ctx = _Ctx(args, record)
    prev = None
    try:
        prev = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread
        pass
    interrupted = False
    try:
        for st in record["stages"]:
            name = st["name"]
            if name != "env" and not run_gpu:
                st.update(status="skipped", summary="skipped: no GPU", seconds=0.0)
                continue
            if ctx.remaining() < MIN_STAGE_S:
                st.update(status="skipped", seconds=0.0,
                          summary=f"skipped: the {args.budget:.0f} s budget is spent")
                continue
            st.update(status="running", started_utc=_dt.datetime.now(
                _dt.timezone.utc).isoformat(timespec="seconds"))
            _write(record, out)
            t0 = time.perf_counter()
            try:
                st.update(_RUNNERS[name](ctx))
            except _Interrupted as exc:
                st.update(status="interrupted", summary=f"interrupted by {exc}")
                interrupted = True
            except Exception as exc:
                st.update(status="error", summary=f"{type(exc).__name__}: {exc}",
                          error=f"{type(exc).__name__}: {exc}")
            st["seconds"] = round(time.perf_counter() - t0, 2)
            _write(record, out)
            if interrupted:
                break
    finally:
        if prev is not None:
            signal.signal(signal.SIGTERM, prev)
    for st in record["stages"]:
        if st["status"] == "pending":
            st.update(status="skipped", summary="skipped: interrupted")
    if not run_gpu:
        code = 2
    else:
        code = 0 if all(s["status"] == "passed" for s in record["stages"]) else 1
    record["exit_code"] = code
    record["finished_utc"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    record["total_s"] = round(time.perf_counter() - ctx.t0, 2)
    _write(record, out)
    print(render_markdown(record).split("\n## Environment")[0])
    print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    return code


if __name__ == "__main__":
    sys.exit(main())
