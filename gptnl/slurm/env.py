"""torch.distributed's variables from Slurm's, for `srun` steps that run one task per process
(no torchrun in between): RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT.

Only inside a job step: a batch script also carries SLURM_PROCID and SLURM_NTASKS, and a trainer
started there directly (not through srun) is one process, whatever the allocation holds.
"""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys

PORT_BASE = 20000


def tasks_on_this_node(tasks_per_node: str, node_id: int) -> int:
    """From SLURM_STEP_TASKS_PER_NODE such as '2(x3),1' and this node's index."""
    counts = []
    for part in tasks_per_node.split(","):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if not m:
            raise ValueError(f"cannot read tasks per node {tasks_per_node!r}")
        counts += [int(m.group(1))] * int(m.group(2) or 1)
    return counts[node_id]


def first_host(nodelist: str) -> str:
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
    return out.stdout.split()[0]


def from_slurm(environ: dict[str, str] | None = None) -> dict[str, str] | None:
    """The variables to set, or None when this is not a Slurm step or a launcher already set them."""
    env = os.environ if environ is None else environ
    if "RANK" in env or "SLURM_STEP_ID" not in env or "SLURM_PROCID" not in env:
        return None
    world = env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS", "1")
    local_world = tasks_on_this_node(env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE", world),
                                     int(env.get("SLURM_NODEID", "0")))
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", "")
    return {
        "RANK": env["SLURM_PROCID"],
        "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
        "WORLD_SIZE": world,
        "LOCAL_WORLD_SIZE": str(local_world),
        "MASTER_ADDR": env.get("MASTER_ADDR") or (first_host(nodelist) if nodelist else "127.0.0.1"),
        "MASTER_PORT": env.get("MASTER_PORT") or str(PORT_BASE + int(env.get("SLURM_JOB_ID", "0")) % 10000),
    }


class Labelled(io.TextIOBase):
    """A text stream that starts every line with a label, so that the interleaved output of many
    tasks in one job log says which node and rank wrote each line."""

    def __init__(self, stream, label: str) -> None:
        self._stream, self._label, self._at_start = stream, label, True

    def write(self, text: str) -> int:
        out = []
        for line in text.splitlines(keepends=True):
            if self._at_start:
                out.append(self._label)
            out.append(line)
            self._at_start = line.endswith("\n")
        self._stream.write("".join(out))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self) -> str:
        return self._stream.encoding


def apply() -> bool:
    """Set the variables in this process when running as a Slurm task, and label its output with
    node:rank when the step has more than one task; True if it did."""
    found = from_slurm()
    if found:
        os.environ.update(found)
        if int(found["WORLD_SIZE"]) > 1 and not isinstance(sys.stdout, Labelled):
            label = f"{socket.gethostname().split('.')[0]}:{found['RANK']} "
            sys.stdout, sys.stderr = Labelled(sys.stdout, label), Labelled(sys.stderr, label)
    return bool(found)
