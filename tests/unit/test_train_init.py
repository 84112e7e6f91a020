"""Continued pre-training's checks, before any process starts: the base model's architecture against
the config (or the config from it), and its licence read from its card."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from gptnl.config import ModelConfig, TrainConfig
from gptnl.errors import ConfigError, GptnlError
from gptnl.train import init


def base_folder(tmp_path, vocab_size=512, **extra):
    config = transformers.LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                      tie_word_embeddings=False, **extra)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(str(tmp_path / "base"), safe_serialization=True)
    return tmp_path / "base"


def test_the_model_comes_from_the_base_when_the_config_leaves_it_out(tmp_path):
    base = base_folder(tmp_path)
    cfg = TrainConfig(init_from=base, max_steps=1)
    model = init.model_config(cfg, tokenizer_vocab=500)
    assert (model.vocab_size, model.dim, model.kv_heads, model.tie_embeddings) == (512, 64, 2, False)


def test_a_config_that_differs_from_the_base_is_refused_naming_each_field(tmp_path):
    base = base_folder(tmp_path)
    mine = ModelConfig(dim=64, n_layers=3, n_heads=4, n_kv_heads=4, ffn_dim=160, tie_embeddings=False, norm_eps=1e-6)
    with pytest.raises(ConfigError) as err:
        init.model_config(TrainConfig(model=mine, init_from=base, max_steps=1), tokenizer_vocab=500)
    listed = str(err.value).split("differs from the base model: ")[1].split(" (leave")[0].split("; ")
    assert listed == ["n_layers 3 vs 2", "kv_heads 4 vs 2"]  # the fields that agree are not listed


def test_a_config_without_a_vocabulary_takes_the_bases_exactly(tmp_path):
    base = base_folder(tmp_path, vocab_size=520)  # not a multiple of 64: no rounding up against the base
    mine = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=160, tie_embeddings=False, norm_eps=1e-6)
    cfg = TrainConfig(model=mine, init_from=base, max_steps=1)
    assert init.model_config(cfg, tokenizer_vocab=500).vocab_size == 520


def test_a_tokenizer_larger_than_the_base_vocabulary_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="smaller than the tokenizer's 600 tokens"):
        init.model_config(TrainConfig(init_from=base_folder(tmp_path), max_steps=1), tokenizer_vocab=600)


def test_a_training_config_needs_a_model_or_a_base():
    with pytest.raises(ValueError, match="or give init_from"):
        TrainConfig(max_steps=1)


def test_lineage_names_path_weights_and_licence(tmp_path):
    base = base_folder(tmp_path)
    (base / "README.md").write_text("---\nlicense: apache-2.0\n---\n# Salamandra-like\nlicense: mit\n")
    found = init.lineage(TrainConfig(init_from=base, max_steps=1))
    assert found["path"] == str(base.resolve()) and found["licence"] == "apache-2.0"
    assert len(found["fingerprint"]) == 16  # one safetensors file
    (base / "README.md").unlink()
    assert init.lineage(TrainConfig(init_from=base, max_steps=1))["licence"] is None


def test_a_base_of_another_architecture_is_refused_in_one_line(tmp_path):
    base = tmp_path / "mistral"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": "mistral", "architectures": ["MistralForCausalLM"]}))
    with pytest.raises(GptnlError, match="MistralForCausalLM is not supported; supported: LlamaForCausalLM"):
        init.model_config(TrainConfig(init_from=base, max_steps=1), tokenizer_vocab=500)


def test_shards_of_an_extended_tokenizer_are_allowed_only_on_the_base_it_extends(tmp_path):
    from gptnl import tokenizer as tokenizer_mod
    from gptnl import tokenizer_extend

    base = base_folder(tmp_path)
    texts = ["de gemeente en de provincie", "het waterschap en de gemeente"] * 20
    tokenizer_mod.train(texts, 270, tmp_path / "tok")
    (base / "tokenizer.json").write_bytes((tmp_path / "tok" / "tokenizer.json").read_bytes())
    ext = tokenizer_extend.extend(base, texts, 8, tmp_path / "nl")
    cfg = TrainConfig(init_from=base, max_steps=1)
    packed = {"path": str(tmp_path / "nl"), "checksum": ext.checksum}
    assert init.check_tokenizer(cfg, packed) == ext
    assert init.model_config(cfg, ext.vocab_size, ext).vocab_size == 512  # the base's 512 rows hold them
    assert init.check_tokenizer(cfg, {"path": str(base), "checksum": tokenizer_mod.checksum(base)}) is None
    (base / "tokenizer.json").write_text((base / "tokenizer.json").read_text() + "\n")  # now another base
    with pytest.raises(ConfigError, match="extends another base's tokenizer"):
        init.check_tokenizer(cfg, packed)
    with pytest.raises(ConfigError, match="packed with another tokenizer .* or with one made from it by"):
        init.check_tokenizer(cfg, {"path": str(tmp_path / "tok"), "checksum": "0" * 64})
