"""The demo's one report (`runs/demo/report.html` + `report.md`): what each stage made, with links
to the data card, the training curve and metrics, the model cards and the evaluation report.

Everything in it is read back from the stages' own outputs (stats, manifests, metrics, results), so
the report says what is on disk, not what the demo meant to do. Links are relative: the folder can be
moved or zipped whole.
"""

from __future__ import annotations

import html
import json
import platform
from datetime import UTC, datetime
from pathlib import Path

from gptnl import __version__
from gptnl.evals.report import cell_text, latest
from gptnl.evals.results import read
from gptnl.fileio import atomic_write_text, read_jsonl

SECTIONS = ("Corpus", "Tokenizer", "Training", "Instruction tuning", "Serving", "Evaluation", "Model cards",
            "Timings")


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _last(path: Path, field: str) -> dict:
    rows = read_jsonl(path) if path.is_file() else []
    return next((r for r in reversed(rows) if field in r), {})


class _Doc:
    """Markdown and HTML written side by side from the same calls."""

    def __init__(self) -> None:
        self.md: list[str] = []
        self.html: list[str] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.md += [f"{'#' * level} {text}", ""]
        self.html.append(f"<h{level} id=\"{text.lower().replace(' ', '-')}\">{html.escape(text)}</h{level}>")

    def para(self, text: str, links: dict[str, str] | None = None) -> None:
        """`text` with {name} placeholders filled by links {name: relative path}."""
        links = links or {}
        self.md += [text.format(**{k: f"[`{v}`]({v})" for k, v in links.items()}), ""]
        self.html.append("<p>" + html.escape(text).format(
            **{k: f'<a href="{html.escape(v)}"><code>{html.escape(v)}</code></a>' for k, v in links.items()}) + "</p>")

    def table(self, header: list[str], rows: list[list]) -> None:
        self.md += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        cell = lambda c: " ".join(str(c).split()).replace("|", "\\|")  # noqa: E731 (one line of Markdown per row)
        self.md += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows] + [""]
        self.html.append("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header)
                         + "</tr></thead><tbody>" + "".join(
                             "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                             for row in rows) + "</tbody></table>")

    def image(self, path: str, alt: str) -> None:
        self.md += [f"![{alt}]({path})", ""]
        self.html.append(f'<p><img src="{html.escape(path)}" alt="{html.escape(alt)}" style="max-width:640px"></p>')


def _rel(out: Path, path: Path) -> str:
    return str(Path(path).resolve().relative_to(out.resolve()))


def write_demo_report(out: Path, timings: dict[str, float], answers: list[tuple[str, str]]) -> tuple[Path, Path]:
    """Write `out/report.md` and `out/report.html`; returns both paths."""
    out = Path(out)
    d = _Doc()
    d.heading("gptnl demo report", 1)
    d.para(f"Written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by gptnl {__version__} on {platform.machine()}, "
           f"{platform.system()} (outputs in this folder).")

    for section in (_data_sections, _training_sections, _evaluation_sections):
        section(d, out, answers)
    d.heading("Timings")
    d.para("Seconds per stage in this run; a stage whose outputs were reused takes next to none.")
    d.table(["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in timings.items()]
            + [["total", f"{sum(timings.values()):.1f}"]])
    return _write(d, out)


def _data_sections(d: _Doc, out: Path, answers) -> None:
    d.heading("Corpus")
    stats = _json(out / "corpus" / "stats.json")
    d.para(f"{stats.get('inputs')} documents read, {stats.get('kept')} kept, {stats.get('refused')} refused; every "
           "input has one row in the ledger {ledger}. The data card {card} lists sources, licences, opt-outs and "
           "processing.", {"ledger": _rel(out, out / "corpus" / "ledger.jsonl.gz"),
                            "card": _rel(out, out / "corpus" / "CARD.md")})
    d.table(["step", "refused", "reasons"], [[step, sum(r.values()), ", ".join(f"{k} {v}" for k, v in r.items())]
                                            for step, r in stats.get("refused_by_step", {}).items()])
    if stats.get("pii"):
        d.para("Personal data replaced: " + ", ".join(f"{k} {v}" for k, v in sorted(stats["pii"].items())) + ".")

    d.heading("Tokenizer")
    tok = _json(out / "tokenizer" / "manifest.json").get("produced", {})
    splits = _json(out / "shards" / "manifest.json").get("produced", {}).get("splits", {})
    d.para(f"Byte-level BPE, {tok.get('vocab_size', '?')} tokens; packed: "
           + ", ".join(f"{s} {v['tokens']:,} tokens from {v['documents']} documents" for s, v in splits.items()) + ".")


def _training_sections(d: _Doc, out: Path, answers) -> None:
    d.heading("Training")
    run = out / "train"
    last, val = _last(run / "metrics.jsonl", "loss"), _last(run / "metrics.jsonl", "val_loss")
    produced = _json(run / "manifest.json").get("produced", {})
    d.table(["steps", "tokens seen", "parameters", "final loss", "validation loss", "validation perplexity",
             "tokens/s"],
            [[produced.get("step"), f"{produced.get('tokens_seen', 0):,}", f"{produced.get('parameters', 0):,}",
              f"{last.get('loss', float('nan')):.3f}", f"{val.get('val_loss', float('nan')):.3f}",
              f"{val.get('val_ppl', float('nan')):.1f}", f"{last.get('tokens_per_s', 0):.0f}"]])
    mixture = _json(run / "train_config.json").get("train", {}).get("data", {}).get("mixture") or {}
    sources = mixture.get("sources", [])
    if sources:  # a mixture: each source's share, what the run took of it, its own validation loss
        seen = _last(run / "metrics.jsonl", f"tokens_seen/{sources[0]['name']}")
        d.table(["source", "weight", "tokens seen", "epoch", "validation loss"],
                [[s["name"], f"{s['weight']:g}", f"{seen.get('tokens_seen/' + s['name'], 0):,}",
                  seen.get("epoch/" + s["name"], "—"), f"{val.get('val_loss/' + s['name'], float('nan')):.3f}"]
                 for s in sources])
    d.para("Every logged step is in {metrics} (also as TensorBoard events where enabled).",
           {"metrics": _rel(out, run / "metrics.jsonl")})
    if (run / "loss.png").is_file():
        d.image(_rel(out, run / "loss.png"), "training and validation loss")

    d.heading("Instruction tuning")
    rep, ev = _json(out / "sft" / "data" / "report.json"), _json(out / "sft" / "eval.json")
    d.para(f"{rep.get('read')} conversations read, {rep.get('train')} trained on, {rep.get('val')} held out, "
           f"{rep.get('refused')} refused; held-out loss {ev.get('val_loss_before', float('nan')):.3f} before and "
           f"{ev.get('val_loss_after', float('nan')):.3f} after tuning. The conversation ledger is {{ledger}}.",
           {"ledger": _rel(out, out / "sft" / "data" / "ledger.jsonl")})


def _evaluation_sections(d: _Doc, out: Path, answers) -> None:
    d.heading("Serving")
    audit = out / "serving" / "audit.jsonl"
    lines = audit.read_text(encoding="utf-8").splitlines() if audit.is_file() else []
    d.para(f"The tuned model was served by vLLM (CPU) behind the gateway, with a key made for the demo (stored "
           f"hashed). The audit log {{audit}} has {len(lines)} lines, one per request, evaluation included.",
           {"audit": _rel(out, audit)})
    d.table(["question", "answer through the gateway"], [[q, a] for q, a in answers])

    d.heading("Evaluation")
    records = latest(read(out / "evals" / "results.jsonl"))
    models = sorted({r["model"]["name"] for r in records})
    by = {(r["task"]["name"], r["model"]["name"]): r for r in records}
    tasks = sorted({(r["task"]["value"], r["task"]["name"], r["primary"]) for r in records})
    d.para("The public-values suite on the tuned model and a random-init baseline with the same tokenizer, "
           "served side by side; each figure with its bootstrap 95 % interval. Every metric, chart and "
           "comparison is in {html} ({md}).",
           {"html": _rel(out, out / "evals" / "report" / "report.html"),
            "md": _rel(out, out / "evals" / "report" / "report.md")})
    d.table(["public value", "task", "metric", *models],
            [[value, name, primary, *(cell_text(by[(name, m)]["metrics"][primary]) if (name, m) in by else "–"
                                      for m in models)] for value, name, primary in tasks])

    d.heading("Model cards")
    d.para("Each exported model carries a card in the shape of a Hugging Face model card, with the fields of the "
           "Dutch algorithm register: the pre-trained model {base}, the tuned model {tuned} (with its evaluation).",
           {"base": _rel(out, out / "model" / "README.md"), "tuned": _rel(out, out / "sft" / "model" / "README.md")})


def _write(d: _Doc, out: Path) -> tuple[Path, Path]:
    md_path, html_path = out / "report.md", out / "report.html"
    atomic_write_text(md_path, "\n".join(d.md).rstrip() + "\n")
    style = ("body{font-family:sans-serif;max-width:960px;margin:2em auto;line-height:1.45}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
             "text-align:left;vertical-align:top}th{background:#f3f3f3}code{font-size:90%}")
    atomic_write_text(html_path, "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>gptnl demo "
                                 f"report</title><style>{style}</style></head><body>\n" + "\n".join(d.html)
                      + "\n</body></html>\n")
    return html_path, md_path
