"""Packing: exact token accounting, stable splits, bounded memory."""

import json
import tracemalloc

import numpy as np
import pytest
from conftest import SAMPLE

from gptnl import tokenizer as tokenizer_mod
from gptnl.artefacts import ShardsManifest, read_manifest
from gptnl.corpus import iter_documents
from gptnl.errors import GptnlError
from gptnl.pack import pack, split_of
from gptnl.train.data import Shards


def stream(shards_dir, split):
    m = json.loads((shards_dir / "manifest.json").read_text())["produced"]
    return np.concatenate([np.fromfile(shards_dir / s["file"], dtype=m["dtype"]) for s in m["splits"][split]["shards"]])


def expected_streams(corpus, tok_dir, val_fraction):
    tok = tokenizer_mod.load(tok_dir)
    out = {"train": [], "validation": []}
    for doc in iter_documents(corpus):
        ids = tok.tokenizer.encode(doc.text, add_special_tokens=False).ids
        out[split_of(doc.id, val_fraction)] += ids + [tok.eos_id]
    return out


def test_token_count_is_sum_over_documents_plus_eos(sample_tokenizer, sample_shards):
    manifest = json.loads((sample_shards / "manifest.json").read_text())
    splits = manifest["produced"]["splits"]
    expected = expected_streams(SAMPLE, sample_tokenizer, 0.1)
    n_docs = sum(1 for _ in iter_documents(SAMPLE))
    assert splits["train"]["documents"] + splits["validation"]["documents"] == n_docs
    for split in ("train", "validation"):
        assert splits[split]["tokens"] == len(expected[split])
        got = stream(sample_shards, split)
        assert len(got) == splits[split]["sequences"] * 64
        assert len(got) + splits[split]["tokens_dropped"] == len(expected[split])
        assert got.tolist() == expected[split][: len(got)]
    assert splits["validation"]["documents"] > 0


def test_manifest_records_tokenizer_and_checksums(sample_tokenizer, sample_shards):
    m = json.loads((sample_shards / "manifest.json").read_text())
    assert m["consumed"]["tokenizer"]["checksum"] == tokenizer_mod.load(sample_tokenizer).checksum
    assert all(len(f["sha256"]) == 64 for f in m["consumed"]["files"])
    assert m["produced"]["dtype"] == "uint16"
    shards = Shards(sample_shards, "train")
    assert len(shards) == m["produced"]["splits"]["train"]["sequences"]


def test_split_is_stable_when_documents_are_added(tmp_path, sample_tokenizer):
    docs = [json.dumps({"id": d.id, "text": d.text}, ensure_ascii=False) for d in iter_documents(SAMPLE)]
    small, big = tmp_path / "small", tmp_path / "big"
    small.mkdir(), big.mkdir()
    (small / "a.jsonl").write_text("\n".join(docs[:120]) + "\n")
    (big / "a.jsonl").write_text("\n".join(docs[:120]) + "\n")
    (big / "b.jsonl").write_text("\n".join(docs[120:]) + "\n")
    a = pack(small, sample_tokenizer, 32, tmp_path / "sa", val_fraction=0.2)
    b = pack(big, sample_tokenizer, 32, tmp_path / "sb", val_fraction=0.2)
    # documents keep their split: the old validation stream is a prefix of the new one
    old, new = stream(tmp_path / "sa", "validation"), stream(tmp_path / "sb", "validation")
    assert len(old) > 0 and new[: len(old)].tolist() == old.tolist()
    sa, sb = a.produced.splits, b.produced.splits
    assert sb["validation"].documents >= sa["validation"].documents
    assert sb["train"].documents > sa["train"].documents


def test_many_small_shards(tmp_path, sample_tokenizer):
    m = pack(SAMPLE, sample_tokenizer, 64, tmp_path / "s", val_fraction=0.1, shard_tokens=64 * 50)
    train = m.produced.splits["train"]
    assert len(train.shards) > 3 and all(s.sequences <= 50 for s in train.shards)
    shards = Shards(tmp_path / "s", "train")
    assert shards.sequence(len(shards) - 1).shape == (64,)


