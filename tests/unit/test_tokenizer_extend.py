"""`gptnl tokenizer extend`: Dutch tokens appended to a base BPE tokenizer (a byte-level one like
Llama 3's and EuroLLM's, and a converted SentencePiece one with byte fallback like Llama 2's and
Mistral's), every base id kept, texts decoded as before and never longer; the new embedding rows
start as the mean of their pieces' rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from gptnl import tokenizer as tokenizer_mod
from gptnl import tokenizer_extend as ext_mod
from gptnl.errors import GptnlError
from gptnl.fileio import iter_jsonl

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data_pipeline" / "sample"
HELDOUT = (SAMPLE / "heldout" / "nl-heldout.txt").read_text(encoding="utf-8")


def sample_texts() -> list[str]:
    return [d["text"] for f in sorted(SAMPLE.glob("*.jsonl")) if f.name != "canaries.jsonl" for d in iter_jsonl(f)]


@pytest.fixture(scope="module")
def byte_level(tmp_path_factory) -> tuple[Path, Path, ext_mod.VocabExtension]:
    """A small byte-level base that has seen little Dutch, extended by 300 tokens on the sample."""
    work = tmp_path_factory.mktemp("bytelevel")
    texts = sample_texts()
    tokenizer_mod.train(texts[: len(texts) // 4], 600, work / "base")
    return work / "base", work / "nl", ext_mod.extend(work / "base", texts, 300, work / "nl")


@pytest.fixture(scope="module")
def sentencepiece_style(tmp_path_factory) -> tuple[Path, Path, ext_mod.VocabExtension]:
    """A base in the shape `transformers` converts Llama 2's SentencePiece model to: no pre-tokenizer,
    a normaliser that turns spaces into "▁", byte fallback for characters it lacks."""
    work = tmp_path_factory.mktemp("sp")
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    bytes_ = [f"<0x{i:02X}>" for i in range(256)]
    texts = sample_texts()
    tok.train_from_iterator(texts[: len(texts) // 4], trainers.BpeTrainer(
        vocab_size=800, special_tokens=["<unk>", "<s>", "</s>", *bytes_], show_progress=False))
    data = json.loads(tok.to_str())
    data["pre_tokenizer"] = None
    data["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                                                               {"type": "Replace", "pattern": {"String": " "},
                                                                "content": "▁"}]}
    data["decoder"] = json.loads(Tokenizer(models.BPE()).to_str())["decoder"]  # replaced below
    (work / "base").mkdir()
    base = Tokenizer.from_str(json.dumps(data))
    base.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                      decoders.Strip(" ", 1, 0)])
    base.save(str(work / "base" / "tokenizer.json"))
    return work / "base", work / "nl", ext_mod.extend(work / "base", texts, 200, work / "nl")


def load(path: Path) -> Tokenizer:
    return Tokenizer.from_file(str(path / "tokenizer.json"))


@pytest.mark.parametrize("case", ["byte_level", "sentencepiece_style"])
def test_every_base_id_is_kept_and_the_new_ids_follow_it(case, request):
    base_dir, out, ext = request.getfixturevalue(case)
    base, extended = load(base_dir), load(out)
    base_vocab, vocab = base.get_vocab(), extended.get_vocab()
    assert all(vocab[t] == i for t, i in base_vocab.items())
    assert [a.id for a in ext.added] == list(range(ext.base_vocab_size, ext.vocab_size))
    assert ext.base_vocab_size == max(base_vocab.values()) + 1 and extended.get_vocab_size() == ext.vocab_size
    assert all(vocab[a.token] == a.id and a.id not in a.parts and len(a.parts) >= 2 for a in ext.added)
    assert not any(a.token.startswith("<0x") for a in ext.added)  # byte-fallback pieces are no text
    assert not any(mark in a.token[1:] for a in ext.added for mark in "▁Ġ")  # within one word, as the base's
    stored = ext_mod.read_extension(out)
    assert stored == ext and stored.base_checksum == tokenizer_mod.checksum(base_dir)
    assert stored.checksum == tokenizer_mod.checksum(out)


@pytest.mark.parametrize("case", ["byte_level", "sentencepiece_style"])
def test_held_out_dutch_takes_fewer_tokens_and_the_new_tokens_are_used(case, request):
    base_dir, out, ext = request.getfixturevalue(case)
    base, extended = load(base_dir), load(out)
    before = sum(len(base.encode(line).ids) for line in HELDOUT.splitlines())
    after = sum(len(extended.encode(line).ids) for line in HELDOUT.splitlines())
    assert after < 0.95 * before, (before, after)
    used = {i for line in HELDOUT.splitlines() for i in extended.encode(line).ids}
    assert len(used & {a.id for a in ext.added}) > len(ext.added) // 3


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=80) | st.sampled_from(HELDOUT.splitlines()))
def test_any_text_decodes_as_the_base_decodes_it_and_is_never_longer(byte_level, sentencepiece_style, text):
    for base_dir, out, _ in (byte_level, sentencepiece_style):
        base, extended = load(base_dir), load(out)
        theirs, ours = base.encode(text).ids, extended.encode(text).ids
        assert extended.decode(ours) == base.decode(theirs)
        assert len(ours) <= len(theirs)


def test_the_cli_extends_and_the_report_compares_with_the_base(byte_level, tmp_path):
    from typer.testing import CliRunner

    from gptnl.cli import app

    base_dir, _, _ = byte_level
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "nl.jsonl").write_text((SAMPLE / "gemeente-en-faq.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    runner = CliRunner()
    res = runner.invoke(app, ["tokenizer", "extend", str(base_dir), str(corpus), "--add", "50", "--out",
                              str(tmp_path / "nl")])
    assert res.exit_code == 0, res.output
    assert "50 tokens added (ids 600–649)" in res.output
    res = runner.invoke(app, ["tokenizer", "report", str(tmp_path / "nl"), "--text",
                              str(SAMPLE / "heldout" / "nl-heldout.txt")], terminal_width=200)
    assert res.exit_code == 0, res.output
    row = next(line for line in res.output.splitlines() if "fertility" in line)
    before, after = (float(x) for x in row.replace("│", " ").split()[1:3])
    assert after < before
    assert json.loads((tmp_path / "nl" / "manifest.json").read_text())["consumed"]["corpus"] == str(corpus)


def test_only_bpe_tokenizers_are_extended_and_a_corpus_without_new_pairs_says_so(tmp_path, byte_level):
    wordpiece = Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    (tmp_path / "wp").mkdir()
    wordpiece.save(str(tmp_path / "wp" / "tokenizer.json"))
    with pytest.raises(GptnlError, match="a WordPiece tokenizer; only BPE tokenizers"):
        ext_mod.extend(tmp_path / "wp", ["a a a"], 5, tmp_path / "out")
    with pytest.raises(GptnlError, match="no tokenizer.json"):
        ext_mod.extend(tmp_path, ["a"], 5, tmp_path / "out")
    (tmp_path / "broken").mkdir()
    for bad in (b'{"model": {"type": "BPE"', b"\xff\xfe not text", b'{"model": {"type": "BPE", "vocab": 3}}'):
        (tmp_path / "broken" / "tokenizer.json").write_bytes(bad)
        with pytest.raises(GptnlError, match="tokenizer.json: cannot be loaded"):
            ext_mod.extend(tmp_path / "broken", ["a"], 5, tmp_path / "out")
    with pytest.raises(GptnlError, match="no pair seen 2 times"):
        ext_mod.extend(byte_level[0], ["xq"], 5, tmp_path / "out")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / ext_mod.EXTENSION).write_text('{"base": 1}')
    with pytest.raises(GptnlError, match="not a vocabulary extension record"):
        ext_mod.read_extension(tmp_path / "bad")


def test_new_rows_start_as_the_mean_of_their_pieces(byte_level):
    _, _, ext = byte_level
    torch.manual_seed(0)
    weight = torch.randn(ext.base_vocab_size, 8)
    grown = ext_mod.extend_rows(weight, ext, ext.vocab_size + 12)
    assert grown.shape == (ext.vocab_size + 12, 8) and torch.equal(grown[: ext.base_vocab_size], weight)
    for a in ext.added:
        assert torch.allclose(grown[a.id], weight[a.parts].mean(0))
    assert torch.allclose(grown[-1], weight.mean(0))  # a padding row
    with pytest.raises(GptnlError, match="599 embedding rows, fewer than the 600 ids"):
        ext_mod.extend_rows(weight[:-1], ext, ext.vocab_size)
    padded = torch.randn(ext.base_vocab_size + 40, 8)  # a base whose matrix is padded past its tokenizer
    grown = ext_mod.extend_rows(padded, ext, 960)
    assert grown.shape == (960, 8) and torch.equal(grown[:600], padded[:600])
    assert all(torch.allclose(grown[a.id], padded[a.parts].mean(0)) for a in ext.added)
    assert torch.allclose(grown[-1], padded[:600].mean(0))
