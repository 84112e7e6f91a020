"""Gateway overhead: the same load against vLLM directly and through the gateway, in one run.

`gptnl serve` starts one vLLM replica of a model folder; the benchmark then alternates rounds
against vLLM's own port and against the gateway (auth, limits, guard, audit, metrics all on):
throughput rounds (C concurrent clients sending completions for T seconds; requests per second)
and latency rounds (one client, one request at a time; p50/p99), because under saturation a
latency percentile measures the queue, not the gateway. It prints the throughput ratio and the
added p50/p99. Goal: at most 5 % throughput lost and 2 ms added p50. On a machine with few cores
the gateway competes with vLLM's own processes for CPU; both figures include that.

    python bench/gateway_overhead.py --model runs/demo/sft/model [--clients 16] [--seconds 15] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent


async def load(url: str, key: str, clients: int, seconds: float, max_tokens: int) -> dict:
    latencies: list[float] = []
    errors = 0
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=clients * 2)) as client:
        stop = time.perf_counter() + seconds

        async def one(i: int) -> None:
            nonlocal errors
            n = 0
            while time.perf_counter() < stop:
                body = {"model": "gptnl-tiny", "prompt": f"Vraag {i}-{n}", "max_tokens": max_tokens,
                        "temperature": 0, "ignore_eos": True}
                t0 = time.perf_counter()
                r = await client.post(url + "/v1/completions", json=body, headers=headers)
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1
                n += 1

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(clients)))
        wall = time.perf_counter() - start
    latencies.sort()
    return {"requests": len(latencies), "errors": errors, "rps": len(latencies) / wall,
            "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="HF model folder (e.g. runs/demo/sft/model)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--out", default=str(ROOT / "bench/results/gateway_overhead.json"))
    args = ap.parse_args()

    from gptnl.serving.keys import KeyStore
    from gptnl.serving.replicas import free_port

    work = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    port = free_port()
    config = work / "gateway.yaml"
    config.write_text(yaml.safe_dump({
        "port": port, "keys": "keys.json", "audit": "audit.jsonl", "logs": "logs",
        "profiles": str(ROOT / "serving" / "profiles"),
        "models": {"gptnl-tiny": {"path": str(Path(args.model).resolve()), "max_tokens": 256,
                                  "max_model_len": 1024, "replicas": 1, "profile": "cpu"}}}))
    key = KeyStore(work / "keys.json").create("bench", ["gptnl-tiny"], rpm=10**9, tpm=10**12,
                                              max_concurrent=args.clients * 2)
    gateway = subprocess.Popen([sys.executable, "-m", "gptnl", "serve", str(config)],
                               stderr=open(work / "gateway.log", "wb"))
    try:
        gw_url = f"http://127.0.0.1:{port}"
        while True:
            if gateway.poll() is not None:
                sys.exit(f"gateway exited; see {work / 'gateway.log'}")
            try:
                if httpx.get(gw_url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        child = subprocess.run(["pgrep", "-f", "-P", str(gateway.pid), "vllm.entrypoints"], capture_output=True,
                               text=True).stdout.split()[0]
        argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        vllm_url = f"http://127.0.0.1:{int(argv[argv.index(b'--port') + 1])}"
        asyncio.run(load(vllm_url, key, args.clients, 3, args.max_tokens))  # warm-up
        rounds = {"vllm": [], "gateway": []}
        single = {"vllm": [], "gateway": []}
        for _ in range(args.rounds):
            for name, url in (("vllm", vllm_url), ("gateway", gw_url)):
                rounds[name].append(asyncio.run(load(url, key, args.clients, args.seconds, args.max_tokens)))
                single[name].append(asyncio.run(load(url, key, 1, args.seconds / 3, args.max_tokens)))
    finally:
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(120)

    def med(name: str, field: str, of: dict = rounds) -> float:
        return statistics.median(r[field] for r in of[name])

    result = {
        "clients": args.clients, "seconds": args.seconds, "rounds": rounds, "single_client": single,
        "cpus": os.cpu_count(),
        "throughput_ratio": med("gateway", "rps") / med("vllm", "rps"),
        "added_p50_ms": med("gateway", "p50_ms", single) - med("vllm", "p50_ms", single),
        "added_p99_ms": med("gateway", "p99_ms", single) - med("vllm", "p99_ms", single),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    for name, label in (("vllm", "vLLM direct"), ("gateway", "via gateway")):
        print(f"{label}: {med(name, 'rps'):.1f} req/s with {args.clients} clients; one client: "
              f"p50 {med(name, 'p50_ms', single):.1f} ms, p99 {med(name, 'p99_ms', single):.1f} ms")
    print(f"throughput ratio {result['throughput_ratio']:.3f} (goal >= 0.95); added p50 "
          f"{result['added_p50_ms']:.2f} ms (goal <= 2), added p99 {result['added_p99_ms']:.2f} ms; "
          f"errors: vllm {sum(r['errors'] for r in rounds['vllm'])}, "
          f"gateway {sum(r['errors'] for r in rounds['gateway'])}")


if __name__ == "__main__":
    main()
