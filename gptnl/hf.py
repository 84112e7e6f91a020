"""Export to and import from the Hugging Face `LlamaForCausalLM` folder layout.

The folder (config.json, model.safetensors, generation_config.json, tokenizer files) is what
`transformers` and vLLM load without any gptnl code. Our model computes what HF's Llama computes,
so export is a renaming of tensors; import is its inverse and round-trips bit for bit.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from gptnl import tokenizer as tokenizer_mod
from gptnl.config import ModelConfig
from gptnl.errors import GptnlError
from gptnl.fileio import atomic_write_json, replace_dir, write_manifest
from gptnl.model import Llama

# Our per-layer tensors → HF's; a fused tensor maps to several HF tensors stacked along dim 0.
_LAYER = {
    "attention.wqkv": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "attention.wo": ("self_attn.o_proj",),
    "feed_forward.w13": ("mlp.gate_proj", "mlp.up_proj"),
    "feed_forward.w2": ("mlp.down_proj",),
    "attention_norm": ("input_layernorm",),
    "ffn_norm": ("post_attention_layernorm",),
}
_TOP = {"tok_embeddings": "model.embed_tokens", "norm": "model.norm", "output": "lm_head"}
_OURS_LAYER = re.compile(r"^layers\.(\d+)\.(.+)\.weight$")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _sizes(cfg: ModelConfig, ours: str) -> list[int]:
    if ours == "attention.wqkv":
        return [cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim]
    if ours == "feed_forward.w13":
        return [cfg.ffn_dim, cfg.ffn_dim]
    return []


def to_hf(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    out = {}
    for name, t in state.items():
        if m := _OURS_LAYER.match(name):
            layer, ours = m.group(1), m.group(2)
            if ours not in _LAYER:
                raise GptnlError(f"unexpected tensor {name} in the model state")
            parts = t.split(_sizes(cfg, ours), dim=0) if len(_LAYER[ours]) > 1 else (t,)
            for hf_name, part in zip(_LAYER[ours], parts, strict=True):
                out[f"model.layers.{layer}.{hf_name}.weight"] = part
        elif name.endswith(".weight") and name[: -len(".weight")] in _TOP:
            out[_TOP[name[: -len(".weight")]] + ".weight"] = t
        else:
            raise GptnlError(f"unexpected tensor {name} in the model state")
    if cfg.tie_embeddings:
        out.pop("lm_head.weight", None)
    return out


def from_hf(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    top = {v: k for k, v in _TOP.items()}
    out, used = {}, set()
    for name, t in state.items():
        if name.endswith(".weight") and name[: -len(".weight")] in top:
            out[top[name[: -len(".weight")]] + ".weight"] = t
            used.add(name)
    for i in range(cfg.n_layers):
        for ours, hf_names in _LAYER.items():
            keys = [f"model.layers.{i}.{h}.weight" for h in hf_names]
            missing = [k for k in keys if k not in state]
            if missing:
                raise GptnlError(f"tensor {missing[0]} is missing: not a complete Llama model")
            fused = torch.cat([state[k] for k in keys], dim=0) if len(keys) > 1 else state[keys[0]]
            out[f"layers.{i}.{ours}.weight"] = fused
            used.update(keys)
    extra = sorted(set(state) - used)
    if extra:
        raise GptnlError(f"unexpected tensor {extra[0]}: not a plain Llama model")
    if cfg.tie_embeddings:
        out["output.weight"] = out["tok_embeddings.weight"]
    return out


def hf_config(cfg: ModelConfig, ids: dict[str, int | list[int]], dtype: str) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.ffn_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None,
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": cfg.init_std,
        "bos_token_id": ids["bos"],
        "eos_token_id": ids["eos"],
        "pad_token_id": ids["pad"],
        "torch_dtype": dtype,
        "use_cache": True,
    }


def model_config_from_hf(config: dict, source: str) -> ModelConfig:
    if config.get("model_type") != "llama":
        raise GptnlError(f"{source}: model_type is {config.get('model_type')!r}; only 'llama' models can be imported")
    if config.get("rope_scaling") or config.get("attention_bias") or config.get("mlp_bias"):
        raise GptnlError(f"{source}: rope scaling and biases are not supported by gptnl's Llama")
    theta = config.get("rope_theta") or (config.get("rope_parameters") or {}).get("rope_theta", 10000.0)
    return ModelConfig(
        name=Path(source).name,
        vocab_size=config["vocab_size"],
        dim=config["hidden_size"],
        n_layers=config["num_hidden_layers"],
        n_heads=config["num_attention_heads"],
        n_kv_heads=config.get("num_key_value_heads"),
        ffn_dim=config["intermediate_size"],
        max_seq_len=config.get("max_position_embeddings", 2048),
        rope_theta=theta,
        norm_eps=config.get("rms_norm_eps", 1e-5),
        tie_embeddings=config.get("tie_word_embeddings", False),
        init_std=config.get("initializer_range", 0.02),
    )


def save_pretrained(
    state: dict[str, torch.Tensor], cfg: ModelConfig, tokenizer_dir: Path, out: Path, *,
    dtype: str = "float32", consumed: dict | None = None, produced: dict | None = None,
) -> Path:
    """Write the HF folder `out` from our model's state dict and the tokenizer it was trained with."""
    if dtype not in DTYPES:
        raise GptnlError(f"--dtype {dtype!r}: allowed values are {', '.join(DTYPES)}")
    tok = tokenizer_mod.load(tokenizer_dir)
    if tok.vocab_size > cfg.vocab_size:
        raise GptnlError(f"tokenizer {tokenizer_dir} has {tok.vocab_size} tokens, the model only {cfg.vocab_size}")
    ids = {"bos": tok.id(tokenizer_mod.BOS), "eos": tok.eos_id, "pad": tok.id(tokenizer_mod.PAD)}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        tensors = {k: v.detach().to("cpu", DTYPES[dtype]).contiguous() for k, v in to_hf(state, cfg).items()}
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        atomic_write_json(tmp / "config.json", hf_config(cfg, ids, dtype))
        atomic_write_json(tmp / "generation_config.json", {
            "bos_token_id": ids["bos"],
            "eos_token_id": [ids["eos"], tok.id("<|end|>")],
            "pad_token_id": ids["pad"],
            "do_sample": True,
            "temperature": 0.8,
            "top_p": 0.95,
        })
        for name in tokenizer_mod.FILES:
            shutil.copy2(Path(tokenizer_dir) / name, tmp / name)
        write_manifest(
            tmp, stage="export",
            consumed={**(consumed or {}),
                      "tokenizer": {"path": str(Path(tokenizer_dir).resolve()), "checksum": tok.checksum}},
            produced={"format": "LlamaForCausalLM", "dtype": dtype,
                      "parameters": sum(t.numel() for t in tensors.values()), **(produced or {})},
            config=json.loads(cfg.model_dump_json()),
        )
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def load_pretrained(path: Path, dtype: torch.dtype = torch.float32) -> Llama:
    """Our `Llama` from an HF Llama folder (ours, or any plain Llama checkpoint in safetensors)."""
    path = Path(path)
    config_file, weights = path / "config.json", path / "model.safetensors"
    if not config_file.is_file() or not weights.is_file():
        raise GptnlError(f"{path}: not an HF model folder (needs config.json and model.safetensors)")
    cfg = model_config_from_hf(json.loads(config_file.read_text()), str(path))
    try:
        state = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error types on a corrupt file
        raise GptnlError(f"{weights}: cannot be read ({exc})") from None
    model = Llama(cfg)
    missing, unexpected = model.load_state_dict({k: v.to(dtype) for k, v in from_hf(state, cfg).items()}, strict=False)
    if missing or unexpected:
        raise GptnlError(f"{weights}: tensors missing {missing} or unexpected {unexpected}")
    return model.to(dtype)
