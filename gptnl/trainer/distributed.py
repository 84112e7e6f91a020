"""Process-group set-up and tear-down for DeepSpeed under torchrun, Slurm or a single process.

Three facts measured on CPU shape this module: DeepSpeed without launcher variables tries MPI
discovery and fails on `mpi4py`; every CPU start JIT-compiles a shared-memory op (24-100 s) that
only inference uses; and gloo can abort the interpreter at exit unless the engine and the process
group are torn down explicitly first.
"""

from __future__ import annotations

import gc
import importlib
import os
import socket
import warnings
from contextlib import closing
from types import ModuleType

import torch
import torch.distributed as dist


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fill_single_process_env() -> None:
    """Launched without torchrun: take the ranks from Slurm inside an `srun` step, else act as rank 0
    of a world of one."""
    from gptnl.slurm.env import apply

    apply()
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))


def import_deepspeed() -> ModuleType:
    """`deepspeed`, with the accelerator chosen before import and the CPU shm op never built."""
    if not torch.cuda.is_available():
        os.environ["DS_ACCELERATOR"] = "cpu"
    import deepspeed

    if not torch.cuda.is_available():
        # `import deepspeed.comm.torch as m` would bind the real `torch` (a name clash in the package),
        # so the module is looked up by its full name.
        importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None
    return deepspeed


def init() -> tuple[int, int, torch.device]:
    """Initialise the process group; returns (rank, world size, device)."""
    fill_single_process_env()
    # ZeRO's collectives call torch APIs that torch marks deprecated, dozens of times a run.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.distributed")
    deepspeed = import_deepspeed()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    deepspeed.init_distributed(dist_backend=backend)
    return dist.get_rank(), dist.get_world_size(), device


def all_mean(values: list[float], device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return (t / dist.get_world_size()).tolist()


def all_sum(values: list[float], device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def any_rank(flag: bool, device: torch.device) -> bool:
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_object(obj, src: int = 0):
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def shutdown(engine=None, barrier: bool = True) -> None:
    """Tear down in the order that avoids gloo's abort at interpreter exit. After an error on one
    rank the others may never reach a barrier, so `barrier=False` skips it."""
    if engine is not None:
        engine.destroy()
        del engine
    gc.collect()
    if dist.is_initialized():
        if barrier:
            dist.barrier()
        dist.destroy_process_group()
