"""The usage report and the budget carry-over, read from audit logs written by the gateway's own
AuditLog writer (its exact line format)."""

from __future__ import annotations

import csv
import io
import json

import pytest
import yaml
from typer.testing import CliRunner

from gptnl.cli import app
from gptnl.errors import GptnlError
from gptnl.serving.audit import AuditLog
from gptnl.serving.usage import spent_this_period, usage_report


def line(time: str, key: str | None, model: str | None = "m", status: int = 200, prompt: int | None = 10,
         completion: int | None = 5, latency: float = 10.0) -> dict:
    return {"time": time, "request_id": "r", "key": key, "model": model, "endpoint": "chat", "status": status,
            "stream": False, "prompt_tokens": prompt, "completion_tokens": completion, "latency_ms": latency}


@pytest.fixture
def audit(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl")
    for i in range(100):  # latencies 1..100 ms for key a
        log.write(line("2030-03-01T10:00:00Z", "a", latency=float(i + 1)))
    log.write(line("2030-03-02T09:00:00Z", "a", status=429, prompt=None, completion=None, latency=0.5))
    log.write(line("2030-03-02T09:30:00Z", "b", model="n", prompt=7, completion=3, latency=40.0))
    log.write(line("2030-03-02T10:00:00Z", "b", model="n", status=502, prompt=None, completion=None))
    log.write(line("2030-03-03T10:00:00Z", None, model=None, status=401, prompt=None, completion=None))
    log.close()
    return tmp_path / "audit.jsonl"


def by_group(rows) -> dict:
    return {r.group: r.as_dict() for r in rows}


def test_report_per_key_counts_tokens_refusals_and_latency(audit):
    rows, notes = usage_report(audit, by="key")
    got = by_group(rows)
    assert set(got) == {"a", "b", "-"} and notes.skipped == []
    a = got["a"]
    assert (a["requests"], a["ok"], a["refused"], a["errors"]) == (101, 100, 1, 0)
    assert (a["prompt_tokens"], a["completion_tokens"], a["tokens"]) == (1000, 500, 1500)
    assert (a["p50_ms"], a["p99_ms"]) == (50.0, 99.0)  # nearest rank over 1..100; the refusal's 0.5 is not in
    b = got["b"]
    assert (b["requests"], b["ok"], b["errors"], b["tokens"]) == (2, 1, 1, 10)
    assert got["-"]["errors"] == 1  # unauthenticated requests are reported, under '-'


def test_report_per_model_and_per_day(audit):
    assert by_group(usage_report(audit, by="model")[0])["n"]["tokens"] == 10
    days = by_group(usage_report(audit, by="day")[0])
    assert list(days) == ["2030-03-01", "2030-03-02", "2030-03-03"]
    assert days["2030-03-02"]["requests"] == 3 and days["2030-03-02"]["refused"] == 1


def test_since_a_day_or_a_time(audit):
    assert set(by_group(usage_report(audit, since="2030-03-02")[0])) == {"a", "b", "-"}
    got = by_group(usage_report(audit, since="2030-03-02T09:15:00Z")[0])
    assert "a" not in got and got["b"]["requests"] == 2
    with pytest.raises(GptnlError, match="--since"):
        usage_report(audit, since="02/03/2030")


def test_a_torn_last_line_is_skipped_with_a_note(audit):
    with open(audit, "ab") as fh:
        fh.write(b'{"time":"2030-03-04T00:00:00Z","key":"a","status":200,"prompt_tok')
    rows, notes = usage_report(audit)
    assert by_group(rows)["a"]["requests"] == 101
    assert len(notes.skipped) == 1 and "last line is incomplete" in notes.skipped[0]
    assert notes.skipped[0].startswith("line 105:")


def test_a_line_closed_after_a_crash_is_skipped_with_a_note(audit):
    with open(audit, "ab") as fh:
        fh.write(b'{"time":"2030-03-04T00:00:00Z","ke')
    AuditLog(audit).write(line("2030-03-04T01:00:00Z", "a"))  # the writer closes the cut line first
    rows, notes = usage_report(audit)
    assert by_group(rows)["a"]["requests"] == 102
    assert notes.skipped == ["line 105: not a JSON record (a line cut by a crash); skipped"]


def test_a_missing_log_or_unknown_grouping_is_a_clear_error(tmp_path, audit):
    with pytest.raises(GptnlError, match="no audit log"):
        usage_report(tmp_path / "nope.jsonl")
    with pytest.raises(GptnlError, match="--by"):
        usage_report(audit, by="hour")


def test_spent_this_period_counts_the_day_and_the_month_of_now(audit):
    import datetime as dt

    now = dt.datetime(2030, 3, 2, 23, 0, tzinfo=dt.UTC).timestamp()
    assert spent_this_period(audit, now) == {"a": ("2030-03-02", 0, "2030-03", 1500),
                                             "b": ("2030-03-02", 10, "2030-03", 10)}
    assert spent_this_period(audit, dt.datetime(2030, 4, 1, tzinfo=dt.UTC).timestamp()) == {}


def test_cli_usage_as_csv_and_json(tmp_path, audit):
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(
        {"audit": "audit.jsonl", "models": {"m": {"replicas": 0, "upstreams": ["http://127.0.0.1:1"]}}}))
    cfg = str(tmp_path / "gateway.yaml")
    res = CliRunner().invoke(app, ["keys", "usage", "--config", cfg, "--by", "model", "--format", "csv"])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [r["model"] for r in rows] == ["-", "m", "n"] and rows[1]["tokens"] == "1500"
    res = CliRunner().invoke(app, ["keys", "usage", "--config", cfg, "--format", "json", "--since", "2030-03-03"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == [{"key": "-", "requests": 1, "ok": 0, "refused": 0, "errors": 1,
                                       "prompt_tokens": 0, "completion_tokens": 0, "tokens": 0, "p50_ms": None,
                                       "p99_ms": None}]
    res = CliRunner().invoke(app, ["keys", "usage", "--config", cfg, "--format", "xml"])
    assert isinstance(res.exception, GptnlError) and "--format" in str(res.exception)


def test_a_line_with_an_escaped_lone_surrogate_is_still_counted(tmp_path):
    """JSON allows the escape `\\ud800`; orjson refuses it, so the reader falls back to json."""
    path = tmp_path / "audit.jsonl"
    path.write_text(json.dumps(line("2030-03-01T10:00:00Z", "a\ud800")) + "\n")
    rows, notes = usage_report(path)
    assert [r.group for r in rows] == ["a\ud800"] and notes.skipped == []
