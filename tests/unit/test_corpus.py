"""Reading corpus dirs: every document in order, and a clear stop at the first broken line."""

import gzip
import json

import pytest
from conftest import SAMPLE

from gptnl.corpus import corpus_files, iter_documents
from gptnl.errors import CorpusError


def test_bundled_sample_reads_completely():
    docs = list(iter_documents(SAMPLE))
    assert len(docs) >= 200
    assert len({d.id for d in docs}) == len(docs)
    words = [len(d.text.split()) for d in docs]
    assert sum(words) / len(words) >= 150


def test_bundled_sample_has_the_documented_fields():
    for path in corpus_files(SAMPLE):
        for line in path.read_text(encoding="utf-8").splitlines():
            doc = json.loads(line)
            assert {"id", "text", "source", "licence", "url", "author", "created"} <= doc.keys()
            assert doc["licence"] == "CC0-1.0"


def test_bad_material_is_kept_out_of_the_sample_dir():
    ids = {d.id for d in iter_documents(SAMPLE)}
    assert not any(i.startswith("gptnl-bad-") for i in ids)


def test_reads_gzip_and_documents_subfolder(tmp_path):
    (tmp_path / "documents").mkdir()
    with gzip.open(tmp_path / "documents" / "a.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write(json.dumps({"id": "x1", "text": "Goedemorgen"}) + "\n")
    (tmp_path / "ledger.jsonl").write_text('{"id": "x1", "outcome": "kept"}\n')
    assert [d.id for d in iter_documents(tmp_path)] == ["x1"]


@pytest.mark.parametrize("lineno, expected", [
    (1, "not valid JSON"),
    (2, "expected a JSON object, got list"),
    (3, "no 'text' field"),
    (4, "'text' must be a string, got int"),
    (5, "'text' must be a string, got NoneType"),
    (6, "no 'id' field"),
    (7, "not valid JSON"),
])
def test_malformed_line_is_named(tmp_path, lineno, expected):
    line = (SAMPLE / "bad" / "malformed.jsonl").read_text(encoding="utf-8").splitlines()[lineno - 1]
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"id": "ok", "text": "Dag"}) + "\n" + line + "\n")
    with pytest.raises(CorpusError) as exc:
        list(iter_documents(tmp_path))
    assert f"{path}:2" in str(exc.value) and expected in str(exc.value)


def test_invalid_utf8_is_named(tmp_path):
    (tmp_path / "c.jsonl").write_bytes(b'{"id": "a", "text": "ok"}\n{"id": "b", "text": "\xff\xfe"}\n')
    with pytest.raises(CorpusError, match="not valid UTF-8"):
        list(iter_documents(tmp_path))


def test_empty_or_missing_dir(tmp_path):
    with pytest.raises(CorpusError, match="no .jsonl"):
        list(iter_documents(tmp_path))
    with pytest.raises(CorpusError, match="not found"):
        list(iter_documents(tmp_path / "nope"))
