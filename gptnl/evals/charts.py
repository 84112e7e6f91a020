"""One PNG per public value: a panel per (task, metric), bars per model with 95 % interval
whiskers, laid out in rows of at most three panels so that each stays readable at the size the
report draws it (about 420 px wide)."""

from __future__ import annotations

import math
from pathlib import Path

COLUMNS = 3
PANEL_W, PANEL_H = 4.2, 3.2  # inches at 100 dpi: a panel is as wide as a third of the report's column


def _panel(ax, recs: list[dict], labels: list[str], label_of, task: str, metric: str, colours: list[str]) -> None:
    for i, lab in enumerate(labels):
        found = [r for r in recs if r["task"]["name"] == task and label_of(r) == lab]
        m = found[0]["metrics"].get(metric) if found else None
        if not m or m["value"] is None:
            continue
        err = [[m["value"] - m["low"]], [m["high"] - m["value"]]] if m["low"] is not None else None
        ax.barh(i, m["value"], xerr=err, capsize=3, color=colours[i % len(colours)])
    hib = next((r["higher_is_better"].get(metric) for r in recs if metric in r["higher_is_better"]), None)
    arrow = {True: "  (higher is better)", False: "  (lower is better)"}.get(hib, "")
    ax.set_title(f"{task}\n{metric}{arrow}", fontsize=10)
    ax.set_yticks(range(len(labels)), labels, fontsize=9)
    ax.invert_yaxis()
    ax.tick_params(axis="x", labelsize=9)
    ax.axvline(0, color="grey", linewidth=0.5)


def chart(value: str, recs: list[dict], labels: list[str], label_of, path: Path) -> None:
    """Write the chart of one public value to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["task"]["name"], m) for r in recs for m in r["metrics"]})
    cols = min(COLUMNS, len(panels))
    rows = math.ceil(len(panels) / cols)
    height = PANEL_H + 0.18 * max(0, len(labels) - 3)  # room for every model's name
    fig, axes = plt.subplots(rows, cols, figsize=(PANEL_W * cols, height * rows + 0.5), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (task, metric) in zip(axes.flat, panels, strict=False):
        _panel(ax, recs, labels, label_of, task, metric, colours)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(value, fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
