"""Processes for fine-tuning under accelerate, with its CPU traps caught instead of trained through.

Three ways accelerate goes wrong on a machine without GPUs, each silent on its own:
1. `accelerate launch --num_processes N` takes its CPU path and starts ONE process. We see the
   launcher's command line, and restart under torchrun with N processes.
2. N processes (torchrun, or `accelerate launch --multi_gpu`) without `ACCELERATE_USE_CPU=1`: each
   process believes it is alone and trains its own model. We set it for plain DDP on CPU.
3. The DeepSpeed plugin on CPU without a backend: DeepSpeed runs N ranks but accelerate reports one
   process, so reduced losses are N times too large. We pass gloo.
`check_world` refuses to train whenever the processes started and the processes accelerate sees
differ, so a trap that slips past the fixes still stops the run with its cause.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import torch

from gptnl.config import FinetuneConfig
from gptnl.errors import GptnlError
from gptnl.trainer.distributed import fill_single_process_env, import_deepspeed

_NUM_PROCESSES = re.compile(r"^--num[_-]processes(?:=(\d+))?$")


def requested_processes(cmdline: list[str]) -> int | None:
    """N from an `accelerate launch ... --num_processes N ...` command line, else None."""
    if not any(Path(a).name == "accelerate" or a.endswith("accelerate/commands/accelerate_cli.py") for a in cmdline):
        return None
    for i, arg in enumerate(cmdline):
        m = _NUM_PROCESSES.match(arg)
        if m:
            value = m.group(1) or (cmdline[i + 1] if i + 1 < len(cmdline) else "")
            return int(value) if value.isdigit() else None
    return None


def _parent_cmdline() -> list[str]:
    try:
        raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def relaunch_if_accelerate_started_one(module_args: list[str]) -> None:
    """Trap 1: accelerate's CPU launcher ran one process where N were asked for; exec torchrun with N."""
    if "WORLD_SIZE" in os.environ or "ACCELERATE_USE_CPU" not in os.environ or torch.cuda.is_available():
        return
    n = requested_processes(_parent_cmdline())
    if not n or n < 2:
        return
    print(f"gptnl finetune: accelerate launch started 1 process for --num_processes {n} (its CPU path); "
          f"restarting under torchrun with {n}", file=sys.stderr, flush=True)
    os.execv(sys.executable, [sys.executable, "-m", "torch.distributed.run", "--standalone",
                              f"--nproc_per_node={n}", "-m", "gptnl.finetune", *module_args])


def deepspeed_config(cfg: FinetuneConfig, accum: int, bf16: bool, load_universal: bool = False) -> dict:
    return {
        "checkpoint": {"load_universal": load_universal},
        "train_micro_batch_size_per_gpu": cfg.batch.micro_batch_size,
        "gradient_accumulation_steps": accum,
        "gradient_clipping": cfg.optim.grad_clip,  # written out: DeepSpeed clips at 1.0 when it is absent
        # ZeRO-3: gather the sharded weights for the export (the name says 16-bit; fp32 gathers as fp32)
        "zero_optimization": {"stage": cfg.zero_stage,
                              **({"stage3_gather_16bit_weights_on_model_save": True} if cfg.zero_stage == 3 else {})},
        "bf16": {"enabled": bf16},
        "fp16": {"enabled": False},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def make_accelerator(cfg: FinetuneConfig, accum: int, bf16: bool, load_universal: bool = False):
    from accelerate import Accelerator
    from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs

    fill_single_process_env()
    cpu = not torch.cuda.is_available()
    handlers = [InitProcessGroupKwargs(backend="gloo")] if cpu else []  # trap 3
    if cfg.backend == "deepspeed":
        import_deepspeed()
        plugin = DeepSpeedPlugin(hf_ds_config=deepspeed_config(cfg, accum, bf16, load_universal))
        acc = Accelerator(deepspeed_plugin=plugin, gradient_accumulation_steps=accum, kwargs_handlers=handlers)
    else:
        if cpu:
            os.environ["ACCELERATE_USE_CPU"] = "1"  # trap 2
        acc = Accelerator(gradient_accumulation_steps=accum, mixed_precision="bf16" if bf16 else "no",
                          kwargs_handlers=handlers, cpu=cpu)
    check_world(acc)
    return acc


def check_world(acc) -> None:
    """Refuse to train when the processes started and the processes accelerate sees differ."""
    started = int(os.environ.get("WORLD_SIZE", "1"))
    if acc.num_processes != started:
        raise GptnlError(
            f"{started} processes were started but accelerate sees {acc.num_processes} "
            f"({acc.distributed_type.value}): each would train on its own and losses would be misreported. "
            "On CPU, plain DDP needs ACCELERATE_USE_CPU=1 and the DeepSpeed plugin needs the gloo backend "
            "(InitProcessGroupKwargs)")