def test_packing_10mb_does_not_hold_the_corpus(tmp_path, sample_tokenizer):
    texts = [d.text for d in iter_documents(SAMPLE)]
    corpus = tmp_path / "big"
    corpus.mkdir()
    size = 0
    with open(corpus / "big.jsonl", "w", encoding="utf-8") as fh:
        i = 0
        while size < 10_000_000:
            line = json.dumps({"id": f"d{i}", "text": texts[i % len(texts)]}, ensure_ascii=False) + "\n"
            fh.write(line)
            size += len(line.encode())
            i += 1
    tracemalloc.start()
    m = pack(corpus, sample_tokenizer, 256, tmp_path / "s", shard_tokens=1 << 18)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert m.produced.splits["train"].tokens > 2_000_000
    assert peak < 5_000_000, f"peak Python memory {peak / 1e6:.1f} MB while packing 10 MB"


def test_truncated_shard_is_detected(tmp_path, sample_tokenizer):
    pack(SAMPLE, sample_tokenizer, 64, tmp_path / "s", val_fraction=0.1)
    f = tmp_path / "s" / "train-00000.bin"
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(GptnlError, match="truncated shard"):
        Shards(tmp_path / "s", "train")


def test_corpus_smaller_than_one_sequence_is_refused(tmp_path, sample_tokenizer):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.jsonl").write_text('{"id": "a", "text": "Kort."}\n')
    with pytest.raises(GptnlError, match="fewer than one sequence"):
        pack(tmp_path / "c", sample_tokenizer, 64, tmp_path / "s")


def test_a_base_models_tokenizer_ends_documents_with_its_own_end_token(tmp_path, sample_tokenizer):
    """A base model's tokenizer folder names its end token in tokenizer_config.json (Llama 3:
    `<|end_of_text|>`); pack ends each document with that one, not with gptnl's `</s>`."""
    import re
    import shutil

    base = tmp_path / "base-tokenizer"
    shutil.copytree(sample_tokenizer, base)
    config = json.loads((base / "tokenizer_config.json").read_text())
    (base / "tokenizer_config.json").write_text(json.dumps({**config, "eos_token": {"content": "<|end|>"}}))
    tok = tokenizer_mod.load(base)
    assert tok.eos_id == tok.id("<|end|>") != tokenizer_mod.load(sample_tokenizer).eos_id
    manifest = pack(SAMPLE, base, 64, tmp_path / "shards", val_fraction=0.1)
    assert manifest.produced.eos_id == tok.id("<|end|>")
    (base / "tokenizer_config.json").write_text(json.dumps({**config, "eos_token": "<|end_of_text|>"}))
    with pytest.raises(GptnlError, match=re.escape("tokenizer has no <|end_of_text|> token")):
        _ = tokenizer_mod.load(base).eos_id


def test_a_base_that_adds_a_bos_token_gets_one_before_each_document(tmp_path, sample_tokenizer):
    """Llama 2, Mistral and Salamandra set `add_bos_token` in tokenizer_config.json; Llama 3 adds
    `<|begin_of_text|>` through tokenizer.json's post-processor. A base trained so saw a BOS before
    each document, and so do its shards; gptnl's own tokenizer adds none."""
    import shutil

    from tokenizers import Tokenizer, processors

    assert tokenizer_mod.load(sample_tokenizer).bos_ids == []
    base = tmp_path / "base-tokenizer"
    shutil.copytree(sample_tokenizer, base)
    config = json.loads((base / "tokenizer_config.json").read_text())
    (base / "tokenizer_config.json").write_text(json.dumps({**config, "add_bos_token": True}))
    tok = tokenizer_mod.load(base)
    assert tok.bos_ids == [tok.id("<s>")]
    manifest = pack(SAMPLE, base, 64, tmp_path / "shards", val_fraction=0.1)
    assert manifest.produced.bos_ids == [tok.id("<s>")]
    expected = []
    for doc in iter_documents(SAMPLE):
        if split_of(doc.id, 0.1) == "train":
            expected += [tok.id("<s>")] + tok.tokenizer.encode(doc.text, add_special_tokens=False).ids + [tok.eos_id]
    got = stream(tmp_path / "shards", "train")
    assert got.tolist() == expected[: len(got)]

    # Llama 3's way: no add_bos_token in the config, a template in the post-processor
    del config["add_bos_token"]
    (base / "tokenizer_config.json").write_text(json.dumps({**config, "bos_token": "<|begin_of_text|>"}))
    fast = Tokenizer.from_file(str(base / "tokenizer.json"))
    fast.post_processor = processors.TemplateProcessing(single="<|system|> $A", special_tokens=[
        ("<|system|>", fast.token_to_id("<|system|>"))])
    fast.save(str(base / "tokenizer.json"))
    assert tokenizer_mod.load(base).bos_ids == [fast.token_to_id("<|system|>")]
    (base / "tokenizer_config.json").write_text(json.dumps({**config, "add_bos_token": True, "bos_token": None}))
    with pytest.raises(GptnlError, match="add_bos_token is set but no bos_token"):
        _ = tokenizer_mod.load(base).bos_ids


