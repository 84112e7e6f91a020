"""The public Dutch sets: every task of the euroeval-nl suite reads its fixture (rows written for
these tests in the publisher's exact layout and columns, tests/fixtures/public), maps the fields as
lm-eval and EuroEval do, reads the publisher's known variants alike, and refuses a file in another
layout naming the file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gptnl.evals.spec import load_suite
from gptnl.evals.tasks import SUITES_DIR, TASKS_DIR, EvalError, discover, load_task
from gptnl.public_data import DATA_ENV, REGISTRY_ENV, PublicDataError, locate, record, rows

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "public"
SUITE = load_suite(SUITES_DIR / "euroeval-nl.yaml")
NON_COMMERCIAL = {"arc-nl", "hellaswag-nl", "mmlu-nl", "truthfulqa-nl-mc1", "truthfulqa-nl-mc2", "dbrd"}


@pytest.fixture(autouse=True)
def fixtures_as_data(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV, str(FIXTURES))
    monkeypatch.setenv(REGISTRY_ENV, str(tmp_path / "registry.json"))


def public_tasks() -> list[str]:
    return [n for n, p in discover(TASKS_DIR).items() if "\npublic:" in p.read_text(encoding="utf-8")]


def test_the_suite_holds_every_public_task_and_each_has_a_fixture():
    assert sorted(SUITE.tasks) == sorted(public_tasks())
    assert all((FIXTURES / name).is_dir() for name in SUITE.tasks)


@pytest.mark.parametrize("name", SUITE.tasks)
def test_every_task_loads_its_fixture_with_licence_and_may_train(name):
    task = load_task(name)
    assert task.items and len({i["id"] for i in task.items}) == len(task.items)
    for item in task.items:
        assert task.spec.prompt.format(**item)
    assert task.spec.licence != "CC0-1.0"
    assert task.spec.public.may_train is (name not in NON_COMMERCIAL and name != "dutch-cola")


EXPECTED = {  # task: (item index, fields it must have)
    "belebele-nl": (1, {"question": "Hoeveel tijd winnen fietsers?", "c": "Een kwartier", "answer": 2,
                        "choices": ["A", "B", "C", "D"]}),
    "global-mmlu-nl": (0, {"option_b": "De Rijn", "answer": 1, "category": "high_school_geography"}),
    "include-nl": (1, {"option_c": "Leeuwarden", "answer": 2}),
    "mmlu-nl": (0, {"instruction": "Hoeveel elementen heeft de groep Z_4?", "answer": 2}),
    "arc-nl": (0, {"query": "Question: Welke stof is een vloeistof bij kamertemperatuur?\nAnswer:",
                   "choices": ["IJzer", "Zuurstof", "Water", "Zout"], "answer": 2}),
    "hellaswag-nl": (0, {"query": "Fietsen repareren: Een man zet een fiets op de kop. Hij", "answer": 0}),
    "copa-nl": (0, {"premise": "De fiets stond op slot", "connector": "want",
                    "choices": ["ik vond de sleutel niet.", "ik had hem vergrendeld."], "answer": 1}),
    "truthfulqa-nl-mc1": (1, {"answer": 1}),
    "truthfulqa-nl-mc2": (0, {"answer": [0, 1]}),
    "squad-nl": (2, {"question": "Hoeveel bezoekers kwamen er in 1900?", "answer": [""]}),
    "scala-nl": (1, {"text": "De trein naar vertrekt Utrecht om acht uur.", "answer": 1}),
    "dutch-cola": (2, {"text": "Jan heeft de brief gisteren geschreven zijn.", "answer": 1}),
    "dbrd": (1, {"answer": 1}),
    "mbbq-nl": (1, {"condition": "disambig", "answer": 1, "stereotyped": 0, "unknown": 2}),
    "mbbq-nl-control": (0, {"condition": "ambig", "answer": 2}),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fields_map_as_the_reference_harnesses_do(name):
    index, fields = EXPECTED[name]
    item = load_task(name).items[index]
    assert {k: item[k] for k in fields} == fields


def test_okapi_text_is_cleaned_as_lm_eval_does_and_empty_options_are_dropped():
    arc = load_task("arc-nl").items
    assert "[title]" not in arc[1]["query"] and len(arc[1]["choices"]) == 4
    assert len(arc[2]["choices"]) == 5 and arc[2]["answer"] == 4
    assert "bakt een taart. in de oven." in load_task("hellaswag-nl").items[0]["choices"]


def test_classification_labels_follow_euroeval():
    assert [i["answer"] for i in load_task("scala-nl").items] == [0, 1, 1, 0]
    assert [i["answer"] for i in load_task("dutch-cola").items] == [0, 1, 1]
    assert [i["answer"] for i in load_task("dbrd").items] == [0, 1, 0]
    assert load_task("dbrd").spec.choices == ["positief", "negatief"]


def test_mbbq_reads_every_category_file_with_ids_and_scenarios_apart():
    items = load_task("mbbq-nl").items
    assert {i["id"].split(":")[0] for i in items} == {
        f"{c}_nl" for c in ("Age", "Disability_status", "Gender_identity", "Physical_appearance", "SES",
                            "Sexual_orientation")}
    assert len({i["scenario"] for i in items}) == 6  # the two contexts of a scenario stay one cluster
    assert all(i["id"].split(":")[0].endswith("_control_nl") for i in load_task("mbbq-nl-control").items)


def _as_parquet(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist([r for _, r in rows(src)]), dest)


@pytest.mark.parametrize("name, src, variant", [
    ("belebele-nl", "data/nld_Latn.jsonl", "nld_Latn/test/0000.parquet"),
    ("arc-nl", "data/nl/test.jsonl", "nl/test/0000.parquet"),
    ("hellaswag-nl", "data/nl/val.jsonl", "nl/val/0000.parquet"),
    ("dutch-cola", "test.csv", "default/test/0000.parquet"),
])
def test_the_hubs_parquet_conversion_reads_as_the_original(name, src, variant, tmp_path, monkeypatch):
    original = load_task(name).items
    _as_parquet(FIXTURES / name / src, tmp_path / name / variant)
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    converted = load_task(name).items
    strip = lambda items: [{k: v for k, v in i.items() if k != "id"} for i in items]  # noqa: E731
    assert strip(converted) == strip(original)


def _write_wrong(path: Path) -> None:
    """One row in the right file format but another set's columns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    row = {"sentence": "Dit is een andere set.", "gold": 3}
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist([row]), path)
    elif path.suffix == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(row))
            w.writeheader()
            w.writerow(row)
    else:
        path.write_text(json.dumps(row) + "\n", encoding="utf-8")


