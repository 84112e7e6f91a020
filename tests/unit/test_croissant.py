"""`croissant.json` beside CARD.md: valid Croissant 1.0 by the format's own library (`mlcroissant`),
and true to the corpus it describes (records, checksums, licences, sources)."""

from __future__ import annotations

import gzip
import json
import shutil

import pytest
import yaml
from conftest import ROOT, SAMPLE

from gptnl.config import load_recipe
from gptnl.data_pipeline.build import build
from gptnl.data_pipeline.croissant import CROISSANT, spdx_url
from gptnl.data_pipeline.ledger import read_ledger
from gptnl.fileio import sha256_file

mlc = pytest.importorskip("mlcroissant")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Letters and FAQs of the bundled sample, built in this process (near-dedup and decontamination off)."""
    base = tmp_path_factory.mktemp("croissant")
    shutil.copy(ROOT / "data_pipeline" / "licences.yaml", base / "licences.yaml")
    (base / "sources.yaml").write_text(yaml.safe_dump({"sources": [
        {"name": "gemeente", "path": str(SAMPLE / "gemeente-en-faq.jsonl"), "licence": "CC0-1.0",
         "publisher": "gptnl team", "url": "https://gptnl.example/sample", "retrieved": "2026-11-28"}]}))
    recipe = base / "recipe.yaml"
    recipe.write_text("sources: sources.yaml\nlicences: licences.yaml\nnear_dedup: {enabled: false}\n"
                      "decontamination: {tasks: null}\n")
    build(recipe, load_recipe(recipe), base / "corpus")
    return base / "corpus"


def dataset(path):
    return mlc.Dataset(jsonld=str(path))


def test_croissant_is_written_beside_the_card_and_is_valid(corpus):
    assert (corpus / "CARD.md").is_file() and (corpus / CROISSANT).is_file()
    ds = dataset(corpus / CROISSANT)
    assert not ds.metadata.ctx.issues.errors
    assert ds.metadata.name == "corpus"


def test_records_are_the_corpus_documents_and_ledger(corpus):
    ds = dataset(corpus / CROISSANT)
    docs = []
    for path in sorted((corpus / "documents").glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            docs += [json.loads(line) for line in fh]
    records = list(ds.records("documents"))
    assert sorted(r["documents/id"].decode() for r in records) == sorted(d["id"] for d in docs)
    assert {r["documents/licence"].decode() for r in records} == {"CC0-1.0"}
    assert len(list(ds.records("ledger"))) == len(read_ledger(corpus))


def test_checksums_licences_and_sources_are_the_corpus_own(corpus):
    meta = json.loads((corpus / CROISSANT).read_text())
    stats = json.loads((corpus / "stats.json").read_text())
    files = {f["contentUrl"]: f["sha256"] for f in meta["distribution"] if f["@type"] == "cr:FileObject"}
    on_disk = {f"documents/{p.name}": sha256_file(p) for p in (corpus / "documents").glob("*.jsonl.gz")}
    assert files == {**on_disk, "ledger.jsonl.gz": sha256_file(corpus / "ledger.jsonl.gz")}
    assert meta["license"] == [spdx_url(lic) for lic in sorted(stats["licences"])]
    assert [s["name"] for s in meta["isBasedOn"]] == ["gemeente"]
    assert {f["name"] for f in meta["recordSet"][0]["field"]} >= {"id", "text", "source", "licence", "url"}


def test_a_broken_description_is_refused_by_mlcroissant(corpus, tmp_path):
    meta = json.loads((corpus / CROISSANT).read_text())
    meta["recordSet"][0]["field"][0]["dataType"] = "sc:NoSuchType"
    del meta["recordSet"][0]["field"][1]["source"]
    broken = tmp_path / CROISSANT
    broken.write_text(json.dumps(meta))
    with pytest.raises(mlc.ValidationError):
        dataset(broken)
