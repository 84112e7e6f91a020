"""The report people read: a leaderboard per suite, published reference scores beside ours, one
chart per public value with 95 % interval whiskers, the cells that failed, a profile per model and a
comparison of the models, as static HTML with PNG charts (matplotlib) and a Markdown summary."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import jinja2

from gptnl.assets import asset
from gptnl.evals import results as res
from gptnl.evals.spec import VALUES
from gptnl.evals.tasks import EvalError
from gptnl.fileio import atomic_write_text
from gptnl.templates import HTML

TEMPLATES = asset("evals", "templates")


def fmt(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"


def cell_text(m: dict) -> str:
    if m["value"] is None:
        return "–"
    ci = f" [{fmt(m['low'])}, {fmt(m['high'])}]" if m["low"] is not None else ""
    return f"{fmt(m['value'])}{ci}"


def latest(records: list[dict]) -> list[dict]:
    """One record per cell (a retried cell may have appended twice): the last."""
    return list({r["cell"]: r for r in records}.values())


def label(r: dict, several_settings: bool) -> str:
    return f"{r['model']['name']} ({r['settings']['name']})" if several_settings else r["model"]["name"]


def _comparisons(recs: list[dict], labels: list[str], several: bool) -> list[dict]:
    """Each pair of models on each task's primary metric: the difference and whether the 95 %
    intervals overlap (a quick check, not a test)."""
    out = []
    by = {(label(r, several), r["task"]["name"]): r for r in recs}
    tasks = sorted({r["task"]["name"] for r in recs})
    for a, b in combinations(labels, 2):
        rows = []
        for t in tasks:
            ra, rb = by.get((a, t)), by.get((b, t))
            if not ra or not rb:
                continue
            p = ra["primary"]
            ma, mb = ra["metrics"][p], rb["metrics"][p]
            if ma["value"] is None or mb["value"] is None:
                continue
            apart = (ma["low"] is not None and mb["low"] is not None
                     and (ma["high"] < mb["low"] or mb["high"] < ma["low"]))
            better = None
            if apart and ra["higher_is_better"].get(p) is not None:
                better = a if (ma["value"] > mb["value"]) == ra["higher_is_better"][p] else b
            rows.append({"task": t, "metric": p, "a": cell_text(ma), "b": cell_text(mb),
                         "diff": fmt(ma["value"] - mb["value"]), "apart": apart, "better": better})
        out.append({"a": a, "b": b, "rows": rows})
    return out


def _boards(records: list[dict], labels: list[str], several: bool) -> list[dict]:
    """One leaderboard per suite (public values, EuroEval-nl, ...): a column per task's primary metric."""
    by = {(label(r, several), r["task"]["name"]): r for r in records}
    suites: dict[str, set] = {}
    for r in records:
        suites.setdefault((r.get("suite") or {}).get("name") or "no suite", set()).add(
            (VALUES.index(r["task"]["value"]) if r["task"]["value"] in VALUES else len(VALUES), r["task"]["name"]))
    out = []
    for name in sorted(suites, key=lambda n: (n == "no suite", n)):
        tasks = [t for _, t in sorted(suites[name])]
        rows = [{"model": lab, "cells": [cell_text(by[(lab, t)]["metrics"][by[(lab, t)]["primary"]])
                                         if (lab, t) in by else "–" for t in tasks]} for lab in labels]
        out.append({"suite": name, "tasks": tasks, "rows": rows})
    return out


def _reference_rows(records: list[dict], labels: list[str], several: bool, refs: list) -> list[dict]:
    """Each published score beside ours on the same task and metric."""
    by = {(label(r, several), r["task"]["name"]): r for r in records}
    rows = []
    for ref in refs:
        ours = []
        for lab in labels:
            m = by.get((lab, ref.task), {}).get("metrics", {}).get(ref.metric)
            ours.append(cell_text(m) if m else "–")
        rows.append({"task": ref.task, "metric": ref.metric, "model": ref.model, "value": fmt(ref.value),
                     "source": ref.source, "ours": ours})
    return rows


def _profiles(records: list[dict], labels: list[str], several: bool, task_names: list[str]) -> list[dict]:
    return [{"model": lab, "rows": [
        {"value": r["task"]["value"], "task": r["task"]["name"], "metric": m, "text": cell_text(mv), "n": mv["n"],
         "unmapped": r["task"].get("unmapped", 0)}
        for r in sorted((r for r in records if label(r, several) == lab), key=lambda r: task_names.index(
            r["task"]["name"])) for m, mv in r["metrics"].items()]} for lab in labels]


def write_report(results_dir: Path, out: Path, references: Path | None = None) -> Path:
    """Write report.html, report.md and charts/*.png into `out`; returns the HTML path. `references`:
    a CSV of published scores (model, task, metric, value, source) to set beside ours."""
    from gptnl.evals.charts import chart
    from gptnl.evals.references import read_references

    refs = read_references(references) if references else []
    records = latest(res.read(Path(results_dir) / "results.jsonl"))
    failed = res.failures(Path(results_dir))
    if not records and not failed:
        raise EvalError(f"{results_dir}: no results.jsonl records to report (run `gptnl eval run` first)")
    several = len({r["settings"]["name"] for r in records}) > 1
    labels = sorted({label(r, several) for r in records})
    values = [v for v in VALUES if any(r["task"]["value"] == v for r in records)]
    tasks = sorted({(VALUES.index(r["task"]["value"]), r["task"]["name"]) for r in records})
    task_names = [t for _, t in tasks]
    charts_dir = Path(out) / "charts"
    charts_dir.mkdir(parents=True, exist_ok=True)
    charts = []
    for v in values:
        chart(v, [r for r in records if r["task"]["value"] == v], labels, lambda r: label(r, several),
              charts_dir / f"{v}.png")
        charts.append({"value": v, "png": f"charts/{v}.png"})
    context = {"labels": labels, "tasks": task_names, "primaries": {r["task"]["name"]: r["primary"] for r in records},
               "boards": _boards(records, labels, several), "charts": charts,
               "profiles": _profiles(records, labels, several, task_names),
               "comparisons": _comparisons(records, labels, several),
               "references": _reference_rows(records, labels, several, refs),
               "failed": [f.model_dump() for f in failed],
               "values": {r["task"]["name"]: r["task"]["value"] for r in records},
               "settings": sorted({r["settings"]["name"] for r in records}), "count": len(records)}
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=jinja2.select_autoescape(HTML),
                             undefined=jinja2.StrictUndefined)
    html = Path(out) / "report.html"
    atomic_write_text(html, env.get_template("report.html.j2").render(**context))
    atomic_write_text(Path(out) / "report.md", env.get_template("report.md.j2").render(**context))
    return html
