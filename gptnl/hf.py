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
from pydantic import ValidationError
from safetensors.torch import load_file, save_file

from gptnl import tokenizer as tokenizer_mod
from gptnl.artefacts import ModelInputs, ModelManifest, ModelOutputs, TokenizerRef, write_manifest
from gptnl.config import ModelConfig, RopeScaling
from gptnl.errors import GptnlError
from gptnl.fileio import atomic_write_json, replace_dir
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
        # the pre-5.0 name, which every transformers and vLLM release reads
        "rope_scaling": cfg.rope_scaling.model_dump(exclude_none=True) if cfg.rope_scaling else None,
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


SUPPORTED = "LlamaForCausalLM (model_type llama: RMSNorm, SwiGLU, GQA, no biases, RoPE plain, llama3 or linear)"


def _rope(config: dict, source: str) -> tuple[float, RopeScaling | None]:
    """rope_theta and scaling from either layout: `rope_theta` + `rope_scaling` (transformers < 5,
    what published checkpoints carry) or `rope_parameters` (transformers 5)."""
    params = dict(config.get("rope_parameters") or {})
    legacy = dict(config.get("rope_scaling") or {})
    theta = config.get("rope_theta") or params.pop("rope_theta", None) or 10000.0
    params.pop("rope_theta", None)
    scaling = legacy or params
    kind = scaling.pop("rope_type", None) or scaling.pop("type", None) or "default"
    scaling.pop("type", None)
    if kind == "default":
        return theta, None
    if kind not in ("llama3", "linear"):
        raise GptnlError(f"{source}: rope scaling {kind!r} is not supported; supported: {SUPPORTED}")
    try:
        return theta, RopeScaling(rope_type=kind, **scaling)
    except ValidationError as exc:
        raise GptnlError(f"{source}: rope scaling {kind}: {exc.errors()[0]['msg']}") from None


def model_config_from_hf(config: dict, source: str) -> ModelConfig:
    """Our ModelConfig of an HF Llama config.json; any other architecture is refused in one line."""
    arch = config.get("architectures") or []
    if config.get("model_type") != "llama" or (arch and arch != ["LlamaForCausalLM"]):
        got = ", ".join(arch) or config.get("model_type")
        raise GptnlError(f"{source}: {got} is not supported; supported: {SUPPORTED}")
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise GptnlError(f"{source}: attention or MLP biases are not supported; supported: {SUPPORTED}")
    if config.get("hidden_act", "silu") != "silu":
        raise GptnlError(f"{source}: hidden_act {config['hidden_act']!r} is not supported; supported: {SUPPORTED}")
    head_dim = config.get("head_dim")
    if head_dim and head_dim != config["hidden_size"] // config["num_attention_heads"]:
        raise GptnlError(f"{source}: head_dim {head_dim} is not hidden_size / num_attention_heads; "
                         f"supported: {SUPPORTED}")
    theta, scaling = _rope(config, source)
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
        rope_scaling=scaling,
        norm_eps=config.get("rms_norm_eps", 1e-5),
        tie_embeddings=config.get("tie_word_embeddings", False),
        init_std=config.get("initializer_range", 0.02),
    )


def read_hf_folder(path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """An HF Llama folder's config and weights (one `model.safetensors`, or shards listed by
    `model.safetensors.index.json`), in HF's tensor names and the file's dtype."""
    path = Path(path)
    config_file, index = path / "config.json", path / "model.safetensors.index.json"
    if index.is_file():
        try:
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError) as exc:
            raise GptnlError(f"{index}: not a safetensors index ({exc})") from None
    else:
        files = ["model.safetensors"]
    weights = [path / f for f in files]
    if not config_file.is_file() or not all(w.is_file() for w in weights):
        missing = next(str(w) for w in [config_file, *weights] if not w.is_file())
        raise GptnlError(f"{path}: not an HF model folder ({missing} not found; needs config.json and safetensors)")
    try:
        config = json.loads(config_file.read_text())
    except ValueError as exc:
        raise GptnlError(f"{config_file}: not JSON ({exc})") from None
    cfg = model_config_from_hf(config, str(path))
    state: dict[str, torch.Tensor] = {}
    for w in weights:
        try:
            state.update(load_file(str(w)))
        except Exception as exc:  # safetensors raises its own error types on a corrupt file
            raise GptnlError(f"{w}: cannot be read ({exc})") from None
    return cfg, state


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
        write_manifest(tmp, ModelManifest(
            consumed=ModelInputs(**(consumed or {}), tokenizer=TokenizerRef(
                path=str(Path(tokenizer_dir).resolve()), checksum=tok.checksum)),
            produced=ModelOutputs(format="LlamaForCausalLM", dtype=dtype,
                                  parameters=sum(t.numel() for t in tensors.values()), **(produced or {})),
            config=json.loads(cfg.model_dump_json())))
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def load_pretrained(path: Path, dtype: torch.dtype = torch.float32) -> Llama:
    """Our `Llama` from an HF Llama folder (ours, or any plain Llama checkpoint in safetensors)."""
    cfg, state = read_hf_folder(path)
    model = Llama(cfg)
    missing, unexpected = model.load_state_dict({k: v.to(dtype) for k, v in from_hf(state, cfg).items()}, strict=False)
    if missing or unexpected:
        raise GptnlError(f"{path}: tensors missing {missing} or unexpected {unexpected}")
    return model.to(dtype)
