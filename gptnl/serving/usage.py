"""Usage from the audit log: the report for cost allocation (`gptnl keys usage`) and the budgets a
restarted gateway carries over.

The log is read line by line, never whole: a month of a busy gateway is many lines. What is kept per
group is counters and one 4-byte latency per request (for exact percentiles). A line that is not JSON
(the last one cut by a crash, or a line closed by the audit writer's repair after one) is skipped and
named in the notes, never silently.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from gptnl.errors import GptnlError

GROUPS = ("key", "model", "day")


@dataclass
class Notes:
    """What was skipped while reading, for the user."""

    skipped: list[str] = field(default_factory=list)

    def add(self, lineno: int, why: str) -> None:
        if len(self.skipped) < 20:
            self.skipped.append(f"line {lineno}: {why}")
        elif len(self.skipped) == 20:
            self.skipped.append("more lines skipped; not listed")


def _loads(raw: bytes):
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:  # orjson refuses some JSON that json takes (escaped lone surrogates)
        return json.loads(raw)


def audit_lines(path: Path, notes: Notes, since: str = "") -> Iterator[dict]:
    """The audit log's records in order; unreadable lines are skipped and noted. Lines whose time
    sorts before `since` are skipped unparsed (the writer puts `time` first)."""
    path = Path(path)
    if not path.is_file():
        raise GptnlError(f"{path}: no audit log there (the gateway config's `audit:` names it)")
    head, cut = b'{"time":"', since.encode()
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if cut and raw.startswith(head) and raw[9:9 + len(cut)] < cut:
                continue
            if not raw.strip():
                continue
            try:
                record = _loads(raw)
            except (ValueError, UnicodeDecodeError):
                torn = not raw.endswith(b"\n")
                notes.add(lineno, "the last line is incomplete (being written, or cut by a crash); skipped"
                          if torn else "not a JSON record (a line cut by a crash); skipped")
                continue
            if isinstance(record, dict) and isinstance(record.get("time"), str):
                yield record
            else:
                notes.add(lineno, "not an audit record (no time); skipped")


def _tokens(record: dict) -> tuple[int, int]:
    def num(v) -> int:
        return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0

    return num(record.get("prompt_tokens")), num(record.get("completion_tokens"))


def spent_this_period(path: Path, now: float) -> dict[str, tuple[str, int, str, int]]:
    """Tokens each key used on the UTC day and in the UTC month of `now`, by the audit lines' times:
    `{key: (day, day_tokens, month, month_tokens)}`. An absent log means nothing was spent."""
    day = dt.datetime.fromtimestamp(now, dt.UTC).date().isoformat()
    month = day[:7]
    spent: dict[str, list[int]] = {}
    if not Path(path).is_file():
        return {}
    for r in audit_lines(path, Notes(), since=month):
        if not r["time"].startswith(month) or not isinstance(r.get("key"), str):
            continue
        n = sum(_tokens(r))
        s = spent.setdefault(r["key"], [0, 0])
        s[1] += n
        if r["time"].startswith(day):
            s[0] += n
    return {k: (day, d, month, m) for k, (d, m) in spent.items()}


@dataclass
class Row:
    """One group of the usage report. `refused`: answered 429 (rate limits and budgets); `errors`: any
    other status from 400 on (auth, bad requests, upstream failures, aborted clients). Latency
    percentiles are of the answered requests (a refusal's sub-millisecond answer would pull them down)."""

    group: str
    requests: int = 0
    ok: int = 0
    refused: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    _latency: array = field(default_factory=lambda: array("f"), repr=False)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def percentile(self, p: float) -> float | None:
        """Nearest-rank percentile of the latencies in ms (None without any)."""
        if not self._latency:
            return None
        ordered = sorted(self._latency)
        return round(float(ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]), 1)

    def as_dict(self) -> dict:
        return {"group": self.group, "requests": self.requests, "ok": self.ok, "refused": self.refused,
                "errors": self.errors, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "tokens": self.tokens,
                "p50_ms": self.percentile(50), "p99_ms": self.percentile(99)}


def parse_since(since: str | None) -> str | None:
    """--since as the audit log's time format (a day, or a UTC time), for a string comparison."""
    if since is None:
        return None
    try:
        if len(since) == 10:
            return dt.date.fromisoformat(since).isoformat()
        t = dt.datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError:
        raise GptnlError(f"--since {since!r}: use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ") from None
    if t.tzinfo is not None:
        t = t.astimezone(dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def usage_report(path: Path, since: str | None = None, by: str = "key") -> tuple[list[Row], Notes]:
    """Requests, refusals, tokens and latency percentiles per key, model or UTC day, from `since` on."""
    if by not in GROUPS:
        raise GptnlError(f"--by {by!r}: use one of {', '.join(GROUPS)}")
    start, notes, rows = parse_since(since), Notes(), {}
    for r in audit_lines(path, notes, since=start or ""):
        if start is not None and r["time"] < start:
            continue
        group = r["time"][:10] if by == "day" else r.get(by)
        group = group if isinstance(group, str) and group else "-"
        row = rows.get(group) or rows.setdefault(group, Row(group))
        row.requests += 1
        status = r.get("status")
        if status == 429:
            row.refused += 1
        elif isinstance(status, int) and status >= 400:
            row.errors += 1
        else:
            row.ok += 1
            latency = r.get("latency_ms")
            if isinstance(latency, (int, float)) and not isinstance(latency, bool):
                row._latency.append(latency)
        p, c = _tokens(r)
        row.prompt_tokens += p
        row.completion_tokens += c
    return [rows[g] for g in sorted(rows)], notes
