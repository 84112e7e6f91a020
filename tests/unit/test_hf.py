"""HF export: transformers computes our logits, and export → import is lossless."""

import json

import pytest
import torch
import transformers
from safetensors.torch import load_file

from gptnl import tokenizer as tokenizer_mod
from gptnl.config import ModelConfig
from gptnl.errors import GptnlError
from gptnl.hf import load_pretrained, save_pretrained
from gptnl.model import Llama

DUTCH = ("De gemeenteraad van Zuiderveen heeft op dinsdagavond ingestemd met de bouw van "
         "een nieuwe fietsbrug over de rivier. Wethouder Jansen verwacht dat de brug in 2027 klaar is.")


def random_model(tie: bool, kv: int, theta: float) -> Llama:
    torch.manual_seed(3)
    cfg = ModelConfig(name="t", vocab_size=2048, dim=128, n_layers=3, n_heads=8, n_kv_heads=kv, ffn_dim=352,
                      max_seq_len=256, rope_theta=theta, tie_embeddings=tie)
    m = Llama(cfg)
    with torch.no_grad():  # non-trivial norms so a swapped norm would show
        for name, p in m.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    return m.eval()


@pytest.mark.parametrize("tie, kv, theta", [(True, 2, 10000.0), (False, 8, 500000.0)])
def test_transformers_logits_equal_ours(tmp_path, sample_tokenizer, tie, kv, theta):
    ours = random_model(tie, kv, theta)
    out = save_pretrained(ours.state_dict(), ours.cfg, sample_tokenizer, tmp_path / "model")
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(out))
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    ids = hf_tok(DUTCH, return_tensors="pt").input_ids
    assert ids.shape[1] > 30
    with torch.no_grad():
        theirs, mine = hf(ids).logits, ours(ids)
    assert (theirs - mine).abs().max().item() < 1e-5
    assert mine.abs().max().item() > 0.1  # the comparison is not between two near-zero tensors


