"""The Llama model: shapes, causality, GQA, tied weights, parameter and FLOP counts."""

import pytest
import torch

from gptnl.config import ModelConfig
from gptnl.model import Llama


def cfg(**kw):
    base = dict(vocab_size=320, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=96, max_seq_len=32)
    return ModelConfig(**{**base, **kw})


def test_logits_shape_and_causality():
    torch.manual_seed(0)
    m = Llama(cfg()).eval()
    x = torch.randint(0, 320, (2, 16))
    y = x.clone()
    y[:, 10:] = torch.randint(0, 320, (2, 6))
    with torch.no_grad():
        a, b = m(x), m(y)
    assert a.shape == (2, 16, 320)
    assert torch.equal(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_gqa_has_fewer_kv_weights():
    m = Llama(cfg(n_kv_heads=2))
    att = m.layers[0].attention
    assert att.wqkv.weight.shape == ((4 + 2 + 2) * 16, 64)


def test_parameter_count_matches_formula():
    c = cfg(tie_embeddings=False)
    m = Llama(c)
    hd = c.dim // c.n_heads
    per_layer = c.dim * hd * (c.n_heads * 2 + c.kv_heads * 2) + 3 * c.dim * c.ffn_dim + 2 * c.dim
    expected = c.n_layers * per_layer + c.dim + 2 * c.vocab_size * c.dim
    assert m.num_params() == expected
    assert m.num_params(exclude_embeddings=True) == expected - c.vocab_size * c.dim


def test_tied_embeddings_share_storage_and_count_once():
    m = Llama(cfg(tie_embeddings=True))
    assert m.output.weight is m.tok_embeddings.weight
    untied = Llama(cfg(tie_embeddings=False))
    assert untied.num_params() - m.num_params() == 320 * 64


def test_flops_per_token_is_palm_formula():
    c = cfg()
    m = Llama(c)
    assert m.flops_per_token(32) == 6 * m.num_params(True) + 12 * c.n_layers * c.n_heads * (c.dim // c.n_heads) * 32


def test_rope_theta_changes_output():
    torch.manual_seed(0)
    a = Llama(cfg(rope_theta=10000.0)).eval()
    b = Llama(cfg(rope_theta=500000.0)).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randint(0, 320, (1, 16))
    with torch.no_grad():
        assert torch.equal(a(x)[:, 0], b(x)[:, 0])  # position 0 is not rotated
        assert not torch.allclose(a(x)[:, 5:], b(x)[:, 5:])


def test_activation_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    m = Llama(cfg())
    x = torch.randint(0, 320, (2, 16))
    m(x).sum().backward()
    ref = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    m.checkpoint_activations = True
    m(x).sum().backward()
    for g, r in zip((p.grad for p in m.parameters()), ref, strict=False):
        torch.testing.assert_close(g, r, rtol=0, atol=1e-6)


def test_rejects_too_long_sequences():
    with pytest.raises(ValueError, match="longer than max_seq_len"):
        Llama(cfg())(torch.zeros(1, 33, dtype=torch.long))
