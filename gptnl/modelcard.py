"""The model card written next to the weights (`README.md`, in the shape of a Hugging Face model card).

It is assembled from what the stages left behind, never typed by hand: the corpus's data card and
stats (through the export's, the run's and the shards' manifests), the training figures
(`metrics.jsonl`), the fine-tuning report, and, when a results dir is given, every evaluation record
whose weights fingerprint is this folder's. The Dutch algorithm register (Algoritmeregister) asks
for naam, korte omschrijving (B1), doel en impact, gegevens, technische werking and risicobeheer;
the card carries them in its front matter and in a Dutch section, so a government service can copy
them into the register as they are. The wording is `gptnl/templates/model_card.md.j2`; the facts are
gathered here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from gptnl.artefacts import manifest_or_none
from gptnl.config.train import BatchConfig
from gptnl.data_pipeline.takedown_report import MODEL_TAKEDOWNS, card_section
from gptnl.fileio import atomic_write_text, weights_fingerprint
from gptnl.templates import render as render_template


def _json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _manifest(folder: Path) -> dict:
    """The folder's manifest as a dict ({} when it has none, or none this gptnl reads)."""
    m = manifest_or_none(Path(folder))
    return json.loads(m.model_dump_json()) if m else {}


def _metrics(run_dir: Path, step: int | None) -> tuple[dict, dict]:
    """The last training and validation records at or before `step`."""
    train: dict = {}
    val: dict = {}
    path = Path(run_dir) / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if step is not None and r.get("step", 0) > step:
                continue
            if "loss" in r:
                train = r
            if "val_loss" in r:
                val = r
    return train, val


def lineage(model_dir: Path) -> dict[str, Any]:
    """What made this folder: export → run → shards → corpus (and, for a tuned model, its base)."""
    model_dir = Path(model_dir)
    manifest = _manifest(model_dir)
    out: dict[str, Any] = {"manifest": manifest, "stage": manifest.get("stage")}
    consumed = manifest.get("consumed", {})
    if manifest.get("stage") == "finetune":
        out["finetune"] = {**manifest.get("produced", {}), "config": manifest.get("config", {}),
                           "data": consumed.get("data")}
        run_out = model_dir.parent
        out["finetune"]["eval"] = _json(run_out / "eval.json")
        out["finetune"]["report"] = _json(run_out / "data" / "report.json")
        if consumed.get("base"):
            out["base"] = lineage(Path(consumed["base"]))
        return out
    run_dir = consumed.get("run_dir")
    if run_dir:
        run_manifest = _manifest(Path(run_dir))
        train, val = _metrics(Path(run_dir), manifest.get("produced", {}).get("step"))
        out["train"] = {"dir": run_dir, "manifest": run_manifest, "last": train, "val": val,
                        "loss_png": str(Path(run_dir) / "loss.png") if (Path(run_dir) / "loss.png").is_file() else None}
    shards = consumed.get("shards")
    if shards:
        sm = _manifest(Path(shards))
        out["shards"] = {"dir": shards, "splits": sm.get("produced", {}).get("splits", {})}
        corpus = sm.get("consumed", {}).get("corpus")
        if corpus:
            out["corpus"] = {"dir": corpus, "stats": _json(Path(corpus) / "stats.json"),
                             "card": str(Path(corpus) / "CARD.md") if (Path(corpus) / "CARD.md").is_file() else None}
    return out


def evaluations(model_dir: Path, results_dir: Path | None) -> list[dict]:
    """The evaluation records of exactly these weights (the last per cell)."""
    if results_dir is None:
        return []
    from gptnl.evals.results import read

    mine = weights_fingerprint(model_dir)
    records = [r for r in read(Path(results_dir) / "results.jsonl") if r["model"]["fingerprint"] == mine]
    return list({r["cell"]: r for r in records}.values())


