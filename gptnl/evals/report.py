"""The report people read: a leaderboard, one chart per public value with 95 % interval whiskers,
a profile per model and a comparison of the models, as static HTML with PNG charts (matplotlib)
and a Markdown summary."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import jinja2

from gptnl.assets import asset
from gptnl.evals import results as res
from gptnl.evals.spec import VALUES
from gptnl.evals.tasks import EvalError
from gptnl.fileio import atomic_write_text

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


def _chart(value: str, recs: list[dict], labels: list[str], several: bool, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["task"]["name"], m) for r in recs for m in r["metrics"]})
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) + 0.8, 3.4), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (task, metric) in zip(axes[0], panels, strict=True):
        for i, lab in enumerate(labels):
            found = [r for r in recs if r["task"]["name"] == task and label(r, several) == lab]
            m = found[0]["metrics"].get(metric) if found else None
            if not m or m["value"] is None:
                continue
            err = [[m["value"] - m["low"]], [m["high"] - m["value"]]] if m["low"] is not None else None
            ax.bar(i, m["value"], yerr=err, capsize=4, color=colours[i % len(colours)], label=lab)
        hib = next((r["higher_is_better"].get(metric) for r in recs if metric in r["higher_is_better"]), None)
        arrow = {True: " ↑", False: " ↓"}.get(hib, "")
        ax.set_title(f"{task}\n{metric}{arrow}", fontsize=9)
        ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=8, ha="right")
        ax.axhline(0, color="grey", linewidth=0.5)
    fig.suptitle(value, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


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


def write_report(results_dir: Path, out: Path) -> Path:
    """Write report.html, report.md and charts/*.png into `out`; returns the HTML path."""
    records = latest(res.read(Path(results_dir) / "results.jsonl"))
    if not records:
        raise EvalError(f"{results_dir}: no results.jsonl records to report (run `gptnl eval run` first)")
    several = len({r["settings"]["name"] for r in records}) > 1
    labels = sorted({label(r, several) for r in records})
    values = [v for v in VALUES if any(r["task"]["value"] == v for r in records)]
    tasks = sorted({(VALUES.index(r["task"]["value"]), r["task"]["name"]) for r in records})
    task_names = [t for _, t in tasks]
    by = {(label(r, several), r["task"]["name"]): r for r in records}
    primaries = {r["task"]["name"]: r["primary"] for r in records}
    board = [{"model": lab, "cells": [cell_text(by[(lab, t)]["metrics"][primaries[t]]) if (lab, t) in by else "–"
                                      for t in task_names]} for lab in labels]
    charts_dir = Path(out) / "charts"
    charts_dir.mkdir(parents=True, exist_ok=True)
    charts = []
    for v in values:
        path = charts_dir / f"{v}.png"
        _chart(v, [r for r in records if r["task"]["value"] == v], labels, several, path)
        charts.append({"value": v, "png": f"charts/{v}.png"})
    profiles = [{"model": lab, "rows": [
        {"value": r["task"]["value"], "task": r["task"]["name"], "metric": m, "text": cell_text(mv), "n": mv["n"]}
        for r in sorted((r for r in records if label(r, several) == lab), key=lambda r: task_names.index(
            r["task"]["name"])) for m, mv in r["metrics"].items()]} for lab in labels]
    context = {"labels": labels, "tasks": task_names, "primaries": primaries, "board": board, "charts": charts,
               "profiles": profiles, "comparisons": _comparisons(records, labels, several),
               "values": {r["task"]["name"]: r["task"]["value"] for r in records},
               "settings": sorted({r["settings"]["name"] for r in records}), "count": len(records)}
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=jinja2.select_autoescape(["html"]),
                             undefined=jinja2.StrictUndefined)
    html = Path(out) / "report.html"
    atomic_write_text(html, env.get_template("report.html.j2").render(**context))
    atomic_write_text(Path(out) / "report.md", env.get_template("report.md.j2").render(**context))
    return html
