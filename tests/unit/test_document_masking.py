"""Document masking: a packed sequence of documents trains as if each document were alone."""

import torch
import torch.nn.functional as F

from gptnl.config import ModelConfig
from gptnl.model import Llama, attend, document_ids, document_mask

EOS = 1


def model() -> Llama:
    torch.manual_seed(0)
    return Llama(ModelConfig(vocab_size=320, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=96,
                             max_seq_len=64))


def docs() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return [torch.cat([torch.randint(2, 320, (n,), generator=g), torch.tensor([EOS])]) for n in (9, 20, 5)]


def token_losses(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits[0, :-1].float(), tokens[0, 1:], reduction="none")


def test_an_eos_ends_its_document():
    tokens = torch.tensor([[5, 6, EOS, 7, EOS, 8, 9]])
    assert document_ids(tokens, EOS).tolist() == [[0, 0, 0, 1, 1, 2, 2]]


def test_packed_documents_get_the_loss_and_gradients_they_get_alone():
    m = model()
    parts = docs()
    packed = torch.cat(parts).unsqueeze(0)
    logits = m(packed, document_ids(packed, EOS))
    start, alone_total = 0, 0.0
    for part in parts:
        alone = m(part.unsqueeze(0))
        together = logits[:, start:start + len(part)]
        assert torch.allclose(together, alone, atol=1e-5), (together - alone).abs().max()
        alone_total = alone_total + token_losses(alone, part.unsqueeze(0)).sum()
        start += len(part)
    # without the mask, later documents see earlier ones
    plain = m(packed)
    assert not torch.allclose(plain[:, len(parts[0]):], logits[:, len(parts[0]):], atol=1e-3)
    # gradients: within-document losses, packed and masked, equal the documents' losses alone
    inside = torch.ones(packed.shape[1] - 1, dtype=torch.bool)
    inside[torch.cumsum(torch.tensor([len(p) for p in parts]), 0)[:-1] - 1] = False  # EOS -> next doc's first
    packed_total = token_losses(logits, packed)[inside].sum()
    assert torch.allclose(packed_total, alone_total, rtol=1e-5)
    grads = []
    for total in (packed_total, alone_total):
        m.zero_grad()
        total.backward(retain_graph=True)
        grads.append(m.layers[0].attention.wqkv.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_the_cuda_block_mask_selects_what_the_cpu_mask_selects():
    """FlexAttention's forward runs on the CPU (its backward does not), so the block mask the
    trainer builds on CUDA can be checked here against the boolean SDPA mask."""
    torch.manual_seed(1)
    tokens = torch.cat(docs()).unsqueeze(0).repeat(2, 1)
    tokens[1] = tokens[1].roll(7)
    ids = document_ids(tokens, EOS)
    q, k, v = torch.randn(2, 4, tokens.shape[1], 16), torch.randn(2, 2, tokens.shape[1], 16), \
        torch.randn(2, 2, tokens.shape[1], 16)
    flex = attend(q, k, v, document_mask(ids, flex=True), gqa=True)
    sdpa = attend(q, k, v, document_mask(ids, flex=False), gqa=True)
    assert torch.allclose(flex, sdpa, atol=1e-5)
