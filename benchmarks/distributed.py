"""Data-parallel scaling of gpucnn.distributed: training images/s at 1, 2, 4, 8 ranks.

    python -m benchmarks.distributed --device cpu --ranks 1,2 --model resnet20 \
        --out benchmarks/results/cpu_distributed.md
    python -m benchmarks.distributed --device cuda --ranks 1,2,4,8 --model resnet18 \
        --out benchmarks/results/cuda_distributed.md

For each rank count ``k`` it launches ``mpiexec -n k python -m benchmarks.distributed
--worker ...``: every rank builds the model, wraps it in :class:`gpucnn.distributed.DataParallel`
(bucketed all-reduce overlapped with backward) and runs SGD steps at a fixed per-rank batch
on random data (``--rounds`` alternating rounds over the rank counts, the best one
kept: other load on the machine slows some rounds); after warm-up, the slowest rank's wall
time over ``--steps`` steps (on cuda the device is synchronised once at the end) gives the
global images/s. Weak scaling: the fraction of linear scaling is
``ips(k) / (k * ips(1))``. On cuda, rank counts above the device count are skipped (NCCL
refuses two ranks on one GPU); on the CPU each rank gets ``--threads`` BLAS threads
(default 1: the ranks then use ``k`` cores, and an oversubscribed BLAS pool, which spins
badly when other work shares the cores, does not distort the 1-rank figure).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

__all__ = ["main", "run_worker", "scaling_table"]

#: model name -> (input shape per sample, number of classes)
MODELS = {"lenet5": ((1, 28, 28), 10), "resnet20": ((3, 32, 32), 10),
          "resnet18": ((3, 224, 224), 1000)}


def run_worker(model_name: str, batch: int, steps: int, warmup: int, backend: str) -> None:
    """One rank's timed steps; rank 0 prints a JSON line ``{"ranks", "seconds", ...}``."""
    import numpy as np

    import gpucnn
    import gpucnn.distributed as dist
    import gpucnn.functional as F
    from gpucnn import models
    from gpucnn.optim import SGD
    from gpucnn.tensor import Tensor

    gpucnn.backend.use(backend)
    comm = dist.init()
    shape, classes = MODELS[model_name]
    model = getattr(models, model_name)(num_classes=classes, in_channels=shape[0])
    model.build(shape)
    model.train()
    ddp = dist.DataParallel(model)
    opt = SGD(ddp.parameters(), lr=0.01, momentum=0.9)
    rng = np.random.default_rng(comm.rank)
    xp = gpucnn.backend.get().xp
    x = Tensor(xp.asarray(rng.standard_normal((batch, *shape)).astype(np.float32)))
    y = Tensor(xp.asarray(rng.integers(0, classes, batch)))

    def step() -> None:
        opt.zero_grad()
        F.cross_entropy(ddp(x), y).backward()
        opt.step()

    def sync() -> None:
        if backend == "cuda":
            import cupy

            cupy.cuda.Device().synchronize()

    for _ in range(warmup):
        step()
    sync()
    comm.barrier()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    elapsed = np.array([time.perf_counter() - t0])
    comm.allreduce(elapsed, "max")  # the slowest rank sets the pace
    if comm.rank == 0:
        print("RESULT " + json.dumps({"ranks": comm.size, "seconds": float(elapsed[0]),
                                      "steps": steps, "batch_per_rank": batch,
                                      "communicator": type(comm).__name__}), flush=True)
    dist.shutdown()


