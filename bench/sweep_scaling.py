"""Sweep scaling: the same sweep run cell after cell in one process (the peer), then as Ray tasks on
2, 4 and 8 workers, in one run; prints each speed-up. Goal: >= 0.9·N x the sequential run on N workers.

The model is an OpenAI-compatible endpoint with a fixed service time per request (default 100 ms),
which is what a sweep against a remote endpoint (a GPU server, another provider) waits on: the
figure measures the sweep's parallelism and its Ray overhead, not the model. Each cell sends one
request at a time, so the only parallelism is between cells. The cells are alike (one task, as
many models as `--cells-per-worker` x the most workers), so that the figure is not the longest
cell's, and every model has its own fingerprint, so that no cell reads another's answers from the
shared cache. Against a model served on the same cores, the cores, not the sweep, would set the limit.

What is left to lose on N workers: each cell's own set-up (loading the task, opening the cache,
the client) and Ray's dispatch, on as many cores as the machine has (`cpu_s_per_cell` records the
set-up plus per-request work a cell costs the CPU, next to the service time it waits).

    python bench/sweep_scaling.py [--workers 2,4,8] [--service-ms 100] [--limit 20] [--cells-per-worker 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from scripted_server import ScriptedServer  # noqa: E402 - the tests' scripted endpoint

from gptnl.evals.results import ModelInfo  # noqa: E402
from gptnl.evals.spec import Settings  # noqa: E402
from gptnl.evals.sweep import Endpoint, execute, plan  # noqa: E402
from gptnl.evals.tasks import TASKS_DIR  # noqa: E402


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def on_ray(workers: int, cells, eps, warm_cells, work: Path) -> float:
    """Wall time of the sweep as Ray tasks on `workers` workers; workers are started and have
    imported gptnl before the clock starts, as the sequential run's process has."""
    import ray

    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        execute(warm_cells, TASKS_DIR, eps, None, work / f"warm-{workers}", concurrency=1, use_ray=True)
        t0 = time.perf_counter()
        execute(cells, TASKS_DIR, eps, None, work / f"ray-{workers}", concurrency=1, use_ray=True)
        return time.perf_counter() - t0
    finally:
        ray.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", default="2,4,8", help="comma-separated worker counts")
    ap.add_argument("--service-ms", type=float, default=100.0)
    ap.add_argument("--limit", type=int, default=20, help="items per cell")
    ap.add_argument("--cells-per-worker", type=int, default=2, help="cells per worker at the most workers")
    ap.add_argument("--task", default="kennis")
    ap.add_argument("--out", default=str(ROOT / "bench/results/sweep_scaling.json"))
    args = ap.parse_args()
    counts = sorted({int(n) for n in args.workers.split(",")})

    def logprob(prompt: str) -> float:
        time.sleep(args.service_ms / 1000)
        return -1.0 - (len(prompt) % 5) / 10

    n_cells = max(counts) * args.cells_per_worker
    with ScriptedServer(logprob=logprob) as server, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        eps = {f"m{i:02d}": Endpoint(ModelInfo(name=f"m{i:02d}", endpoint=server.url, model_id="scripted",
                                               fingerprint=f"m{i:02d}"), server.url, None) for i in range(n_cells)}
        cells = plan([args.task], TASKS_DIR, eps, [Settings(limit=args.limit)])
        warm = plan([args.task], TASKS_DIR, eps, [Settings(name="warm", limit=1)])
        t0, c0, r0 = time.perf_counter(), cpu_s(), server.requests
        execute(cells, TASKS_DIR, eps, None, work / "sequential", concurrency=1)
        sequential = time.perf_counter() - t0
        cpu_per_cell = (cpu_s() - c0) / len(cells)  # client and server both run in this process here
        requests = server.requests - r0
        runs = []
        for n in counts:
            wall = on_ray(n, cells, eps, warm, work)
            runs.append({"workers": n, "ray_s": round(wall, 2), "speedup": round(sequential / wall, 2),
                         "goal": round(0.9 * n, 2), "met": sequential / wall >= 0.9 * n})
            print(f"{n} workers: {wall:.2f} s, {sequential / wall:.2f}x (goal >= {0.9 * n:.1f}x)", flush=True)
    result = {
        "benchmark": "sweep_scaling", "peer": "the same sweep, cell after cell in one process",
        "task": args.task, "cells": len(cells), "requests_per_run": requests, "service_ms": args.service_ms,
        "sequential_s": round(sequential, 2), "cpu_s_per_cell": round(cpu_per_cell, 3),
        "service_s_per_cell": round(requests / len(cells) * args.service_ms / 1000, 3), "runs": runs,
        "goal": ">= 0.9*N x on N workers",
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {os.cpu_count()} cores",
    }
    print(json.dumps(result, indent=2))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
