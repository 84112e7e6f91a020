"""The documents gptnl writes for people (data card, model card, demo report) are Jinja templates in
`gptnl/templates/`, filled from the stages' records. These tests render them from records made here,
and pin the layout a reader (and the Hugging Face hub) relies on: every section, tables that stay
tables whatever a cell holds, and a loud failure when the code forgets to pass a fact."""

from __future__ import annotations

import json

import jinja2
import pytest
import yaml
from conftest import ROOT

from gptnl.artefacts import (
    CorpusStats,
    ModelInputs,
    ModelManifest,
    ModelOutputs,
    RunInputs,
    RunManifest,
    RunOutputs,
    ShardsInputs,
    ShardsManifest,
    ShardsOutputs,
    SplitOutputs,
    TokenizerRef,
    write_manifest,
)
from gptnl.config import PackSettings, load_recipe, load_sources
from gptnl.data_pipeline.card import write_card
from gptnl.modelcard import render as render_card
from gptnl.templates import md_cell, render

STATS = {"inputs": 12, "kept": 9, "refused": 3, "licences": {"CC-BY-4.0": 4, "CC0-1.0": 5},
         "sources": {"gemeente": {"inputs": 12, "kept": 9}}, "opt_outs": {"tdm": 1, "blocklist": 0},
         "pii": {"BSN": 2, "IBAN": 1}, "refused_by_step": {"licence": {"licence: NC": 2}, "quality": {"too short": 1}},
         "takedowns": [{"date": "2026-12-01", "removed": 1, "entries": ["id:doc-7"]}],
         "composition": {"rows": [{"source": "gemeente", "licence": "CC0-1.0", "lang": "nl", "documents": 9,
                                   "words": 12345}],
                         "languages": {"nl": {"documents": 9, "words": 12345}}}}


def test_md_cell_keeps_a_table_row_on_one_line():
    assert md_cell("a | b\nc\t d") == "a \\| b c d"
    assert md_cell(None) == "None" and md_cell(3) == "3"


def test_a_missing_fact_fails_instead_of_writing_an_empty_field():
    with pytest.raises(jinja2.UndefinedError):
        render("data_card.md.j2", name="x")


def test_the_data_card_has_every_section_and_escapes_cells(tmp_path):
    recipe = load_recipe(ROOT / "data_pipeline" / "recipes" / "default.yaml")
    sources = load_sources(recipe.sources)
    first = sources.sources[0].model_copy(update={"publisher": "Gemeente | Utrecht"})
    sources = sources.model_copy(update={"sources": [first, *sources.sources[1:]]})
    stats = CorpusStats.model_validate({**STATS, "sources": {sources.sources[0].name: {"inputs": 12, "kept": 9}},
                                        "pii_mode": "placeholder"})
    text = write_card(tmp_path, recipe, sources, stats).read_text()
    lines = text.splitlines()
    for heading in ("# Data card: " + tmp_path.name, "## 1. General information", "## 2. List of data sources",
                    "## 3. Data processing aspects", "### Licences", "### Composition", "### Opt-outs honoured",
                    "### Personal data", "### Refusals by step and reason"):
        assert heading in lines, heading
    row = next(line for line in lines if line.startswith(f"| {sources.sources[0].name} |"))
    assert "Gemeente \\| Utrecht" in row and row.count(" | ") == 7  # 8 cells: the pipe did not split one
    assert "- Language kept: `nl` with a py3langid score of at least 0.65" in lines
    assert "| gemeente | CC0-1.0 | nl | 9 | 12,345 |" in lines
    assert "- Takedown on 2026-12-01: 1 documents removed (id:doc-7)." in lines
    assert "Found and replaced (typed placeholders): BSN 2, IBAN 1." in lines
    assert any(line.startswith("Obligations carried into models trained on this corpus: CC-BY-4.0 (4 documents): "
                               "attribution") for line in lines)
    assert "| licence | licence: NC | 2 |" in lines and lines[-1] == "| quality | too short | 1 |"
    assert text.endswith(" |\n") and "\n\n\n" not in text


TOK = TokenizerRef(path="/models/tok", checksum="c0ffee")