def scaling_table(results: list[dict]) -> str:
    """The markdown table: ranks, global and per-rank images/s, fraction of linear scaling."""
    lines = ["| ranks | batch per rank | global batch | images/s | images/s per rank "
             "| fraction of linear |", "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    base = next((r for r in results if r["ranks"] == 1), None)
    for r in results:
        ips = r["ranks"] * r["batch_per_rank"] * r["steps"] / r["seconds"]
        r["images_per_s"] = ips
        frac = "—"
        if base is not None:
            one = base["batch_per_rank"] * base["steps"] / base["seconds"]
            frac = f"{ips / (r['ranks'] * one):.2f}"
        lines.append(f"| {r['ranks']} | {r['batch_per_rank']} | "
                     f"{r['ranks'] * r['batch_per_rank']} | {ips:.1f} | {ips / r['ranks']:.1f} "
                     f"| {frac} |")
    return "\n".join(lines)


def _mpiexec() -> str:
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.path.exists(here) else (shutil.which("mpiexec") or "mpiexec")


def _device_count() -> int:
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:
        return 0


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the scaling benchmark (or, with ``--worker``, one rank of it); returns the
    per-rank-count results and writes ``--out`` (markdown) when given."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--ranks", default="1,2", help="comma-separated rank counts")
    ap.add_argument("--model", choices=sorted(MODELS), default="resnet20")
    ap.add_argument("--batch", type=int, default=32, help="images per rank per step")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds over the rank counts, in alternation; the best round counts")
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads per rank (cpu)")
    ap.add_argument("--out", default=None, help="markdown file to write")
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds per rank count")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    backend = "cuda" if a.device == "cuda" else "numpy"
    if a.worker:
        run_worker(a.model, a.batch, a.steps, a.warmup, backend)
        return []
    cores = os.cpu_count() or 1
    load0 = _loadavg()
    counts = [int(k) for k in a.ranks.split(",") if k.strip()]
    skipped = []
    if a.device == "cuda":
        n = _device_count()
        skipped = [k for k in counts if k > n]
        counts = [k for k in counts if k <= n]
    best: dict[int, dict] = {}
    for rnd in range(a.rounds):  # alternating, so a busy moment hits every count alike
        for k in counts:
            r = _launch(a, k, backend)
            r["round_seconds"] = [*best.get(k, {}).get("round_seconds", []), r["seconds"]]
            if k not in best or r["seconds"] < best[k]["seconds"]:
                best[k] = r
            else:
                best[k]["round_seconds"] = r["round_seconds"]
            print(f"round {rnd + 1}, {k} rank(s): {r['seconds']:.3f} s", flush=True)
    results = [best[k] for k in counts]
    table = scaling_table(results)
    print(table)
    if a.out:
        _write(a, results, table, skipped, cores, (load0, _loadavg()))
    return results


def _launch(a: Any, k: int, backend: str) -> dict:
    """One ``mpiexec -n k`` worker run; its rank 0's result."""
    env = dict(os.environ, GPUCNN_BACKEND=backend, PYTHONPATH=ROOT)
    if a.device == "cpu":
        t = str(max(1, a.threads))
        env.update(OMP_NUM_THREADS=t, OPENBLAS_NUM_THREADS=t, MKL_NUM_THREADS=t)
    cmd = [_mpiexec(), "-n", str(k), sys.executable, "-m", "mpi4py", "-m",
           "benchmarks.distributed", "--worker", "--device", a.device, "--model", a.model,
           "--batch", str(a.batch), "--steps", str(a.steps), "--warmup", str(a.warmup)]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=a.timeout)
    got = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not got:
        raise RuntimeError(f"{k} rank(s) failed (exit {proc.returncode}):\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return json.loads(got[-1][len("RESULT "):])


def _loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[0]
    except OSError:
        return "?"


def _write(a: Any, results: list[dict], table: str, skipped: list[int], cores: int,
           load: tuple[str, str]) -> None:
    from benchmarks import env as benv

    try:
        import mpi4py

        mpi = f"mpi4py {mpi4py.__version__}"
        from mpi4py import MPI

        mpi += ", " + " ".join(MPI.Get_library_version().splitlines()[0].split())
    except Exception as exc:  # noqa: BLE001 - informational
        mpi = f"mpi4py unavailable ({exc})"
    info = benv.collect(a.device, None, None)
    cmd = "python -m benchmarks.distributed " + " ".join(
        f"--{k} {v}" for k, v in (("device", a.device), ("ranks", a.ranks), ("model", a.model),
                                  ("batch", a.batch), ("steps", a.steps),
                                  ("warmup", a.warmup), ("rounds", a.rounds),
                                  ("threads", a.threads),
                                  ("out", a.out)))
    threads = f"; {a.threads} BLAS thread(s) per rank" if a.device == "cpu" else ""
    text = (f"### {a.device.upper()} data-parallel scaling: {a.model} — {info['date'][:10]}\n\n"
            f"{info['device_name'] or a.device}, {cores} logical CPUs (1-min load average "
            f"{load[0]} at start, {load[1]} at end); Python {info['python']}, "
            f"NumPy {info['numpy']} ({info['blas']}), gpucnn {info['gpucnn']}, {mpi}; commit "
            f"`{(info['git_commit'] or '?')[:12]}`.\n\n"
            f"Weak scaling: {a.batch} images per rank per step, SGD (momentum 0.9) through "
            f"DataParallel, float32, random data; wall time of the slowest rank over "
            f"{a.steps} steps after {a.warmup} warm-up steps{threads}; the best of {a.rounds} "
            f"alternating rounds (all rounds' seconds below the table). "
            f"Command: `{cmd}`.\n\n{table}\n")
    text += "\n" + "\n".join(
        f"- {r['ranks']} rank(s), {r['communicator']}: seconds per round "
        f"{', '.join(f'{t:.2f}' for t in r['round_seconds'])}" for r in results) + "\n"
    if skipped:
        text += f"\nSkipped (more ranks than GPUs): {skipped}.\n"
    with open(a.out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
