"""`gptnl train`: the command on its own, so that `python -m gptnl.train` (one process per rank under
torchrun or srun) starts it without loading the whole CLI."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from gptnl.commands import SET_HELP


def train_cmd(
    config: Path = typer.Argument(..., help="Training config YAML (configs/train/*.yaml)."),
    run_dir: Path = typer.Option(..., "--run-dir", help="Where checkpoints and metrics go; a restart resumes."),
    shards: Path = typer.Option(None, "--shards", help="Shards dir (overrides data.shards)."),
    max_steps: int = typer.Option(None, "--max-steps", help="Same as --set max_steps=N."),
    zero_stage: int = typer.Option(None, "--zero-stage", help="Same as --set zero_stage=N."),
    init_from: Path = typer.Option(None, "--init-from", help=(
        "Continue pre-training a local HF LlamaForCausalLM folder (Salamandra, EuroLLM, or a gptnl export); "
        "the config's `model:` may then be left out.")),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    universal: bool = typer.Option(False, "--universal", help="Resume from a converted universal checkpoint."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train with DeepSpeed (single process, or under torchrun / srun)."""
    from gptnl.config import load_train_config
    from gptnl.train.loop import train

    shorthands = [f"{k}={v}" for k, v in {"max_steps": max_steps, "zero_stage": zero_stage}.items() if v is not None]
    if init_from is not None:  # a JSON string is YAML too, and an absolute path stays as it is
        shorthands.append(f"init_from={json.dumps(str(init_from.resolve()))}")
    cfg = load_train_config(config, [*overrides, *shorthands])
    code = train(cfg, run_dir, shards=shards, universal=universal, show_progress=progress)
    if code:
        raise typer.Exit(code)
