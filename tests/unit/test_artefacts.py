"""Stage manifests are typed (`gptnl/artefacts.py`): what a stage writes reads back as its model,
and a manifest that is not what its stage writes is refused in one line naming the file and the
field, never a KeyError three stages later."""

from __future__ import annotations

import json

import pytest

from gptnl.artefacts import (
    SCHEMA_VERSION,
    CorpusInputs,
    CorpusManifest,
    CorpusOutputs,
    FileDigest,
    RunInputs,
    RunManifest,
    RunOutputs,
    ShardsManifest,
    TokenizerRef,
    manifest_or_none,
    read_manifest,
    write_manifest,
)
from gptnl.errors import GptnlError

TOK = TokenizerRef(path="/t", checksum="c")


def corpus_manifest() -> CorpusManifest:
    return CorpusManifest(consumed=CorpusInputs(recipe="/r.yaml", files=[FileDigest(path="/a.jsonl", sha256="ab")]),
                          produced=CorpusOutputs(documents=3, ledger="ledger.jsonl.gz", shards=["nl/00000.jsonl.gz"]),
                          config={"language": {"keep": "nl"}})


def test_a_written_manifest_reads_back_as_its_stage(tmp_path):
    written = write_manifest(tmp_path, corpus_manifest())
    raw = json.loads((tmp_path / "manifest.json").read_text())
    assert raw["stage"] == "data" and raw["schema_version"] == SCHEMA_VERSION and raw["created"].endswith("Z")
    back = read_manifest(tmp_path)  # the stage picks the model
    assert isinstance(back, CorpusManifest) and back == written
    assert read_manifest(tmp_path, CorpusManifest).produced.documents == 3


def test_another_stage_is_refused_by_name(tmp_path):
    write_manifest(tmp_path, corpus_manifest())
    with pytest.raises(GptnlError, match=r"not a shards dir written by `gptnl pack` \(its manifest says stage 'data"):
        read_manifest(tmp_path, ShardsManifest)
    assert manifest_or_none(tmp_path, ShardsManifest) is None


@pytest.mark.parametrize("change, field", [
    (lambda m: m["produced"].pop("documents"), "produced.documents"),
    (lambda m: m["consumed"]["files"][0].update(sha256=7), "consumed.files.0.sha256"),
    (lambda m: m["produced"].update(surprise=1), "produced.surprise"),
])
def test_a_damaged_manifest_names_the_file_and_field(tmp_path, change, field):
    write_manifest(tmp_path, corpus_manifest())
    raw = json.loads((tmp_path / "manifest.json").read_text())
    change(raw)
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(GptnlError) as err:
        read_manifest(tmp_path)
    assert str(tmp_path / "manifest.json") in str(err.value) and f"({field}: " in str(err.value)


def test_missing_corrupt_and_newer_manifests_are_refused_in_one_line(tmp_path):
    with pytest.raises(GptnlError, match="no manifest.json"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"stage": "data", ')
    with pytest.raises(GptnlError, match="unreadable manifest"):
        read_manifest(tmp_path)
    raw = json.loads(corpus_manifest().model_dump_json())
    (tmp_path / "manifest.json").write_text(json.dumps({**raw, "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(GptnlError, match="newer than this gptnl reads"):
        read_manifest(tmp_path)


def test_a_manifest_from_before_the_schema_version_still_reads(tmp_path):
    """Version 1 is the layout gptnl wrote before it said so; a run's per-source share was flat then."""
    raw = {"stage": "train", "created": "2026-11-30T10:00:00Z", "code_version": "0.1.0", "config": {},
           "consumed": {"shards": "/s", "tokenizer": {"path": "/t", "checksum": "c"}},
           "produced": {"step": 40, "checkpoint": "global_step40", "tokens_seen": 163840, "parameters": 5,
                        "tokens_seen/nl": 131072, "epoch/nl": 1, "tokens_seen/en": 32768, "epoch/en": 2}}
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    m = read_manifest(tmp_path, RunManifest)
    assert m.schema_version == 1 and m.produced.tokens_seen == 163840
    assert {n: (s.tokens_seen, s.epoch) for n, s in m.produced.sources.items()} == {"nl": (131072, 1),
                                                                                     "en": (32768, 2)}


def test_the_trainer_s_flat_share_is_kept_per_source():
    out = RunOutputs(step=1, checkpoint="global_step1", tokens_seen=64, parameters=5,
                     **{"tokens_seen/nl": 48, "epoch/nl": 0, "tokens_seen/en": 16, "epoch/en": 0})
    assert out.sources["nl"].tokens_seen == 48 and out.sources["en"].tokens_seen == 16
    with pytest.raises(ValueError, match="loss/nl"):
        RunOutputs(step=1, checkpoint="c", tokens_seen=1, parameters=1, **{"loss/nl": 1.0})
    RunManifest(consumed=RunInputs(shards="/s", tokenizer=TOK), produced=out, config={})
