"""The tuned model as HF folders vLLM and `transformers` load unchanged.

Full fine-tuning writes `model/`. LoRA writes `adapter/` (peft's format) and `model/`, the base
with the adapter merged in, built from the saved adapter and a fresh copy of the base so that
what is served is exactly what a user could rebuild from the two. Folders are written to a
temporary name and swapped into place.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch

from gptnl.artefacts import SftInputs, SftManifest, SftOutputs, manifest_or_none, write_manifest
from gptnl.config import FinetuneConfig
from gptnl.fileio import atomic_write_json, replace_dir, sha256_file
from gptnl.modelcard import write_model_card


def _generation_config(tokenizer, base: Path) -> dict:
    config = json.loads((base / "generation_config.json").read_text()) if (base / "generation_config.json").is_file() \
        else {}
    eos = config.get("eos_token_id", tokenizer.eos_token_id)
    eos = list(eos) if isinstance(eos, list) else [eos]
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    if end is not None and end != tokenizer.unk_token_id and end not in eos:
        eos.append(end)  # the chat template ends every turn with <|end|>
    return {**config, "eos_token_id": eos, "pad_token_id": tokenizer.pad_token_id}


def _write(folder_out: Path, fill) -> Path:
    folder_out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder_out.parent, prefix=f".{folder_out.name}."))
    try:
        fill(tmp)
        replace_dir(tmp, folder_out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder_out


def export(acc, model, tokenizer, cfg: FinetuneConfig, base: Path, out: Path, data: dict, evals: dict) -> Path:
    """Write `out/model` (and `out/adapter` for LoRA); every rank must call this (ZeRO-3 gathers)."""
    state = acc.get_state_dict(model)
    acc.wait_for_everyone()
    if acc.is_main_process:
        unwrapped = acc.unwrap_model(model)
        base_manifest = manifest_or_none(Path(base))
        consumed = SftInputs(base=str(Path(base).resolve()), data=data,
                             base_manifest=base_manifest.created if base_manifest else None)
        if cfg.method == "lora":
            _write(out / "adapter", lambda tmp: unwrapped.save_pretrained(tmp, state_dict=state))
            _write(out / "model", lambda tmp: _merged(base, out / "adapter", tokenizer, tmp))
        else:
            _write(out / "model", lambda tmp: unwrapped.save_pretrained(tmp, state_dict=state,
                                                                        safe_serialization=True))
        model_dir = out / "model"
        tokenizer.save_pretrained(model_dir)
        atomic_write_json(model_dir / "generation_config.json", _generation_config(tokenizer, Path(base)))
        weights = {p.name: sha256_file(p) for p in sorted(model_dir.glob("*.safetensors"))}
        write_manifest(model_dir, SftManifest(
            consumed=consumed, produced=SftOutputs(method=cfg.method, steps=cfg.max_steps, weights=weights, **evals),
            config=json.loads(cfg.model_dump_json())))
        write_model_card(model_dir)
    acc.wait_for_everyone()
    return out / "model"


@contextmanager
def _without_zero3_init():
    """Under ZeRO-3, transformers builds every model sharded across the ranks (collectives); the
    merged copy is built on one rank, so it must be built as a plain model."""
    from transformers.integrations import deepspeed as hf_deepspeed

    saved = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved


def _merged(base: Path, adapter: Path, tokenizer, tmp: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    with _without_zero3_init():
        model = AutoModelForCausalLM.from_pretrained(base, local_files_only=True, dtype=torch.float32)
        if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:  # role tokens were added for training
            model.resize_token_embeddings(len(tokenizer))
        merged = PeftModel.from_pretrained(model, adapter, local_files_only=True).merge_and_unload()
        merged.save_pretrained(tmp, safe_serialization=True)
