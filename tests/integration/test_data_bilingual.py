"""A corpus of two languages in one build (`language.keep: [nl, en]`): each language judged by its
own quality thresholds (FineWeb-2's `nld_Latn` for Dutch, Gopher's with English stop words for
English), written to its own folder so that each is a mixture source, and counted in documents and
words (and a tokenizer's tokens) per source, licence and language in `stats.json`, the card and
the Croissant file. Built
from the bundled Dutch sample and the bundled English sample."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import yaml
from conftest import ROOT, SAMPLE

from gptnl.config import load_recipe
from gptnl.corpus import corpus_files, iter_file_documents
from gptnl.data_pipeline.build import build
from gptnl.data_pipeline.ledger import read_ledger
from gptnl.fileio import iter_jsonl

ENGLISH = ROOT / "data_pipeline" / "sample-en" / "english.jsonl"


def build_with(base, language: dict, **extra) -> tuple:
    base.mkdir(parents=True)
    shutil.copy(ROOT / "data_pipeline" / "licences.yaml", base / "licences.yaml")
    common = {"licence": "CC0-1.0", "publisher": "gptnl team", "url": "https://gptnl.example/sample",
              "retrieved": "2026-11-28"}
    (base / "sources.yaml").write_text(yaml.safe_dump({"sources": [
        {"name": "nl-sample", "path": str(SAMPLE / "*.jsonl"), **common},
        {"name": "en-sample", "path": str(ENGLISH), **common}]}))
    recipe = base / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"sources": "sources.yaml", "licences": "licences.yaml", "language": language,
                                      "decontamination": {"tasks": None}, **extra}))
    stats = build(recipe, load_recipe(recipe), base / "corpus")
    return base / "corpus", stats


def kept(folder) -> dict[str, dict]:
    return {d["id"]: d for p in sorted(folder.glob("*.jsonl.gz")) for d in iter_jsonl(p)}


@pytest.fixture(scope="module")
def bilingual(tmp_path_factory, sample_tokenizer):
    return build_with(tmp_path_factory.mktemp("bi") / "b", {"keep": ["nl", "en"], "min_score": {"nl": 0.65, "en": 0.8}},
                      count_tokens_with=str(sample_tokenizer))


def test_each_language_has_its_own_folder_and_only_its_documents(bilingual):
    corpus, stats = bilingual
    docs = corpus / "documents"
    assert sorted(p.name for p in docs.iterdir()) == ["en", "nl"]
    nl, en = kept(docs / "nl"), kept(docs / "en")
    assert {d["lang"] for d in nl.values()} == {"nl"} and {d["lang"] for d in en.values()} == {"en"}
    assert {d["source"] for d in en.values()} == {"en-sample"} and len(en) >= 20, len(en)  # of 30
    assert len(nl) + len(en) == stats.kept
    rows = read_ledger(corpus)
    assert len(rows) == stats.inputs and stats.inputs == stats.kept + stats.refused
    manifest = json.loads((corpus / "manifest.json").read_text())
    assert manifest["produced"]["shards"] == ["en/00000.jsonl.gz", "nl/00000.jsonl.gz"]


def test_documents_words_and_tokens_are_counted_per_source_licence_and_language(bilingual, sample_tokenizer):
    from gptnl import tokenizer as tokenizer_mod

    corpus, stats = bilingual
    comp = stats.composition.model_dump()
    tok = tokenizer_mod.load(sample_tokenizer)
    assert comp["tokenizer"] == {"path": str(sample_tokenizer), "checksum": tok.checksum}
    for lang in ("nl", "en"):
        docs = kept(corpus / "documents" / lang)
        words = sum(len(re.findall(r"\w+", d["text"])) for d in docs.values())
        tokens = sum(len(tok.tokenizer.encode(d["text"], add_special_tokens=False).ids) for d in docs.values())
        assert comp["languages"][lang] == {"documents": len(docs), "words": words, "tokens": tokens}
    assert {(r["source"], r["licence"], r["lang"]) for r in comp["rows"]} == \
        {("nl-sample", "CC0-1.0", "nl"), ("en-sample", "CC0-1.0", "en")}
    card = (corpus / "CARD.md").read_text()
    assert "### Composition" in card and "| en-sample | CC0-1.0 | en |" in card and "| tokens |" in card
    assert "`nl` (score ≥ 0.65), `en` (score ≥ 0.8)" in card
    croissant = json.loads((corpus / "croissant.json").read_text())
    urls = {f["contentUrl"] for f in croissant["distribution"] if f["@type"] == "cr:FileObject"}
    assert {"documents/en/00000.jsonl.gz", "documents/nl/00000.jsonl.gz"} <= urls


def test_each_language_is_judged_by_its_own_quality_thresholds(bilingual, tmp_path):
    """English thresholds that no English document meets refuse every English document and no Dutch
    one; a Dutch-only recipe keeps the same Dutch documents and refuses the English by language."""
    corpus, _ = bilingual
    strict, stats = build_with(tmp_path / "strict", {"keep": ["nl", "en"], "min_score": {"nl": 0.65, "en": 0.8}},
                               quality_by_language={"en": {"min_doc_words": 5000}})
    assert not (strict / "documents" / "en").exists() or not kept(strict / "documents" / "en")
    refused_en = [r for r in read_ledger(strict) if r["source"] == "en-sample" and r["outcome"] == "refused"]
    assert sum(r["step"] == "quality" and "gopher_short_doc" in r["reason"] for r in refused_en) >= 20
    assert kept(strict / "documents" / "nl").keys() == kept(corpus / "documents" / "nl").keys()

    dutch, _ = build_with(tmp_path / "dutch", {"keep": "nl", "min_score": 0.65})
    assert kept(dutch / "documents").keys() == kept(corpus / "documents" / "nl").keys()
    en_rows = [r for r in read_ledger(dutch) if r["source"] == "en-sample"]
    assert en_rows and all(r["outcome"] == "refused" and r["step"] in ("language", "malformed") for r in en_rows)


def test_english_defaults_to_gophers_thresholds_and_dutch_to_the_recipes(bilingual, tmp_path):
    from gptnl.data_pipeline.stages import quality_steps

    recipe = load_recipe(bilingual[0].parent / "recipe.yaml")
    gopher, repetition, _ = quality_steps(recipe, tmp_path)
    assert gopher.filters["en"].stop_words == {"the", "be", "to", "of", "and", "that", "have", "with"}
    assert gopher.filters["nl"].stop_words == set(recipe.quality.stop_words) and "het" in recipe.quality.stop_words
    assert gopher.filters["en"].max_avg_word_length == 10 and gopher.filters["nl"].max_avg_word_length == 16
    assert repetition.filters["en"].top_n_grams == ((2, 0.2), (3, 0.18), (4, 0.16))


def test_each_language_packs_as_a_source_of_its_own(bilingual):
    corpus, _ = bilingual
    assert corpus_files(corpus / "documents" / "en") == sorted((corpus / "documents" / "en").glob("*.jsonl.gz"))
    both = corpus_files(corpus)  # the whole corpus: every language's files, in path order
    assert [p.relative_to(corpus / "documents").as_posix() for p in both] == ["en/00000.jsonl.gz",
                                                                            "nl/00000.jsonl.gz"]
    assert all(d.text for d in iter_file_documents(both[0]))


def test_a_kept_language_without_thresholds_is_refused(tmp_path):
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({"language": {"keep": ["nl", "de"]}}))
    with pytest.raises(Exception, match="de has no quality thresholds; give them under quality_by_language.de"):
        load_recipe(tmp_path / "r.yaml")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({"language": {"keep": ["nl", "en"], "min_score": {"nl": 0.6}}}))
    with pytest.raises(Exception, match=r"one threshold per kept language \(nl, en\)"):
        load_recipe(tmp_path / "r.yaml")
