"""`gptnl finetune`: the command on its own, so that `python -m gptnl.finetune` (one process per rank
under torchrun or accelerate launch) starts it without loading the whole CLI."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from gptnl.commands import SET_HELP, console


def finetune_cmd(
    config: Path = typer.Argument(..., help="Fine-tuning config YAML (configs/finetune/*.yaml)."),
    base: Path = typer.Option(..., "--base", help="HF model folder to tune (`gptnl export`, or any local causal LM)."),
    data: Path = typer.Option(..., "--data", help="Chat JSONL file or folder (data_pipeline/instructions/)."),
    out: Path = typer.Option(..., "--out", help="Run dir: checkpoints, metrics, ledger, and model/ at the end."),
    max_steps: int = typer.Option(None, "--max-steps", help="Same as --set max_steps=N."),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    universal: bool = typer.Option(False, "--universal", help=(
        "Resume from the newest checkpoint's universal conversion (written by another number of processes; "
        "the refusal without it names the conversion command).")),
) -> None:
    """Instruction-tune on chat data (one process, or under torchrun / accelerate launch); a restart resumes."""
    from gptnl.config import load_finetune_config
    from gptnl.finetune.loop import finetune

    cfg = load_finetune_config(config, [*overrides, *([f"max_steps={max_steps}"] if max_steps is not None else [])])
    code = finetune(cfg, base, data, out, show_progress=progress, universal=universal)
    if code:
        raise typer.Exit(code)
    if os.environ.get("RANK", "0") == "0":
        console.print(f"tuned model in {out / 'model'}")
