"""The Dutch tokenizer: loads in transformers, renders the chat template, splits digits, NFC."""

import json
import os
import subprocess
import sys
import unicodedata

import pytest
import transformers
from conftest import SAMPLE

from gptnl import tokenizer as tokenizer_mod
from gptnl.errors import GptnlError


def test_files_and_special_tokens(sample_tokenizer):
    for name in tokenizer_mod.FILES:
        assert (sample_tokenizer / name).is_file()
    tok = tokenizer_mod.load(sample_tokenizer)
    ids = [tok.id(t) for t in tokenizer_mod.SPECIAL_TOKENS]
    assert ids == list(range(len(ids)))
    assert tok.vocab_size == 2000
    manifest = json.loads((sample_tokenizer / "manifest.json").read_text())
    assert manifest["produced"]["checksum"] == tok.checksum


def test_loads_in_transformers_and_round_trips_dutch(sample_tokenizer):
    hf = transformers.AutoTokenizer.from_pretrained(str(sample_tokenizer))
    text = "Beste mevrouw De Vries, uw aanvraag voor een parkeervergunning is goedgekeurd."
    ids = hf(text).input_ids
    assert hf.decode(ids) == text
    assert ids == tokenizer_mod.load(sample_tokenizer).tokenizer.encode(text).ids
    assert hf.eos_token == "</s>" and hf.bos_token == "<s>" and hf.pad_token == "<pad>"


def test_chat_template_renders(sample_tokenizer):
    hf = transformers.AutoTokenizer.from_pretrained(str(sample_tokenizer))
    messages = [
        {"role": "system", "content": "Je bent een behulpzame assistent van de gemeente."},
        {"role": "user", "content": "Wanneer wordt het grofvuil opgehaald?"},
        {"role": "assistant", "content": "Op de eerste maandag van de maand."},
        {"role": "user", "content": "Dank je."},
    ]
    rendered = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == (
        "<s><|system|>\nJe bent een behulpzame assistent van de gemeente.<|end|>\n"
        "<|user|>\nWanneer wordt het grofvuil opgehaald?<|end|>\n"
        "<|assistant|>\nOp de eerste maandag van de maand.<|end|>\n"
        "<|user|>\nDank je.<|end|>\n<|assistant|>\n"
    )
    ids = hf.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    for marker in ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"):
        assert hf.convert_tokens_to_ids(marker) in ids  # markers are single tokens, not spelt out


def test_chat_template_refuses_unknown_role(sample_tokenizer):
    hf = transformers.AutoTokenizer.from_pretrained(str(sample_tokenizer))
    with pytest.raises(Exception, match="unknown role developer; allowed: system, user, assistant, tool"):
        hf.apply_chat_template([{"role": "developer", "content": "x"}], tokenize=False)


def test_digits_are_split(sample_tokenizer):
    tok = tokenizer_mod.load(sample_tokenizer).tokenizer
    pieces = tok.encode("3521 AB Utrecht, 2026", add_special_tokens=False).tokens
    digit_tokens = [p.lstrip("Ġ") for p in pieces if any(ch.isdigit() for ch in p)]
    assert all(len(p) == 1 for p in digit_tokens) and len(digit_tokens) == 8


def test_nfc_normalisation(sample_tokenizer):
    tok = tokenizer_mod.load(sample_tokenizer).tokenizer
    composed = "café één"
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    assert tok.encode(composed).ids == tok.encode(decomposed).ids


def test_too_small_vocab_refused(tmp_path):
    with pytest.raises(GptnlError, match="too small"):
        tokenizer_mod.train(["hallo"], 100, tmp_path)


def test_load_missing_folder_is_clear(tmp_path):
    with pytest.raises(GptnlError, match="not a tokenizer folder"):
        tokenizer_mod.load(tmp_path)


def test_report_prints_fertility(sample_tokenizer):
    proc = subprocess.run([sys.executable, "-m", "gptnl", "tokenizer", "report", str(sample_tokenizer),
                           "--text", str(SAMPLE / "heldout" / "nl-heldout.txt")],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "120"})
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stdout.splitlines() if "fertility" in line)
    fert = float(line.split("│")[2])
    assert 1.0 < fert < 3.0


def test_cli_trains_a_tokenizer(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gptnl", "tokenizer", "train", str(SAMPLE),
                           "--vocab-size", "1000", "--out", str(tmp_path / "tok")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert tokenizer_mod.load(tmp_path / "tok").vocab_size == 1000