def _fmt(v: float | None, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _corpus(lin: dict) -> dict | None:
    """The training data's facts: the corpus folder and card, its stats, the packed tokens."""
    corpus = lin.get("corpus")
    if not corpus:
        return None
    stats = corpus.get("stats") or {}
    splits = lin.get("shards", {}).get("splits", {})
    return {
        "dir": corpus["dir"], "card": corpus.get("card"), "stats": corpus.get("stats"),
        "refused_by_step": ", ".join(f"{step} {sum(v.values())}"
                                     for step, v in stats.get("refused_by_step", {}).items()),
        "pii": ", ".join(f"{k} {v}" for k, v in sorted(stats.get("pii", {}).items())),
        "sources": ", ".join(f"{name} ({s.get('kept', 0)} of {s.get('inputs', 0)} kept)"
                             for name, s in stats.get("sources", {}).items()),
        "tokens": ", ".join(f"{s} {v['tokens']:,} ({v['documents']} documents)" for s, v in splits.items()),
    }


def _training(lin: dict) -> list[tuple[str, object]] | None:
    """The pre-training run's figures, as (name, value) rows."""
    train = lin.get("train")
    produced = lin.get("manifest", {}).get("produced", {})
    if not train:
        return None
    rm = train["manifest"]
    cfg = rm.get("config", {})
    last, val = train["last"], train["val"]
    batch = cfg.get("batch", {})
    rows = [
        ("steps", produced.get("step")),
        ("tokens seen", f"{rm.get('produced', {}).get('tokens_seen', 0):,}"),
        ("final training loss", _fmt(last.get("loss"))),
        ("validation loss / perplexity", f"{_fmt(val.get('val_loss'))} / {_fmt(val.get('val_ppl'), 1)}"),
        ("tokens per second (last log)", _fmt(last.get("tokens_per_s"), 0)),
        ("MFU", _fmt(last.get("mfu")) if last.get("mfu") is not None else "not measured (no known peak)"),
        ("optimizer", f"AdamW, lr {cfg.get('optim', {}).get('lr')}, warmup {cfg.get('optim', {}).get('warmup_steps')}, "
                      f"grad clip {cfg.get('optim', {}).get('grad_clip')}"),
        ("batch", BatchConfig.model_validate(batch).describe()),
        ("DeepSpeed ZeRO stage", cfg.get("zero_stage")),
        ("run dir", f"`{train['dir']}`"),
    ]
    if train.get("loss_png"):
        rows.append(("loss curve", f"`{train['loss_png']}`"))
    if base := rm.get("consumed", {}).get("base_model"):  # continued pre-training: the open model it started from
        rows.insert(0, ("continued from", f"`{base['path']}` (weights {base['fingerprint']}; licence "
                                          f"{base['licence'] or 'not stated in its card'})"))
    return rows


def _finetune(ft: dict) -> dict:
    ev = ft.get("eval") or {}
    return {"method": ft.get("method"), "steps": ft.get("steps"), "report": ft.get("report") or {},
            "eval": {"before": _fmt(ev.get("val_loss_before")), "after": _fmt(ev.get("val_loss_after"))} if ev else {}}


def _evaluation_rows(records: list[dict]) -> list[list]:
    rows = []
    for r in sorted(records, key=lambda r: (r["task"]["value"], r["task"]["name"])):
        for name, m in r["metrics"].items():
            ci = f" [{_fmt(m['low'])}, {_fmt(m['high'])}]" if m.get("low") is not None else ""
            rows.append([r["task"]["value"], r["task"]["name"], name, f"{_fmt(m['value'])}{ci}", m["n"]])
    return rows


def _model_index(name: str, records: list[dict]) -> list[dict]:
    """The hub's `model-index`: one result per task, its primary metric."""
    results = []
    for r in sorted(records, key=lambda r: r["task"]["name"]):
        m = r["metrics"][r["primary"]]
        if m["value"] is None:
            continue
        results.append({"task": {"type": "text-generation", "name": r["task"]["value"]},
                        "dataset": {"name": f"gptnl {r['task']['name']}", "type": f"gptnl/{r['task']['name']}"},
                        "metrics": [{"type": r["primary"], "value": round(m["value"], 4), "name": r["primary"]}]})
    return [{"name": name, "results": results}] if results else []


def _register(name: str, lin: dict, tuned: bool, records: list[dict]) -> dict[str, str]:
    """The algorithm register's fields, in Dutch; the short description at B1."""
    corpus = (lin.get("base", lin) if tuned else lin).get("corpus") or {}
    stats = corpus.get("stats") or {}
    kept = stats.get("kept", "een onbekend aantal")
    values = "eerlijkheid, privacy, veiligheid, begrijpelijke taal en waarheidsgetrouwheid"
    evaluated = (f"Het model is getest op {values}; de uitkomsten staan in deze kaart onder 'Evaluation'."
                 if records else f"Het model is nog niet getest op {values}.")
    return {
        "naam": name,
        "korte_omschrijving": ("Een taalmodel dat Nederlandse tekst schrijft. " + (
            "Het is getraind om vragen te beantwoorden in eenvoudige taal. " if tuned else
            "Het maakt een tekst af die u begint. ") + "Het model kan fouten maken. Een mens controleert wat het "
            "schrijft voordat het wordt gebruikt."),
        "doel_en_impact": ("Het model helpt medewerkers en burgers met Nederlandse tekst: teksten schrijven, "
                           "samenvatten en vragen beantwoorden. Het neemt geen besluiten over mensen. Een antwoord "
                           "kan onjuist of onvolledig zijn; wie het gebruikt, blijft verantwoordelijk voor wat er "
                           "met het antwoord gebeurt."),
        "gegevens": (f"Getraind op {kept} Nederlandse documenten met een open licentie, na controle op licentie, "
                     "opt-outs, taal, kwaliteit, dubbele teksten en persoonsgegevens (vervangen voor de training). "
                     "Van elk document is vastgelegd of het is gebruikt en waarom niet. "
                     + ("Daarna bijgetraind op Nederlandse gesprekken die voor dit project zijn geschreven."
                        if tuned else "")).strip(),
        "technische_werking": ("Een decoder-only transformer (Llama-architectuur) die steeds het volgende woorddeel "
                               "voorspelt. Getraind met DeepSpeed; opgeslagen in het Hugging Face-formaat "
                               "(safetensors). Wordt aangeboden via een OpenAI-compatibele gateway met sleutels, "
                               "limieten en een auditlog."),
        "risicobeheer": ("Persoonsgegevens zijn voor de training uit de data gehaald; de gateway haalt geldige BSN-, "
                         f"IBAN- en kaartnummers uit antwoorden en legt elk verzoek vast in een auditlog. {evaluated} "
                         "Bekende beperkingen staan in deze kaart onder 'Limits and risks'."),
    }


def render(model_dir: Path, evals: Path | None = None) -> str:
    model_dir = Path(model_dir)
    lin = lineage(model_dir)
    tuned = lin.get("stage") == "finetune"
    base_lin = lin.get("base", {}) if tuned else lin
    config = _json(model_dir / "config.json") or {}
    cfg = (base_lin.get("manifest") or lin["manifest"]).get("config", {})
    name = cfg.get("name", model_dir.name) + ("-instruct" if tuned else "")
    records = evaluations(model_dir, evals)
    register = _register(name, lin, tuned, records)
    front = {
        "language": ["nl"],
        "license": "apache-2.0",
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["gptnl", "llama", "dutch", *(["instruction-tuned"] if tuned else [])],
        "model-index": _model_index(name, records),
        "algoritmeregister": register,
    }
    if not front["model-index"]:
        del front["model-index"]
    params = (base_lin.get("manifest") or {}).get("produced", {}).get("parameters")
    arch = [("parameters", f"{params:,}" if params else "–"), ("layers", config.get("num_hidden_layers")),
            ("hidden size", config.get("hidden_size")), ("attention heads (key/value)",
                                                         f"{config.get('num_attention_heads')} "
                                                         f"({config.get('num_key_value_heads')})"),
            ("vocabulary", config.get("vocab_size")), ("context length", config.get("max_position_embeddings")),
            ("weights", f"{config.get('torch_dtype', '–')}, safetensors")]
    card = render_template(
        "model_card.md.j2", front_matter=yaml.safe_dump(front, allow_unicode=True, sort_keys=False).rstrip(),
        name=name, tuned=tuned, model_dir=model_dir, architecture=arch, corpus=_corpus(base_lin),
        training=_training(base_lin), finetune=_finetune(lin["finetune"]) if tuned else None,
        evaluations=_evaluation_rows(records), settings=sorted({r["settings"]["name"] for r in records}),
        register=register).rstrip() + "\n"
    takedowns = model_dir / MODEL_TAKEDOWNS  # kept by `gptnl data takedown`, so a rewritten card keeps them
    if takedowns.is_file():
        card += "\n" + card_section(json.loads(takedowns.read_text()))
    return card


def write_model_card(model_dir: Path, evals: Path | None = None) -> Path:
    path = Path(model_dir) / "README.md"
    atomic_write_text(path, render(model_dir, evals))
    return path
