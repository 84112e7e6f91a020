"""`gptnl eval fetch` over HTTP with the real `huggingface_hub`, against a local stand-in for the
Hub (fake_hub.py) named by HF_ENDPOINT: only the files the task reads are fetched, checked,
recorded with their sha256, and found by later runs; a gated set needs the token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_hub import COMMIT, FakeHub

from gptnl.evals.fetch import MANIFEST, fetch
from gptnl.evals.tasks import EvalError, load_task
from gptnl.public_data import DATA_ENV, REGISTRY_ENV, registry

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "public"
BELEBELE = (FIXTURES / "belebele-nl" / "data" / "nld_Latn.jsonl").read_bytes()
INCLUDE = (FIXTURES / "include-nl" / "Dutch" / "test-00000-of-00001.parquet").read_bytes()


@pytest.fixture()
def hub(monkeypatch, tmp_path):
    repos = {"facebook/belebele": {"data/nld_Latn.jsonl": BELEBELE, "data/deu_Latn.jsonl": b"{}\n", "README.md": b"#"},
             "CohereLabs/include-base-44": {"Dutch/test-00000-of-00001.parquet": INCLUDE},
             "alexandrainst/m_arc": {"data/nl/test.jsonl": b'{"question": "another layout"}\n'}}
    with FakeHub(repos, gated={"CohereLabs/include-base-44": "hf_secret"}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.delenv(DATA_ENV, raising=False)
        monkeypatch.setenv(REGISTRY_ENV, str(tmp_path / "registry.json"))
        yield server


def test_fetches_only_what_the_task_reads_checks_and_records_it(hub, tmp_path):
    records = fetch(["belebele-nl"], tmp_path / "sets", say=lambda line: None)
    folder = (tmp_path / "sets" / "belebele-nl").resolve()
    assert (folder / "data" / "nld_Latn.jsonl").read_bytes() == BELEBELE
    assert not (folder / "data" / "deu_Latn.jsonl").exists() and not (folder / "README.md").exists()
    assert [p for m, p, _ in hub.requests if m == "GET" and "/resolve/" in p] == [
        f"datasets/facebook/belebele/resolve/{COMMIT}/data/nld_Latn.jsonl"]
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["commit"] == COMMIT and manifest["endpoint"] == hub.url and manifest["items"] == 3
    assert records[0].files[0].bytes == len(BELEBELE)
    assert registry()["belebele-nl"] == str(folder)
    assert len(load_task("belebele-nl").items) == 3


def test_a_gated_set_needs_the_token(hub, tmp_path):
    with pytest.raises(EvalError, match="include-base-44 is gated: accept its terms"):
        fetch(["include-nl"], tmp_path, say=lambda line: None)
    fetch(["include-nl"], tmp_path, token="hf_secret", say=lambda line: None)
    assert {auth for m, p, auth in hub.requests if "include" in p} >= {"Bearer hf_secret"}
    assert len(load_task("include-nl").items) == 3


def test_what_the_hub_serves_in_another_layout_is_refused_and_not_recorded(hub, tmp_path):
    with pytest.raises(EvalError, match=r"arc-nl: the files do not read as the task expects: .*test.jsonl:1: "
                                        r"not an Okapi ARC row"):
        fetch(["arc-nl"], tmp_path, say=lambda line: None)
    assert "arc-nl" not in registry()


def test_an_unknown_repo_names_the_endpoint(hub, tmp_path):
    with pytest.raises(EvalError, match=f"{hub.url} has no dataset GroNLP/squad-nl-v2.0"):
        fetch(["squad-nl"], tmp_path, say=lambda line: None)


def test_a_file_that_is_not_the_one_the_hub_lists_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv(REGISTRY_ENV, str(tmp_path / "registry.json"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    name = "Dutch/test-00000-of-00001.parquet"
    with FakeHub({"CohereLabs/include-base-44": {name: INCLUDE}}, listed={name: INCLUDE + b"x"}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        with pytest.raises(EvalError, match="does not match the sha256 the Hub lists"):
            fetch(["include-nl"], tmp_path, say=lambda line: None)
    assert "include-nl" not in registry()
