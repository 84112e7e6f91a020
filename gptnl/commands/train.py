"""`gptnl train`: the command on its own, so that `python -m gptnl.train` (one process per rank under
torchrun or srun) starts it without loading the whole CLI."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def train_cmd(
    config: Path = typer.Argument(..., help="Training config YAML (configs/train/*.yaml)."),
    run_dir: Path = typer.Option(..., "--run-dir", help="Where checkpoints and metrics go; a restart resumes."),
    shards: Path = typer.Option(None, "--shards", help="Shards dir (overrides data.shards)."),
    max_steps: int = typer.Option(None, "--max-steps", help="Overrides max_steps."),
    zero_stage: int = typer.Option(None, "--zero-stage", help="Overrides zero_stage."),
    universal: bool = typer.Option(False, "--universal", help="Resume from a converted universal checkpoint."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train with DeepSpeed (single process, or under torchrun / srun)."""
    from gptnl.config import TrainConfig, load_train_config, validate
    from gptnl.train.loop import train

    cfg = load_train_config(config)
    overrides = {k: v for k, v in {"max_steps": max_steps, "zero_stage": zero_stage}.items() if v is not None}
    if overrides:
        cfg = validate(TrainConfig, {**json.loads(cfg.model_dump_json()), **overrides}, f"{config} (with overrides)")
    code = train(cfg, run_dir, shards=shards, universal=universal, show_progress=progress)
    if code:
        raise typer.Exit(code)
