"""The demo's one report (`runs/demo/report.html` + `report.md`): what each stage made, with links
to the data card, the training curve and metrics, the model cards and the evaluation report.

Everything in it is read back from the stages' own outputs (stats, manifests, metrics, results), so
the report says what is on disk, not what the demo meant to do. Links are relative: the folder can be
moved or zipped whole. The wording is in `gptnl/templates/demo_report.{md,html}.j2`, one context for
both.
"""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from pathlib import Path

from gptnl import __version__
from gptnl.artefacts import manifest_or_none
from gptnl.evals.report import cell_text, latest
from gptnl.evals.results import read
from gptnl.fileio import atomic_write_text, read_jsonl
from gptnl.templates import render

SECTIONS = ("Corpus", "Tokenizer", "Training", "Instruction tuning", "Serving", "Evaluation", "Model cards",
            "Timings")
NAN = float("nan")


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _produced(folder: Path) -> dict:
    m = manifest_or_none(folder)
    return json.loads(m.produced.model_dump_json()) if m else {}


def _last(path: Path, field: str) -> dict:
    rows = read_jsonl(path) if path.is_file() else []
    return next((r for r in reversed(rows) if field in r), {})


def _rel(out: Path, path: Path) -> str:
    return str(Path(path).resolve().relative_to(out.resolve()))


def write_demo_report(out: Path, timings: dict[str, float], answers: list[tuple[str, str]]) -> tuple[Path, Path]:
    """Write `out/report.md` and `out/report.html`; returns both paths."""
    out = Path(out)
    files = {"ledger": "corpus/ledger.jsonl.gz", "card": "corpus/CARD.md", "metrics": "train/metrics.jsonl",
             "sft_ledger": "sft/data/ledger.jsonl", "audit": "serving/audit.jsonl",
             "eval_html": "evals/report/report.html", "eval_md": "evals/report/report.md",
             "base_card": "model/README.md", "tuned_card": "sft/model/README.md"}
    links = {name: _rel(out, out / path) for name, path in files.items()}
    links["loss_png"] = _rel(out, out / "train" / "loss.png") if (out / "train" / "loss.png").is_file() else None
    context = {"written": f"{datetime.now(UTC):%Y-%m-%d %H:%M}", "version": __version__,
               "machine": f"{platform.machine()}, {platform.system()}", "links": links,
               **_data(out), "training": _training(out), "sft": _sft(out), **_evaluation(out, answers),
               "timings": [[k, f"{v:.1f}"] for k, v in timings.items()] + [["total", f"{sum(timings.values()):.1f}"]]}
    md_path, html_path = out / "report.md", out / "report.html"
    atomic_write_text(md_path, render("demo_report.md.j2", **context))
    atomic_write_text(html_path, render("demo_report.html.j2", **context))
    return html_path, md_path


def _data(out: Path) -> dict:
    stats = _json(out / "corpus" / "stats.json")
    tok = _produced(out / "tokenizer")
    splits = _produced(out / "shards").get("splits", {})
    return {"corpus": {"inputs": stats.get("inputs"), "kept": stats.get("kept"), "refused": stats.get("refused"),
                       "refusals": [[step, sum(r.values()), ", ".join(f"{k} {v}" for k, v in r.items())]
                                    for step, r in stats.get("refused_by_step", {}).items()],
                       "pii": ", ".join(f"{k} {v}" for k, v in sorted(stats.get("pii", {}).items()))},
            "tokenizer": {"vocab_size": tok.get("vocab_size", "?"),
                          "packed": ", ".join(f"{s} {v['tokens']:,} tokens from {v['documents']} documents"
                                              for s, v in splits.items())}}


def _training(out: Path) -> dict:
    run = out / "train"
    last, val = _last(run / "metrics.jsonl", "loss"), _last(run / "metrics.jsonl", "val_loss")
    produced = _produced(run)
    mixture = _json(run / "train_config.json").get("train", {}).get("data", {}).get("mixture") or {}
    sources = mixture.get("sources", [])
    seen = _last(run / "metrics.jsonl", f"tokens_seen/{sources[0]['name']}") if sources else {}
    return {"header": ["steps", "tokens seen", "parameters", "final loss", "validation loss", "validation perplexity",
                       "tokens/s"],
            "row": [produced.get("step"), f"{produced.get('tokens_seen', 0):,}", f"{produced.get('parameters', 0):,}",
                    f"{last.get('loss', NAN):.3f}", f"{val.get('val_loss', NAN):.3f}", f"{val.get('val_ppl', NAN):.1f}",
                    f"{last.get('tokens_per_s', 0):.0f}"],
            # a mixture: each source's share, what the run took of it, its own validation loss
            "sources": [[s["name"], f"{s['weight']:g}", f"{seen.get('tokens_seen/' + s['name'], 0):,}",
                         seen.get("epoch/" + s["name"], "—"), f"{val.get('val_loss/' + s['name'], NAN):.3f}"]
                        for s in sources]}


def _sft(out: Path) -> dict:
    rep, ev = _json(out / "sft" / "data" / "report.json"), _json(out / "sft" / "eval.json")
    return {**{k: rep.get(k) for k in ("read", "train", "val", "refused")},
            "before": f"{ev.get('val_loss_before', NAN):.3f}", "after": f"{ev.get('val_loss_after', NAN):.3f}"}


def _evaluation(out: Path, answers: list[tuple[str, str]]) -> dict:
    audit = out / "serving" / "audit.jsonl"
    lines = audit.read_text(encoding="utf-8").splitlines() if audit.is_file() else []
    records = latest(read(out / "evals" / "results.jsonl"))
    models = sorted({r["model"]["name"] for r in records})
    by = {(r["task"]["name"], r["model"]["name"]): r for r in records}
    tasks = sorted({(r["task"]["value"], r["task"]["name"], r["primary"]) for r in records})
    return {"serving": {"audit_lines": len(lines), "answers": [[q, a] for q, a in answers]},
            "evaluation": {"models": models, "rows": [
                [value, name, primary, *(cell_text(by[(name, m)]["metrics"][primary]) if (name, m) in by else "–"
                                         for m in models)] for value, name, primary in tasks]}}
