"""`gptnl export`: the newest intact checkpoint of a run as an HF model folder."""

from __future__ import annotations

from pathlib import Path

import torch

from gptnl.config import ModelConfig
from gptnl.errors import CheckpointError
from gptnl.hf import save_pretrained
from gptnl.modelcard import write_model_card
from gptnl.train.loop import shards_of_run
from gptnl.trainer import checkpoint as ckpt
from gptnl.trainer import distributed as dist_env
from gptnl.trainer.metrics import read_metrics


def fp32_weights(run_dir: Path, info: ckpt.CheckpointInfo) -> dict[str, torch.Tensor]:
    """Consolidated fp32 weights: ZeRO-1/2/3 from the fp32 optimizer partitions, ZeRO-0 from the module."""
    if info.meta.get("zero_stage", 0) == 0:
        states = info.path / "mp_rank_00_model_states.pt"
        try:
            module = torch.load(states, map_location="cpu", weights_only=False)["module"]
        except Exception as exc:  # a truncated pickle raises a variety of errors
            raise CheckpointError(f"{states}: cannot be read ({exc})") from None
        return {k: v.float() for k, v in module.items()}
    dist_env.import_deepspeed()
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return dict(get_fp32_state_dict_from_zero_checkpoint(str(run_dir), tag=info.tag))


def export_run(run_dir: Path, out: Path, *, dtype: str = "float32") -> Path:
    run_dir = Path(run_dir)
    run = shards_of_run(run_dir)
    info = ckpt.newest_complete(run_dir)
    if info is None:
        raise CheckpointError(f"{run_dir}: no complete checkpoint to export")
    cfg = ModelConfig.model_validate(run["train"]["model"])
    state = fp32_weights(run_dir, info)
    if cfg.tie_embeddings:
        state.setdefault("output.weight", state["tok_embeddings.weight"])
    last = [r for r in read_metrics(run_dir) if r["step"] <= info.step]
    losses = [r for r in last if "loss" in r]
    vals = [r for r in last if "val_loss" in r]
    produced = {
        "step": info.step,
        "train_loss": losses[-1]["loss"] if losses else None,
        "val_loss": vals[-1]["val_loss"] if vals else None,
    }
    path = save_pretrained(
        state, cfg, Path(run["tokenizer"]["path"]), out, dtype=dtype,
        consumed={"run_dir": str(run_dir.resolve()), "checkpoint": info.tag, "shards": run["shards"],
                  **({"base_model": run["base_model"]} if run.get("base_model") else {})},
        produced=produced,
    )
    write_model_card(path)
    return path
