"""Decontamination covers every public set present on this machine: a training document that
shares a 13-gram with a public set's evaluated rows is refused naming the set; train splits and
sets that are not here are left out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datatrove.data import Document

from gptnl.data_pipeline.decontaminate import Decontaminator, public_files, task_index
from gptnl.evals.spec import load_suite
from gptnl.evals.tasks import SUITES_DIR, TASKS_DIR
from gptnl.public_data import DATA_ENV, REGISTRY_ENV

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "public"
PASSAGE = json.loads((FIXTURES / "belebele-nl" / "data" / "nld_Latn.jsonl").read_text(encoding="utf-8")
                     .splitlines()[0])["flores_passage"]
CLEAN = ("Het waterschap meldt dat de dijken rond het meer dit najaar worden versterkt, zodat de polder ook bij "
         "zware stormen droog blijft en de boeren hun land kunnen blijven bewerken zonder zorgen.")


@pytest.fixture(autouse=True)
def registry(monkeypatch, tmp_path):
    monkeypatch.setenv(REGISTRY_ENV, str(tmp_path / "registry.json"))
    monkeypatch.delenv(DATA_ENV, raising=False)


def _doc(text: str) -> Document:
    return Document(text=text, id="d1", metadata={})


def test_every_public_set_present_here_is_covered_but_train_splits(monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(FIXTURES))
    covered = public_files(TASKS_DIR)
    assert sorted(covered) == sorted(load_suite(SUITES_DIR / "euroeval-nl.yaml").tasks)
    assert FIXTURES / "copa-nl" / "test.jsonl" in covered["copa-nl"]
    assert FIXTURES / "copa-nl" / "train.jsonl" not in covered["copa-nl"]
    assert all(len(files) == 6 for task, files in covered.items() if task.startswith("mbbq"))


def test_a_document_quoting_a_public_set_is_refused_naming_it(monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(FIXTURES))
    step = Decontaminator(TASKS_DIR)
    doc = _doc(f"Nieuws uit de regio. {PASSAGE} Meer weten? Kijk op de site.")
    assert step.filter(doc) == (False, "contamination")
    assert doc.metadata["refusal"] == "contamination (shares a 13-gram with evals task belebele-nl)"
    assert step.filter(_doc(CLEAN)) is True


def test_public_sets_not_on_this_machine_add_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert public_files(TASKS_DIR) == {}
    without = len(task_index(TASKS_DIR, 13))
    monkeypatch.setenv(DATA_ENV, str(FIXTURES))
    assert len(task_index(TASKS_DIR, 13)) > without
    assert Decontaminator(TASKS_DIR).filter(_doc(PASSAGE)) == (False, "contamination")
