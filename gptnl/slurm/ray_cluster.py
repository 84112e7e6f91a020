"""`python -m gptnl.slurm.ray_cluster --nodes N`: wait until the Ray cluster at RAY_ADDRESS has N
live nodes, so that a job script starts its driver only when every Ray node has joined."""

from __future__ import annotations

import argparse
import sys
import time


def wait_for_nodes(nodes: int, timeout: float) -> int:
    import ray

    deadline = time.monotonic() + timeout
    while True:
        try:
            ray.init(logging_level="ERROR", log_to_driver=False)
            break
        except (ConnectionError, RuntimeError) as exc:  # the head is not up yet
            if time.monotonic() > deadline:
                print(f"gptnl: no Ray head at the job's address after {timeout:.0f} s: {exc}", file=sys.stderr)
                return 1
            time.sleep(1)
    try:
        while (alive := sum(n["Alive"] for n in ray.nodes())) < nodes:
            if time.monotonic() > deadline:
                print(f"gptnl: {alive} of {nodes} Ray nodes joined within {timeout:.0f} s", file=sys.stderr)
                return 1
            time.sleep(0.5)
    finally:
        ray.shutdown()
    print(f"gptnl: {nodes} Ray node(s) up", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args(argv)
    return wait_for_nodes(args.nodes, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