def test_the_model_card_reads_its_lineage_into_hub_front_matter_and_sections(tmp_path):
    corpus, shards, run, model = (tmp_path / n for n in ("corpus", "shards", "run", "model"))
    for d in (corpus, shards, run, model):
        d.mkdir()
    (corpus / "stats.json").write_text(json.dumps(STATS))
    write_manifest(shards, ShardsManifest(
        consumed=ShardsInputs(corpus=str(corpus), files=[], tokenizer=TOK),
        produced=ShardsOutputs(dtype="uint16", seq_len=64, vocab_size=4096, eos_id=0, splits={
            "train": SplitOutputs(documents=9, tokens=40960, sequences=640, tokens_dropped=0, shards=[])}),
        config=PackSettings(seq_len=64, val_fraction=0.1, shard_tokens=1 << 20)))
    write_manifest(run, RunManifest(
        consumed=RunInputs(shards=str(shards), tokenizer=TOK),
        produced=RunOutputs(step=10, checkpoint="global_step10", tokens_seen=81920, parameters=5_000_000),
        config={"name": "gptnl-tiny", "zero_stage": 2, "optim": {"lr": 0.001},
                "batch": {"micro_batch_size": 4, "grad_accum_steps": 2}}))
    (run / "metrics.jsonl").write_text(json.dumps({"step": 10, "loss": 6.25, "tokens_per_s": 1234.5}) + "\n"
                                       + json.dumps({"step": 10, "val_loss": 6.5, "val_ppl": 665.1}) + "\n")
    write_manifest(model, ModelManifest(
        consumed=ModelInputs(run_dir=str(run), shards=str(shards), tokenizer=TOK),
        produced=ModelOutputs(format="LlamaForCausalLM", dtype="float32", parameters=5_000_000, step=10),
        config={"name": "gptnl-tiny"}))
    (model / "config.json").write_text(json.dumps({"num_hidden_layers": 2, "vocab_size": 4096}))
    card = render_card(model)
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["pipeline_tag"] == "text-generation" and front["algoritmeregister"]["naam"] == "gptnl-tiny"
    lines = card.splitlines()
    for heading in ("# gptnl-tiny", "## Model details", "## Training data", "## Training", "## Evaluation",
                    "## Intended use", "## Out of scope", "## Limits and risks", "## Algoritmeregister"):
        assert heading in lines, heading
    assert "## Instruction tuning" not in lines  # a pre-trained model
    assert "| parameters | 5,000,000 |" in lines and "| layers | 2 |" in lines
    assert "| final training loss | 6.250 |" in lines and "| validation loss / perplexity | 6.500 / 665.1 |" in lines
    assert "| batch | micro 4 x accumulation 2 per process |" in lines
    assert "- Tokens packed: train 40,960 (9 documents)" in lines
    assert "- Refused by step: licence 2, quality 1" in lines
    assert f"- Corpus: `{corpus}`" in lines  # no CARD.md in that folder, so no link to one
    assert any(line.startswith("Not evaluated yet. Run `gptnl eval run --model NAME=") for line in lines)
    assert any(line.startswith("**Korte omschrijving.** Een taalmodel") for line in lines)
    assert card.endswith("\n") and not card.endswith("\n\n") and "\n\n\n" not in card


def test_a_model_without_records_says_so(tmp_path):
    (tmp_path / "m").mkdir()
    write_manifest(tmp_path / "m", ModelManifest(
        consumed=ModelInputs(tokenizer=TOK), produced=ModelOutputs(format="LlamaForCausalLM", dtype="float32",
                                                                   parameters=1), config={}))
    card = render_card(tmp_path / "m")
    assert "No corpus manifest was found for this model: its training data cannot be summarised here." in card
    assert "No training run was found for this model." in card


def test_the_demo_report_escapes_answers_in_html_and_keeps_markdown_rows_whole(tmp_path):
    from gptnl.demo_report import SECTIONS, write_demo_report

    html, md = write_demo_report(tmp_path, {"corpus": 1.25, "train": 40.0},
                                 [("Wat is | dit?", "Een\nantwoord <b>vet</b> & 'zo'")])
    page, text = html.read_text(), md.read_text()
    assert "<b>vet</b>" not in page and "Een\nantwoord &lt;b&gt;vet&lt;/b&gt; &amp; &#39;zo&#39;" in page
    assert "| Wat is \\| dit? | Een antwoord <b>vet</b> & 'zo' |" in text.splitlines()
    for section in SECTIONS:
        assert f'<h2 id="{section.lower().replace(" ", "-")}">{section}</h2>' in page and f"## {section}" in text
    assert "| total | 41.2 |" in text.splitlines() and text.endswith("| total | 41.2 |\n")
