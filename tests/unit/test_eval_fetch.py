"""`gptnl eval fetch` without the network: offline it says exactly which files to place where;
files placed by hand are checked against the publisher's layout and recorded for later runs.
(Fetching from a Hub over HTTP: tests/integration/test_eval_fetch_hub.py.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gptnl.evals.fetch import MANIFEST, choose, fetch, public_specs
from gptnl.evals.spec import load_suite
from gptnl.evals.tasks import SUITES_DIR, EvalError, load_task
from gptnl.public_data import DATA_ENV, REGISTRY_ENV, registry

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "public"


@pytest.fixture(autouse=True)
def no_hub(monkeypatch, tmp_path):
    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.setenv(REGISTRY_ENV, str(tmp_path / "registry.json"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: a request would fail loudly


def _fetch(names, to):
    said: list[str] = []
    try:
        return fetch(names, to, say=said.append), "\n".join(said)
    except EvalError as exc:
        return exc, "\n".join(said)


def test_offline_it_says_exactly_which_files_to_place_where(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    to = tmp_path / "sets"
    err, said = _fetch(["belebele-nl", "global-mmlu-nl"], to)
    assert isinstance(err, EvalError) and "2 set(s) to place by hand: belebele-nl, global-mmlu-nl" in str(err)
    assert f"{to.resolve()}/belebele-nl/data/nld_Latn.jsonl" in said
    assert f"{to.resolve()}/belebele-nl/nld_Latn/test/*.parquet" in said
    assert f"{to.resolve()}/global-mmlu-nl/nl/test-*.parquet" in said
    assert "hf download facebook/belebele --repo-type dataset --revision main --include 'data/nld_Latn.jsonl' " \
           f"--local-dir {to.resolve()}/belebele-nl" in said
    assert f"{DATA_ENV}={to.resolve()}" in said
    assert not to.exists()  # nothing written, nothing asked of the network


def test_a_suite_stands_for_its_public_tasks(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    err, said = _fetch(["euroeval-nl"], tmp_path)
    names = load_suite(SUITES_DIR / "euroeval-nl.yaml").tasks
    assert f"{len(names)} set(s) to place by hand" in str(err)
    for name in names:
        assert f"\n{name} (" in "\n" + said
    assert "evaluate only" in said.split("\narc-nl (")[1].splitlines()[0]  # the Okapi sets are non-commercial
    assert "gated: accept its terms on the Hub" in said.split("\ninclude-nl (")[1].splitlines()[0]
    mbbq = said.split("\nmbbq-nl (")[1]
    assert "https://github.com/Veranep/MBBQ" in mbbq and "all of:" in mbbq and "Sexual_orientation_nl.jsonl" in mbbq


def test_a_set_placed_by_hand_is_checked_and_recorded(tmp_path):
    to = tmp_path / "sets"
    shutil.copytree(FIXTURES / "copa-nl", to / "copa-nl")
    (records, said) = _fetch(["copa-nl"], to)
    assert [r.task for r in records] == ["copa-nl"] and records[0].items == 2
    manifest = json.loads((to / "copa-nl" / MANIFEST).read_text())
    assert manifest["licence"] == "BSD-2-Clause" and manifest["files"][0]["path"] == "test.jsonl"
    assert len(manifest["files"][0]["sha256"]) == 64
    assert registry() == {"copa-nl": str((to / "copa-nl").resolve())}
    assert len(load_task("copa-nl").items) == 2  # found through the registry, no GPTNL_PUBLIC_DATA


def test_a_set_placed_by_hand_in_another_layout_is_refused(tmp_path):
    bad = tmp_path / "copa-nl" / "test.jsonl"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"sentence": "een andere set", "gold": 1}\n', encoding="utf-8")
    err, _ = _fetch(["copa-nl"], tmp_path)
    assert isinstance(err, EvalError) and f"{bad}:1: not a COPA row" in str(err)
    assert registry() == {}


def test_names_that_are_not_public_sets_are_refused():
    with pytest.raises(EvalError, match="kennis: not a public set"):
        public_specs(["kennis"])
    with pytest.raises(EvalError, match="no-such-set: no such task or suite"):
        public_specs(["no-such-set"])


def test_choose_takes_the_first_layout_each_split_has():
    spec = public_specs(["arc-nl"])[0]
    parquet_only = ["nl/test/0000.parquet", "nl/train/0000.parquet", "README.md", "data/de/test.jsonl"]
    assert choose(spec, parquet_only) == ["nl/test/0000.parquet", "nl/train/0000.parquet"]
    both = ["data/nl/test.jsonl", "nl/test/0000.parquet", "data/nl/val.jsonl"]
    assert choose(spec, both) == ["data/nl/test.jsonl", "data/nl/val.jsonl"]
    with pytest.raises(EvalError, match="arc-nl: alexandrainst/m_arc has none of the layouts"):
        choose(spec, ["data/nl/train.jsonl"])
