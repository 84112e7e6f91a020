"""Language ID with py3langid on the project's labelled nl/af/de/en/fy test set and the sample."""

import json

import pytest
from conftest import SAMPLE

from gptnl.data_pipeline.langid import TESTSET, LanguageId, evaluate, load_testset


@pytest.fixture(scope="module")
def lid():
    return LanguageId()


def test_testset_is_balanced_and_labelled():
    items = load_testset()
    assert TESTSET.is_file() and len(items) == 210
    counts = {}
    for item in items:
        counts[(item["lang"], item["kind"])] = counts.get((item["lang"], item["kind"]), 0) + 1
    assert set(counts.values()) == {30, 12} and len(counts) == 10


def test_accuracy_and_no_afrikaans_or_frisian_called_dutch(lid):
    report = evaluate(load_testset(), lid)
    assert report["items"] == 210
    assert report["accuracy"] >= 0.97, report["per_group"]
    assert report["wrongly_dutch"] == {}, report["confusion"]


def test_sample_is_dutch_and_bad_languages_are_not(lid):
    for path in SAMPLE.glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            guess = lid.classify(json.loads(line)["text"])
            assert guess.lang == "nl" and guess.score > 0.9
    for line in (SAMPLE / "bad" / "bad.jsonl").read_text(encoding="utf-8").splitlines():
        doc = json.loads(line)
        if doc["expected"].startswith("lang-"):
            assert lid.classify(doc["text"]).lang == doc["expected"].removeprefix("lang-"), doc["id"]


def test_cli_reports_accuracy():
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "gptnl", "data", "langid"], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "120"})
    assert proc.returncode == 0, proc.stderr
    import re

    assert re.search(r"overall \d+\.\d%; other languages labelled Dutch: none", proc.stdout), proc.stdout
