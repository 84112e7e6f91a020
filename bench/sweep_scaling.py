"""Sweep scaling: the same sweep (models x tasks) run cell after cell in one process, and as Ray
tasks on 2 workers, in one run; prints the speed-up. Goal: >= 1.8x.

The model is an OpenAI-compatible endpoint with a fixed service time per request (default 20 ms),
which is what a sweep against a remote endpoint (a GPU server, another provider) waits on: the
figure measures the sweep's parallelism and its Ray overhead, not the model. Each cell sends one
request at a time, so the only parallelism is between cells. Against a model served on the same
two cores, the cores, not the sweep, would set the limit.

    python bench/sweep_scaling.py [--service-ms 20] [--limit 12] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from scripted_server import ScriptedServer  # noqa: E402 - the tests' scripted endpoint

from gptnl.evals.results import ModelInfo  # noqa: E402
from gptnl.evals.spec import Settings  # noqa: E402
from gptnl.evals.sweep import Endpoint, execute, plan  # noqa: E402

TASKS = ["kennis", "taalvaardigheid", "stereotypen", "waarheidsgetrouwheid"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--service-ms", type=float, default=20.0)
    ap.add_argument("--limit", type=int, default=12, help="items per task")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench/results/sweep_scaling.json"))
    args = ap.parse_args()

    def logprob(prompt: str) -> float:
        time.sleep(args.service_ms / 1000)
        return -1.0 - (len(prompt) % 5) / 10

    import ray

    tasks_dir = ROOT / "evals" / "tasks"
    with ScriptedServer(logprob=logprob) as server, tempfile.TemporaryDirectory() as tmp:
        eps = {m: Endpoint(ModelInfo(name=m, endpoint=server.url, model_id="scripted", fingerprint=""), server.url,
                           None) for m in ("a", "b")}
        cells = plan(TASKS, tasks_dir, eps, [Settings(limit=args.limit)])
        t0 = time.perf_counter()
        execute(cells, tasks_dir, eps, None, Path(tmp) / "sequential", concurrency=1)
        sequential = time.perf_counter() - t0
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        try:
            # Ray's first tasks start worker processes; warm them on a throwaway sweep so that the
            # measured one, like the sequential one, runs in processes that have imported gptnl.
            execute(cells, tasks_dir, eps, None, Path(tmp) / "warm", concurrency=1, use_ray=True)
            t0 = time.perf_counter()
            execute(cells, tasks_dir, eps, None, Path(tmp) / "ray", concurrency=1, use_ray=True)
            parallel = time.perf_counter() - t0
        finally:
            ray.shutdown()
        requests = server.requests
    result = {
        "benchmark": "sweep_scaling", "peer": "the same sweep, cell after cell in one process",
        "cells": len(cells), "requests_per_run": requests // 3, "service_ms": args.service_ms,
        "sequential_s": round(sequential, 2), "ray_s": round(parallel, 2), "workers": args.workers,
        "speedup": round(sequential / parallel, 2), "goal": ">= 1.8x",
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {__import__('os').cpu_count()} cores",
    }
    print(json.dumps(result, indent=2))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