def shards_bytes(out):
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.bin"))}


def test_a_rerun_redoes_only_the_files_whose_part_was_not_finished(tmp_path, sample_tokenizer, monkeypatch):
    """A run killed after its first task (files 0 and 2 of 4, in 2 tasks) and in the middle of file 1
    (a stream half written, no record): the rerun tokenises files 1 and 3 only, and writes the same
    shards as one uninterrupted process."""
    from gptnl.pack import run, tasks

    pack(SAMPLE, sample_tokenizer, 64, tmp_path / "whole", val_fraction=0.1, shard_tokens=4096)
    out = tmp_path / "resumed"
    _, files, parts = run.prepare(SAMPLE, sample_tokenizer, 64, out, 0.1, 4096)
    tasks.PackFiles(files, sample_tokenizer, parts, 0.1).run(rank=0, world_size=2)
    (parts / "00001-train.bin.tmp").write_bytes(b"\x01\x02\x03")  # file 1 was being written
    done = []
    real = tasks.pack_file
    monkeypatch.setattr(tasks, "pack_file", lambda path, index, *a, **k: done.append(index) or real(path, index, *a,
                                                                                                       **k))
    manifest = pack(SAMPLE, sample_tokenizer, 64, out, val_fraction=0.1, shard_tokens=4096)
    assert done == [1, 3]
    assert shards_bytes(out) == shards_bytes(tmp_path / "whole")
    assert manifest.produced == read_manifest(tmp_path / "whole", ShardsManifest).produced
    assert not (out / ".pack").exists()  # the work files go once the manifest is written


def test_a_part_of_a_changed_file_or_of_other_settings_is_not_reused(tmp_path, sample_tokenizer, monkeypatch):
    from gptnl.pack import run, tasks

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for f in sorted(SAMPLE.glob("*.jsonl"))[:2]:
        (corpus / f.name).write_bytes(f.read_bytes())
    out = tmp_path / "out"
    _, files, parts = run.prepare(corpus, sample_tokenizer, 64, out, 0.1, 4096)
    tasks.PackFiles(files, sample_tokenizer, parts, 0.1).run()
    with open(files[1], "a") as fh:  # the second file grew since its part was made
        fh.write(json.dumps({"id": "nieuw-1", "text": "Een nieuw document over de gemeente en haar raad."}) + "\n")
    done = []
    real = tasks.pack_file
    monkeypatch.setattr(tasks, "pack_file", lambda path, index, *a, **k: done.append(index) or real(path, index, *a,
                                                                                                       **k))
    run.prepare(corpus, sample_tokenizer, 64, out, 0.1, 4096)
    tasks.PackFiles(files, sample_tokenizer, parts, 0.1).run()
    assert done == [1]
    manifest = pack(corpus, sample_tokenizer, 64, out, val_fraction=0.2, shard_tokens=4096)  # another split
    assert done == [1, 0, 1]
    docs = sum(s.documents for s in manifest.produced.splits.values())
    assert docs == sum(1 for _ in iter_documents(corpus))


def test_the_merge_refuses_a_missing_part_naming_the_file(tmp_path, sample_tokenizer):
    from gptnl.pack import merge, run, tasks

    out = tmp_path / "out"
    _, files, parts = run.prepare(SAMPLE, sample_tokenizer, 64, out, 0.1, 4096)
    tasks.PackFiles(files, sample_tokenizer, parts, 0.1).run(rank=0, world_size=2)
    with pytest.raises(GptnlError, match=rf"2 of 4 corpus files have no finished part \(first: {files[1]}\)"):
        merge(SAMPLE, sample_tokenizer, 64, out, val_fraction=0.1, shard_tokens=4096)
    assert not (out / "manifest.json").exists()


def test_a_broken_line_stops_the_pack_with_its_file_and_line(tmp_path, sample_tokenizer):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.jsonl").write_bytes((SAMPLE / "canaries.jsonl").read_bytes())
    (corpus / "b.jsonl").write_text('{"id": "x", "text": "goed"}\n{"id": "y", "text": \n')
    with pytest.raises(GptnlError, match=r"b\.jsonl:2: not valid JSON"):
        pack(corpus, sample_tokenizer, 64, tmp_path / "out", val_fraction=0.1)
    assert not (tmp_path / "out" / "manifest.json").exists()
