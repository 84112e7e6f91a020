"""The report from records on disk: a leaderboard per suite, published scores from the user's CSV
beside ours, the failed cells that have not finished since; and the CSV's errors, by line."""

from __future__ import annotations

import json

import pytest

from gptnl.evals import results as res
from gptnl.evals.references import read_references
from gptnl.evals.report import write_report
from gptnl.evals.tasks import EvalError


def record(model: str, task: str, value: str, suite: str, metric: str, v: float, started: str = "2026-01-01T00:00:00"):
    info = res.ModelInfo(name=model, endpoint="x", model_id=model, fingerprint="")
    settings = {"name": "default"}
    return {"schema": "gptnl.eval.result/1", "cell": res.cell_id(info, task, "sha", settings),
            "model": info.model_dump(), "task": {"name": task, "value": value, "type": "multiple_choice",
                                                 "version": "1", "sha256": "0" * 64, "items": 10},
            "suite": {"name": suite, "sha256": "0" * 64}, "settings": settings,
            "metrics": {metric: {"value": v, "low": v - 0.1, "high": v + 0.1, "n": 10, "clusters": 10}},
            "primary": metric, "higher_is_better": {metric: True},
            "timings": {"started": started, "wall_s": 1.0, "requests": 1, "cached": 0}, "gptnl_version": "0"}


@pytest.fixture
def results_dir(tmp_path):
    d = tmp_path / "results"
    for r in [record("alfa", "kennis", "kennis", "public-values", "accuracy", 0.5),
              record("alfa", "scala-nl", "taalvaardigheid", "euroeval-nl", "mcc", 0.2),
              record("beta", "kennis", "kennis", "public-values", "accuracy", 0.7)]:
        res.append(d / "results.jsonl", r)
    for task, at in (("belebele-nl", "2026-01-02T00:00:00"), ("kennis", "2025-12-31T00:00:00")):
        res.append_failure(d / "failed.jsonl", res.FailedCell(cell="c", model="alfa", task=task, settings="default",
                                                              error=f"{task}: the public files are not here", at=at))
    return d


def test_the_report_has_a_board_per_suite_published_scores_and_the_open_failures(results_dir, tmp_path):
    refs = tmp_path / "refs.csv"
    refs.write_text("model,task,metric,value,source\nGEITje 7B,scala-nl,mcc,0.31,EuroEval leaderboard 2025\n")
    html = write_report(results_dir, tmp_path / "report", refs).read_text()
    assert 'id="leaderboard-public-values"' in html and 'id="leaderboard-euroeval-nl"' in html
    references = html.split('id="references-table"')[1].split("</table>")[0]
    assert "GEITje 7B" in references and "0.310" in references and "0.200 [0.100, 0.300]" in references
    failed = html.split('id="failed-table"')[1].split("</table>")[0]
    assert "belebele-nl" in failed and "kennis" not in failed  # kennis finished after its failure
    md = (tmp_path / "report" / "report.md").read_text()
    assert "### euroeval-nl" in md and "| scala-nl | mcc | GEITje 7B | 0.310 |" in md


@pytest.mark.parametrize("text, error", [
    ("model,task,value,source\nx,kennis,0.1,y\n", r"refs.csv:1: the header must be model,task,metric,value,source"),
    ("model,task,metric,value,source\nx,kennis,accuracy,,y\n", r"refs.csv:2: every row needs"),
    ("model,task,metric,value,source\nx,kennis,accuracy,0.1,y,extra\n", r"refs.csv:2: every row needs"),
    ("model,task,metric,value,source\nx,kennis,accuracy,0.1,y\nx,kennis,accuracy,nan,y\n", r"refs.csv:3: .*finite"),
])
def test_a_malformed_reference_csv_is_refused_naming_the_line(tmp_path, text, error):
    (tmp_path / "refs.csv").write_text(text)
    with pytest.raises(EvalError, match=error):
        read_references(tmp_path / "refs.csv")


def test_reference_rows_keep_quoted_commas(tmp_path):
    (tmp_path / "refs.csv").write_text('model,task,metric,value,source\n"A, B",kennis,accuracy,0.5,"p. 3, t. 2"\n')
    (ref,) = read_references(tmp_path / "refs.csv")
    assert (ref.model, ref.value, ref.source) == ("A, B", 0.5, "p. 3, t. 2")
    assert json.loads(ref.model_dump_json())["task"] == "kennis"


def test_text_from_models_and_errors_is_escaped_in_the_html(tmp_path):
    """A failed cell's error (an upstream's body) or a task name is text, never markup in the page."""
    d = tmp_path / "results"
    res.append(d / "results.jsonl", record("alfa", "kennis", "kennis", "public-values", "accuracy", 0.5))
    res.append_failure(d / "failed.jsonl", res.FailedCell(cell="c", model="alfa", task="belebele-nl",
                                                          settings="default", error="<script>alert(1)</script> & co",
                                                          at="2026-01-02T00:00:00"))
    html = write_report(d, tmp_path / "report").read_text()
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in html
    assert "<script>alert(1)</script> & co" in (tmp_path / "report" / "report.md").read_text()  # Markdown: as is
