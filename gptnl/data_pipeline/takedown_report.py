"""The takedown report (`takedowns/<time>.json` in the corpus) and the "Known takedowns since
training" section that a takedown adds to the cards (`README.md`) of the models trained on the
withdrawn text. The model folder keeps the list as `takedowns.json`, so the section is rebuilt
whole on each takedown and never written twice."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from gptnl.data_pipeline.descendants import Descendant
from gptnl.fileio import atomic_write_json, atomic_write_text

MODEL_TAKEDOWNS = "takedowns.json"
BEGIN, END = "<!-- gptnl:takedowns -->", "<!-- /gptnl:takedowns -->"


class TakedownReport(BaseModel):
    corpus: str
    time: str  # UTC, ISO 8601
    entries: list[str]
    removed: int
    searched: list[str]  # the folders searched for shards, runs and models
    shards: list[Descendant]
    rebuild: list[str]  # the commands that rebuild the shards
    trained: list[Descendant]  # runs, exports and tuned models trained on the corpus before this takedown


def write_report(corpus: Path, report: TakedownReport) -> Path:
    path = Path(corpus) / "takedowns" / f"{report.time.replace(':', '')}.json"
    path.parent.mkdir(exist_ok=True)
    atomic_write_json(path, json.loads(report.model_dump_json()))
    return path


def card_section(rows: list[dict]) -> str:
    """The card's "Known takedowns since training" section, between markers so it can be replaced."""

    def entries(r: dict) -> str:
        shown = ", ".join(f"`{e}`" for e in r["entries"][:5])
        return shown + (f" and {len(r['entries']) - 5} more" if len(r["entries"]) > 5 else "")

    lines = [BEGIN, "## Known takedowns since training", "",
             "Documents were withdrawn from the corpus these weights were trained on after they were trained "
             "(an opt-out or a complaint). The weights still hold what they learnt from that text; train again "
             "from the rebuilt shards to leave it out.", "",
             "| date (UTC) | corpus | documents removed | entries | report |", "|---|---|---|---|---|",
             *[f"| {r['time']} | `{r['corpus']}` | {r['removed']} | {entries(r)} | `{r['report']}` |" for r in rows],
             END]
    return "\n".join(lines) + "\n"


def mark_model_card(model_dir: Path, report: TakedownReport, report_path: Path) -> None:
    """Record the takedown in the model folder and (re)write the card's section of takedowns."""
    model_dir = Path(model_dir)
    record = model_dir / MODEL_TAKEDOWNS
    rows = json.loads(record.read_text()) if record.is_file() else []
    row = {"time": report.time, "corpus": report.corpus, "removed": report.removed, "entries": report.entries,
           "report": str(report_path)}
    if row not in rows:
        rows.append(row)
    atomic_write_json(record, rows)
    card = model_dir / "README.md"
    text = card.read_text(encoding="utf-8") if card.is_file() else ""
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + text[text.index(END) + len(END):].lstrip("\n")
    atomic_write_text(card, text.rstrip("\n") + "\n\n" + card_section(rows))
