"""Where a run's weights start: a fresh initialisation, or an open base model (continued
pre-training, `init_from`: a local Hugging Face `LlamaForCausalLM` folder such as Salamandra's or
EuroLLM's). The base is checked before any step runs: its architecture against the config (or the
config is read from it), its tokenizer against the shards', so a run never trains a model on token
ids that mean something else to it. Shards of a tokenizer that extends the base's
(`gptnl tokenizer extend`) are allowed: the model grows to the extended vocabulary and each new
embedding row starts as the mean of its pieces' rows (`gptnl.tokenizer_extend`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from gptnl.config import ModelConfig, TrainConfig
from gptnl.errors import ConfigError
from gptnl.fileio import weights_fingerprint
from gptnl.tokenizer import checksum as tokenizer_checksum
from gptnl.tokenizer_extend import VocabExtension, extend_rows, read_extension

# the fields that must agree between a config's model and the base's; max_seq_len and name may differ
ARCHITECTURE = ("vocab_size", "dim", "n_layers", "n_heads", "kv_heads", "ffn_dim", "rope_theta", "rope_scaling",
                "norm_eps", "tie_embeddings")


def model_config(cfg: TrainConfig, tokenizer_vocab: int, extension: VocabExtension | None = None) -> ModelConfig:
    """The run's model: the config's, checked against the base when there is one, or the base's.
    With a vocabulary extension, the base's vocabulary grows to the extended tokenizer's."""
    if cfg.init_from is None:
        return cfg.model.with_vocab(tokenizer_vocab)
    from gptnl.hf import model_config_from_hf

    base_dir = Path(cfg.init_from)
    config_file = base_dir / "config.json"
    if not config_file.is_file():
        raise ConfigError(f"init_from {base_dir}: not an HF model folder (no config.json)")
    base = model_config_from_hf(json.loads(config_file.read_text()), str(base_dir))
    if extension is not None:  # rounded up to 64 like a fresh model's; a base padded further keeps its rows
        grown = -(-extension.vocab_size // 64) * 64
        base = base.model_copy(update={"vocab_size": max(base.vocab_size, grown)})
    if cfg.model is None:
        return base.with_vocab(tokenizer_vocab)
    mine = cfg.model.model_copy(update={"vocab_size": base.vocab_size}) if cfg.model.vocab_size is None else cfg.model
    differ = [f"{f} {getattr(mine, f)!r} vs {getattr(base, f)!r}" for f in ARCHITECTURE
              if getattr(mine, f) != getattr(base, f)]
    if differ:
        raise ConfigError(f"init_from {base_dir}: the config's model differs from the base model: {'; '.join(differ)} "
                          "(leave `model:` out to take the base's)")
    return mine.with_vocab(tokenizer_vocab)


def check_tokenizer(cfg: TrainConfig, shards_tokenizer: dict) -> VocabExtension | None:
    """Refuse shards packed with another tokenizer than the base model's own, or than one that
    extends it; the extension, when the shards' tokenizer is one."""
    if cfg.init_from is None:
        return None
    theirs = Path(cfg.init_from) / "tokenizer.json"
    if not theirs.is_file():
        raise ConfigError(f"init_from {cfg.init_from}: no tokenizer.json, so the shards' tokenizer cannot be checked "
                          "against the base model's")
    base_checksum = tokenizer_checksum(Path(cfg.init_from))
    if base_checksum == shards_tokenizer["checksum"]:
        return None
    ext = read_extension(Path(shards_tokenizer["path"]))
    if ext is not None and ext.checksum == shards_tokenizer["checksum"]:
        if ext.base_checksum == base_checksum:
            return ext
        raise ConfigError(f"init_from {cfg.init_from}: the shards' tokenizer ({shards_tokenizer['path']}) extends "
                          f"another base's tokenizer ({ext.base}); extend this base's tokenizer.json")
    raise ConfigError(f"init_from {cfg.init_from}: the shards were packed with another tokenizer "
                      f"({shards_tokenizer['path']}); pack the corpus with the base model's tokenizer.json, or with "
                      "one made from it by `gptnl tokenizer extend`")


def load_base(model: torch.nn.Module, cfg: TrainConfig, extension: VocabExtension | None = None) -> None:
    """Copy the base model's weights into `model` (built from `model_config`), in its dtype; with an
    extension, the embedding (and untied output) rows of the new tokens start as their pieces' mean."""
    from gptnl.hf import from_hf, read_hf_folder

    base_cfg, state = read_hf_folder(Path(cfg.init_from))
    ours = from_hf(state, base_cfg)
    if extension is not None:
        rows = model.tok_embeddings.weight.shape[0]
        grown = {name: extend_rows(ours[name].float(), extension, rows)
                 for name in {"tok_embeddings.weight", "output.weight"} if name in ours}
        if base_cfg.tie_embeddings:
            grown["output.weight"] = grown["tok_embeddings.weight"]
        ours.update(grown)
    with torch.no_grad():
        missing, unexpected = model.load_state_dict({k: v.float() for k, v in ours.items()}, strict=False)
    if missing or unexpected:
        raise ConfigError(f"init_from {cfg.init_from}: tensors missing {missing} or unexpected {unexpected}")


def lineage(cfg: TrainConfig) -> dict | None:
    """The base model as the run's manifest and the model card name it: path, weights fingerprint,
    licence (from its README's front matter, when it has one)."""
    if cfg.init_from is None:
        return None
    base = Path(cfg.init_from)
    licence = None
    readme = base / "README.md"
    if readme.is_file():
        head = readme.read_text(encoding="utf-8", errors="replace").split("\n---", 1)[0]
        if m := re.search(r"^license:\s*(\S+)", head, re.M):
            licence = m.group(1).strip("'\"")
    return {"path": str(base.resolve()), "fingerprint": weights_fingerprint(base), "licence": licence}