def test_round_trip_is_lossless(tmp_path, sample_tokenizer):
    ours = random_model(True, 2, 10000.0)
    first = save_pretrained(ours.state_dict(), ours.cfg, sample_tokenizer, tmp_path / "a")
    back = load_pretrained(first)
    for (k1, v1), (k2, v2) in zip(ours.state_dict().items(), back.state_dict().items(), strict=False):
        assert k1 == k2 and torch.equal(v1, v2)
    second = save_pretrained(back.state_dict(), back.cfg, sample_tokenizer, tmp_path / "b")
    a, b = load_file(str(first / "model.safetensors")), load_file(str(second / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "lm_head.weight" not in a  # tied: stored once, as HF does


def test_export_files_and_config(tmp_path, sample_tokenizer):
    ours = random_model(False, 8, 10000.0)
    out = save_pretrained(ours.state_dict(), ours.cfg, sample_tokenizer, tmp_path / "m", dtype="bfloat16")
    for name in ("config.json", "model.safetensors", "generation_config.json", *tokenizer_mod.FILES):
        assert (out / name).is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["num_key_value_heads"] == 8
    assert config["torch_dtype"] == "bfloat16"
    assert load_file(str(out / "model.safetensors"))["model.embed_tokens.weight"].dtype == torch.bfloat16
    gen = json.loads((out / "generation_config.json").read_text())
    tok = tokenizer_mod.load(sample_tokenizer)
    assert gen["eos_token_id"] == [tok.eos_id, tok.id("<|end|>")]


@pytest.mark.parametrize("config", [
    {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]},
    {"model_type": "mistral", "architectures": ["MistralForCausalLM"]},
    {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_attention_heads": 4,
     "rope_scaling": {"rope_type": "yarn", "factor": 4.0}},
    {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_attention_heads": 4,
     "mlp_bias": True},
])
def test_import_refuses_other_architectures_in_one_line(tmp_path, config):
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(GptnlError, match=r"not supported; supported: LlamaForCausalLM") as err:
        load_pretrained(tmp_path)
    assert "\n" not in str(err.value)


# a config shaped like Salamandra-2B's and EuroLLM-1.7B's (Llama, GQA, untied embeddings, long RoPE
# base), cut down; rope scaling as Llama 3.1 publishes it, and linear
BASE_SHAPED = dict(vocab_size=640, hidden_size=96, intermediate_size=256, num_hidden_layers=3, num_attention_heads=6,
                   num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-5,
                   tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 64}


@pytest.mark.parametrize("scaling, layout", [(LLAMA3, "rope_parameters"), (LLAMA3, "rope_scaling"),
                                             ({"type": "linear", "factor": 4.0}, "rope_scaling")])
def test_a_base_model_with_rope_scaling_and_shards_loads_with_equal_logits(tmp_path, scaling, layout):
    torch.manual_seed(11)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        **BASE_SHAPED, rope_parameters={**scaling, "rope_type": scaling.get("rope_type", "linear"),
                                        "rope_theta": 500000.0})).eval()
    hf.save_pretrained(str(tmp_path), safe_serialization=True, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()  # sharded, as published checkpoints are
    if layout == "rope_scaling":  # the transformers < 5 layout that published configs carry
        config = json.loads((tmp_path / "config.json").read_text())
        params = config.pop("rope_parameters")
        config["rope_theta"] = params.pop("rope_theta")
        config["rope_scaling"] = scaling
        (tmp_path / "config.json").write_text(json.dumps(config))
    ours = load_pretrained(tmp_path).eval()
    assert ours.cfg.rope_scaling.rope_type == scaling.get("rope_type", "linear") and not ours.cfg.tie_embeddings
    ids = torch.randint(0, 640, (2, 300))  # past original_max_position_embeddings, where scaling matters
    with torch.no_grad():
        theirs, mine = hf(ids).logits, ours(ids)
    assert (theirs - mine).abs().max().item() < 1e-5 and mine.abs().max().item() > 0.1
    unscaled = Llama(ours.cfg.model_copy(update={"rope_scaling": None}))
    unscaled.load_state_dict(ours.state_dict())
    with torch.no_grad():
        assert (unscaled.eval()(ids) - theirs).abs().max().item() > 1e-3  # the scaling is not a no-op here


def test_export_keeps_the_base_rope_scaling(tmp_path, sample_tokenizer):
    torch.manual_seed(2)
    cfg = ModelConfig(name="t", vocab_size=2048, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=160,
                      max_seq_len=512, rope_scaling=LLAMA3)
    ours = Llama(cfg).eval()
    out = save_pretrained(ours.state_dict(), cfg, sample_tokenizer, tmp_path / "m")
    assert json.loads((out / "config.json").read_text())["rope_scaling"] == LLAMA3
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    ids = torch.randint(0, 2048, (1, 400))
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids)).abs().max().item() < 1e-5
    assert load_pretrained(out).cfg == cfg.model_copy(update={"name": "m"})


def test_import_reports_corrupt_weights(tmp_path, sample_tokenizer):
    ours = random_model(True, 2, 10000.0)
    out = save_pretrained(ours.state_dict(), ours.cfg, sample_tokenizer, tmp_path / "m")
    (out / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(GptnlError, match="cannot be read"):
        load_pretrained(out)


def test_imports_a_llama_saved_by_transformers(tmp_path):
    """Import is not only the inverse of our export: a folder written by transformers itself loads too."""
    torch.manual_seed(5)
    config = transformers.LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                      rope_theta=50000.0, tie_word_embeddings=False)
    hf = transformers.LlamaForCausalLM(config).eval()
    hf.save_pretrained(str(tmp_path), safe_serialization=True)
    ours = load_pretrained(tmp_path).eval()
    ids = torch.randint(0, 512, (2, 40))
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids)).abs().max().item() < 1e-5