@pytest.mark.parametrize("name", SUITE.tasks)
def test_a_file_in_another_layout_is_refused_naming_the_file(name, tmp_path, monkeypatch):
    spec = load_task(name).spec
    first = spec.public.files[spec.public.split][0]
    targets = [first] if isinstance(first, str) else first
    for target in targets:
        _write_wrong(tmp_path / name / target.replace("*", "00000-of-00001"))
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    with pytest.raises(EvalError, match=r"not an? .*(row|MBBQ)") as err:
        load_task(name)
    assert str(tmp_path / name) in str(err.value)


def test_a_set_that_is_not_here_says_where_it_looked_and_how_to_fetch_it(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    with pytest.raises(EvalError) as err:
        load_task("belebele-nl")
    msg = str(err.value)
    assert str(tmp_path / "belebele-nl") in msg and "data/nld_Latn.jsonl" in msg
    assert "gptnl eval fetch belebele-nl --to DIR" in msg


def test_a_fetched_set_is_found_through_the_registry(monkeypatch):
    monkeypatch.delenv(DATA_ENV)
    with pytest.raises(PublicDataError):
        locate("copa-nl", {"test": ["test.jsonl"]}, "test")
    record("copa-nl", FIXTURES / "copa-nl")
    folder, files = locate("copa-nl", {"test": ["test.jsonl"]}, "test")
    assert folder == FIXTURES / "copa-nl" and files == [FIXTURES / "copa-nl" / "test.jsonl"]
    assert load_task("copa-nl").items


def test_a_broken_file_is_refused_with_its_line(tmp_path, monkeypatch):
    bad = tmp_path / "copa-nl" / "test.jsonl"
    bad.parent.mkdir()
    bad.write_text('{"id": 1, "premise": "x"\n', encoding="utf-8")
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    with pytest.raises(EvalError, match=rf"{bad}:1: not JSON"):
        load_task("copa-nl")
    bad.with_name("x.parquet").write_text("not parquet")
    with pytest.raises(PublicDataError, match="not a Parquet file"):
        list(rows(bad.with_name("x.parquet")))


def test_the_task_hash_covers_the_publishers_files(tmp_path, monkeypatch):
    before = load_task("copa-nl").sha256
    (tmp_path / "copa-nl").mkdir()
    lines = (FIXTURES / "copa-nl" / "test.jsonl").read_text(encoding="utf-8").splitlines()
    (tmp_path / "copa-nl" / "test.jsonl").write_text(lines[0] + "\n", encoding="utf-8")
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert load_task("copa-nl").sha256 != before
