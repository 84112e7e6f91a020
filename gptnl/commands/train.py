"""`gptnl train`: the command on its own, so that `python -m gptnl.train` (one process per rank under
torchrun or srun) starts it without loading the whole CLI."""

from __future__ import annotations

from pathlib import Path

import typer

from gptnl.commands import SET_HELP


def train_cmd(
    config: Path = typer.Argument(..., help="Training config YAML (configs/train/*.yaml)."),
    run_dir: Path = typer.Option(..., "--run-dir", help="Where checkpoints and metrics go; a restart resumes."),
    shards: Path = typer.Option(None, "--shards", help="Shards dir (overrides data.shards)."),
    max_steps: int = typer.Option(None, "--max-steps", help="Same as --set max_steps=N."),
    zero_stage: int = typer.Option(None, "--zero-stage", help="Same as --set zero_stage=N."),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    universal: bool = typer.Option(False, "--universal", help="Resume from a converted universal checkpoint."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train with DeepSpeed (single process, or under torchrun / srun)."""
    from gptnl.config import load_train_config
    from gptnl.train.loop import train

    shorthands = [f"{k}={v}" for k, v in {"max_steps": max_steps, "zero_stage": zero_stage}.items() if v is not None]
    cfg = load_train_config(config, [*overrides, *shorthands])
    code = train(cfg, run_dir, shards=shards, universal=universal, show_progress=progress)
    if code:
        raise typer.Exit(code)
