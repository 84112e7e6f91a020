"""The model card written next to the weights (`README.md`, in the shape of a Hugging Face model card).

It is assembled from what the stages left behind, never typed by hand: the corpus's data card and
stats (through the export's, the run's and the shards' manifests), the training figures
(`metrics.jsonl`), the fine-tuning report, and, when a results dir is given, every evaluation record
whose weights fingerprint is this folder's. The Dutch algorithm register (Algoritmeregister) asks
for naam, korte omschrijving (B1), doel en impact, gegevens, technische werking and risicobeheer;
the card carries them in its front matter and in a Dutch section, so a government service can copy
them into the register as they are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from gptnl.data_pipeline.takedown_report import MODEL_TAKEDOWNS, card_section
from gptnl.fileio import atomic_write_text, weights_fingerprint


def _json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


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
    manifest = _json(model_dir / "manifest.json") or {}
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
        run_manifest = _json(Path(run_dir) / "manifest.json") or {}
        train, val = _metrics(Path(run_dir), manifest.get("produced", {}).get("step"))
        out["train"] = {"dir": run_dir, "manifest": run_manifest, "last": train, "val": val,
                        "loss_png": str(Path(run_dir) / "loss.png") if (Path(run_dir) / "loss.png").is_file() else None}
    shards = consumed.get("shards")
    if shards:
        sm = _json(Path(shards) / "manifest.json") or {}
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


def _corpus_section(lin: dict) -> list[str]:
    corpus = lin.get("corpus")
    if not corpus:
        return ["No corpus manifest was found for this model: its training data cannot be summarised here."]
    stats = corpus.get("stats")
    lines = [f"- Corpus: `{corpus['dir']}`" + (f"; data card: `{corpus['card']}`" if corpus.get("card") else "")]
    if stats:
        lines.append(f"- Documents read: {stats['inputs']}; kept: {stats['kept']}; refused: {stats['refused']} "
                     "(every input has one row in `ledger.jsonl.gz`: kept, or refused with its reason)")
        steps = ", ".join(f"{step} {sum(v.values())}" for step, v in stats.get("refused_by_step", {}).items())
        if steps:
            lines.append(f"- Refused by step: {steps}")
        if stats.get("pii"):
            lines.append("- Personal data replaced before training: "
                         + ", ".join(f"{k} {v}" for k, v in sorted(stats["pii"].items()))
                         + f" ({stats.get('pii_mode', 'placeholder')})")
        srcs = ", ".join(f"{name} ({s.get('kept', 0)} of {s.get('inputs', 0)} kept)"
                         for name, s in stats.get("sources", {}).items())
        lines.append(f"- Sources: {srcs}")
    else:
        lines.append("- The corpus has no `stats.json`: it was not built by `gptnl data build`, so no licence "
                     "check or ledger vouches for it.")
    splits = lin.get("shards", {}).get("splits", {})
    if splits:
        lines.append("- Tokens packed: " + ", ".join(f"{s} {v['tokens']:,} ({v['documents']} documents)"
                                                    for s, v in splits.items()))
    return lines


def _training_section(lin: dict) -> list[str]:
    train = lin.get("train")
    produced = lin.get("manifest", {}).get("produced", {})
    if not train:
        return ["No training run was found for this model."]
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
        ("batch", f"micro {batch.get('micro_batch_size')} x accumulation {batch.get('grad_accum_steps')} per process"),
        ("DeepSpeed ZeRO stage", cfg.get("zero_stage")),
        ("run dir", f"`{train['dir']}`"),
    ]
    if train.get("loss_png"):
        rows.append(("loss curve", f"`{train['loss_png']}`"))
    if base := rm.get("consumed", {}).get("base_model"):  # continued pre-training: the open model it started from
        rows.insert(0, ("continued from", f"`{base['path']}` (weights {base['fingerprint']}; licence "
                                          f"{base['licence'] or 'not stated in its card'})"))
    return ["| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]]


def _finetune_section(ft: dict) -> list[str]:
    ev, rep = ft.get("eval") or {}, ft.get("report") or {}
    lines = [f"- Method: {ft.get('method')}, {ft.get('steps')} steps, loss on the assistant's turns only"]
    if rep:
        lines.append(f"- Conversations: {rep.get('read')} read, {rep.get('train')} trained on, {rep.get('val')} held "
                     f"out, {rep.get('refused')} refused (licence, personal data, contamination or length)")
    if ev:
        lines.append(f"- Held-out loss: {_fmt(ev.get('val_loss_before'))} before, {_fmt(ev.get('val_loss_after'))} "
                     "after tuning")
    return lines


def _eval_section(records: list[dict], model_dir: Path) -> list[str]:
    if not records:
        return ["Not evaluated yet. Run `gptnl eval run --model NAME=" + str(model_dir) + " --results DIR`, then "
                "`gptnl card " + str(model_dir) + " --evals DIR` to add the results here."]
    lines = ["| public value | task | metric | value [95 % interval] | n |", "|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: (r["task"]["value"], r["task"]["name"])):
        for name, m in r["metrics"].items():
            ci = f" [{_fmt(m['low'])}, {_fmt(m['high'])}]" if m.get("low") is not None else ""
            lines.append(f"| {r['task']['value']} | {r['task']['name']} | {name} | {_fmt(m['value'])}{ci} | {m['n']} |")
    settings = {r["settings"]["name"] for r in records}
    lines += ["", f"Settings: {', '.join(sorted(settings))}. Formulas and limits: `docs/evals.md` in the gptnl "
                  "repository."]
    return lines


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
    out = ["---", yaml.safe_dump(front, allow_unicode=True, sort_keys=False).rstrip(), "---", "",
           f"# {name}", "",
           ("A Dutch Llama model instruction-tuned by gptnl on Dutch conversations written for the project."
            if tuned else "A Dutch Llama model pre-trained by gptnl on a licence-checked Dutch corpus."),
           "This card was written by gptnl from the stages' own records; regenerate it with "
           f"`gptnl card {model_dir}`.", "",
           "## Model details", "", "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in arch], "",
           "Loads with `transformers` (`AutoModelForCausalLM`) and vLLM unchanged; the chat template is in "
           "`tokenizer_config.json`.", "",
           "## Training data", "", *_corpus_section(base_lin), ""]
    out += ["## Training", "", *_training_section(base_lin), ""]
    if tuned:
        out += ["## Instruction tuning", "", *_finetune_section(lin["finetune"]), ""]
    out += ["## Evaluation", "", *_eval_section(records, model_dir), ""]
    out += ["## Intended use", "",
            "Research on Dutch language models, and drafting, summarising and answering in Dutch where a person "
            "checks the output. Served through the gptnl gateway, a service gets keys, limits, an audit log and an "
            "output guard for personal data.", "",
            "## Out of scope", "",
            "Decisions about people (benefits, permits, enforcement) without a person deciding; legal or medical "
            "advice; anything where an invented fact does harm. Not for languages other than Dutch.", "",
            "## Limits and risks", "",
            "- A small model trained on a small corpus writes fluent-looking text that is often wrong. Check "
            "every statement.",
            "- The corpus is what its data card says and nothing more: topics and registers outside it are "
            "weak, and its biases carry over. See the equal-treatment results above before any use that "
            "touches people.",
            "- Personal data was replaced in the training data, but memorisation is measured, not excluded: see "
            "the privacy-canaries exposure.", "",
            "## Algoritmeregister", "",
            *[f"**{key.replace('_', ' ').capitalize()}.** {text}\n" for key, text in register.items()]]
    card = "\n".join(out).rstrip() + "\n"
    takedowns = model_dir / MODEL_TAKEDOWNS  # kept by `gptnl data takedown`, so a rewritten card keeps them
    if takedowns.is_file():
        card += "\n" + card_section(json.loads(takedowns.read_text()))
    return card


def write_model_card(model_dir: Path, evals: Path | None = None) -> Path:
    path = Path(model_dir) / "README.md"
    atomic_write_text(path, render(model_dir, evals))
    return path
