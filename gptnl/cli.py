"""The `gptnl` command: one subcommand per stage. User errors print one red line and exit 2;
`--debug` (anywhere on the line) shows the traceback instead."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TransferSpeedColumn
from rich.table import Table

from gptnl.commands import console, run
from gptnl.commands.finetune import finetune_cmd
from gptnl.commands.train import train_cmd
from gptnl.config.pack import PACK, TOKENIZER, PackSettings, TokenizerSettings
from gptnl.errors import GptnlError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="gptnl: train, serve and evaluate Dutch language models.")
tokenizer_app = typer.Typer(no_args_is_help=True, help="Train and inspect the Dutch BPE tokenizer.")
app.add_typer(tokenizer_app, name="tokenizer")
data_app = typer.Typer(no_args_is_help=True, help="Build the licence-checked Dutch corpus.")
app.add_typer(data_app, name="data")

HELDOUT = Path("data_pipeline/sample/heldout/nl-heldout.txt")


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors.")) -> None:
    """gptnl: train, serve and evaluate Dutch language models."""


PACK_HELP = {name: f"{field.description[0].upper()}{field.description[1:]} (default {getattr(PACK, name)})."
             for name, field in PackSettings.model_fields.items()}


def flags(cls, **given):
    """A command's settings: the flags given, the model's defaults for the rest (defaults live in the
    models only), checked as a config is, with the error naming the flag."""
    from pydantic import ValidationError

    try:
        return cls.model_validate({k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise GptnlError(f"--{str(err['loc'][0]).replace('_', '-')} {err['input']!r}: {err['msg']}") from None


@contextmanager
def byte_progress(label: str, total: int, redirect: bool = True):
    """A bar in bytes. `redirect=False` leaves sys.stdout and sys.stderr as they are (rich would route
    them through its console lock, which a forked worker must not inherit)."""
    with Progress(TextColumn(f"[bold]{label}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeElapsedColumn(), console=console, redirect_stdout=redirect,
                  redirect_stderr=redirect) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)
        progress.update(task, completed=total)  # counted in text bytes; the files also hold JSON syntax


@contextmanager
def corpus_texts(corpus: Path, label: str):
    """The corpus's texts, one document at a time, under a progress bar in bytes of text."""
    from gptnl import corpus as corpus_mod

    with byte_progress(label, corpus_mod.corpus_size(corpus)) as advance:
        def texts():
            for doc in corpus_mod.iter_documents(corpus):
                advance(len(doc.text.encode("utf-8")))
                yield doc.text

        yield texts()


@tokenizer_app.command("train")
def tokenizer_train(
    corpus: Path = typer.Argument(..., help="Corpus dir (JSONL/JSONL.gz documents)."),
    out: Path = typer.Option(..., "--out", help="Tokenizer folder to write."),
    vocab_size: int = typer.Option(None, "--vocab-size", help=f"Default {TOKENIZER.vocab_size}."),
    min_frequency: int = typer.Option(None, "--min-frequency", help=f"Default {TOKENIZER.min_frequency}."),
) -> None:
    """Train a byte-level BPE tokenizer on a corpus dir."""
    from gptnl import tokenizer as tokenizer_mod

    s = flags(TokenizerSettings, vocab_size=vocab_size, min_frequency=min_frequency)
    with corpus_texts(corpus, "tokenizer") as texts:
        tok = tokenizer_mod.train(texts, s.vocab_size, out, min_frequency=s.min_frequency,
                                  source={"corpus": str(corpus)})
    console.print(f"tokenizer with {tok.vocab_size} tokens written to {out}")
    if tok.vocab_size < s.vocab_size:
        console.print(f"[yellow]the corpus supports only {tok.vocab_size} of the {s.vocab_size} tokens asked for")


@tokenizer_app.command("extend")
def tokenizer_extend(
    base: Path = typer.Argument(..., help="Base tokenizer folder (a base model's folder holds one)."),
    corpus: Path = typer.Argument(..., help="Corpus dir (JSONL/JSONL.gz documents) to learn the new tokens on."),
    add: int = typer.Option(..., "--add", min=1, help="How many tokens to add."),
    out: Path = typer.Option(..., "--out", help="Tokenizer folder to write."),
    min_frequency: int = typer.Option(None, "--min-frequency", help="A new token is seen at least this often "
                                      f"(default {TOKENIZER.min_frequency})."),
) -> None:
    """Add Dutch tokens to a base model's BPE tokenizer; a run from the base then grows its embeddings."""
    from gptnl import tokenizer_extend

    min_frequency = flags(TokenizerSettings, min_frequency=min_frequency).min_frequency
    with corpus_texts(corpus, "extend") as texts:
        ext = tokenizer_extend.extend(base, texts, add, out, min_frequency=min_frequency,
                                      source={"corpus": str(corpus)})
    console.print(f"{len(ext.added)} tokens added (ids {ext.base_vocab_size}–{ext.vocab_size - 1}); "
                  f"tokenizer written to {out}")
    if len(ext.added) < add:
        console.print(f"[yellow]the corpus has only {len(ext.added)} new pairs seen {min_frequency} times or more")


@tokenizer_app.command("report")
def tokenizer_report(
    tokenizer: Path = typer.Argument(..., help="Tokenizer folder."),
    text: Path = typer.Option(HELDOUT, "--text", help="Held-out plain-text file."),
    base: Path = typer.Option(None, "--base", help=(
        "A tokenizer to compare with (default: the base an extended tokenizer was made from).")),
) -> None:
    """Fertility (tokens per word) of a tokenizer on held-out text, beside its base's."""
    from gptnl import tokenizer as tokenizer_mod
    from gptnl.tokenizer_extend import read_extension

    if not text.is_file():
        raise GptnlError(f"{text}: held-out text file not found")
    held = text.read_text(encoding="utf-8")
    ext = read_extension(tokenizer)
    if base is None and ext is not None and (Path(ext.base) / "tokenizer.json").is_file():
        base = Path(ext.base)
    columns = {"value": tokenizer_mod.fertility(tokenizer_mod.load(tokenizer), held)}
    if base is not None:
        columns = {"base": tokenizer_mod.fertility(tokenizer_mod.load(base), held), "tokenizer": columns["value"]}
    table = Table(title=f"{tokenizer} on {text}" + (f" (base: {base})" if base is not None else ""))
    table.add_column("")
    for name in columns:
        table.add_column(name)
    for key in ("words", "tokens", "characters", "fertility", "chars_per_token"):
        table.add_row(key, *(f"{c[key]:.3f}" if isinstance(c[key], float) else str(c[key]) for c in columns.values()))
    console.print(table)


@data_app.command("build")
def data_build(
    recipe: Path = typer.Argument(..., help="Recipe YAML (data_pipeline/recipes/*.yaml)."),
    out: Path = typer.Option(..., "--out", help="Corpus dir to write."),
    workers: int = typer.Option(None, "--workers", min=1, help=(
        "Tasks run at once (at most the recipe's tasks). Local and Ray: default 1; Slurm: default no limit.")),
    executor: str = typer.Option("local", "--executor", help=(
        "local; ray (a local Ray, or --address); slurm (array jobs on --cluster).")),
    address: str = typer.Option(None, "--address", help="Ray cluster address for --executor ray."),
    cluster: Path = typer.Option(None, "--cluster", help="Slurm cluster profile (slurm/clusters/*.yaml)."),
) -> None:
    """Run the corpus pipeline: every input document is kept or refused with a reason in the ledger."""
    from gptnl.artefacts import BuildSubmitted
    from gptnl.config import load_recipe
    from gptnl.data_pipeline.build import build

    stats = build(recipe, load_recipe(recipe), out, workers=workers, executor=executor, ray_address=address,
                  cluster=cluster)
    if isinstance(stats, BuildSubmitted):
        for stage, job in stats.jobs.items():
            console.print(f"{stage}: " + ("already complete" if job == -1 else f"job {job}"))
        console.print(f"submitted: job {stats.finalise} finishes the corpus in {out} when every stage is done; "
                      f"logs under {stats.logs}")
        return
    table = Table(title=f"ledger of {out}")
    for col in ("source", "read", "kept", "refused"):
        table.add_column(col)
    for name, c in stats.sources.items():
        table.add_row(name, str(c.inputs), str(c.kept), str(c.refused))
    console.print(table)
    for step, reasons in stats.refused_by_step.items():
        console.print(f"refused by {step}: " + ", ".join(f"{r} {n}" for r, n in reasons.items()))


@data_app.command("takedown")
def data_takedown(
    corpus: Path = typer.Argument(..., help="Corpus dir built by `gptnl data build`."),
    ids: Path = typer.Option(..., "--ids", help="File of ids, urls and domain:host entries, one per line."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Also rebuild token shards packed from this corpus."),
    runs: list[Path] = typer.Option([], "--runs", help="Folder to search for shards, training runs, exports and "
                                                      "tuned models made from this corpus (repeatable; the "
                                                      "corpus's own parent folder is always searched)."),
) -> None:
    """Remove documents after an opt-out or complaint; ledger, stats, card and blocklist follow, and the
    runs and models trained on them are named in a takedown report."""
    from gptnl.data_pipeline.takedown import takedown
    from gptnl.pack import repack

    result = takedown(corpus, ids, runs)
    console.print(f"{result['removed']} document(s) removed from {corpus}")
    rebuilt = rebuild and result["removed"] > 0
    for shards in result["shards"]:
        if rebuilt:
            repack(Path(shards))
        console.print(f"{'rebuilt' if rebuilt else 'packed from this corpus'}: {shards}")
    for command in [] if rebuilt else result["rebuild"]:
        console.print(f"[yellow]rebuild with: {command}")
    for d in result["trained"]:
        when = f"trained {d['created']}" if d["finished"] else "still training"
        console.print(f"[yellow]trained on this corpus ({d['stage']}, {when}): {d['path']}")
    console.print(f"takedown report: {result['report']}")


@data_app.command("langid")
def data_langid(
    testset: Path = typer.Option(None, "--testset", help="Labelled JSONL (id, lang, kind, text); default: bundled."),
) -> None:
    """Accuracy of the language identifier on a labelled nl/af/fy/de/en test set."""
    from gptnl.data_pipeline.langid import TESTSET, evaluate, load_testset

    path = testset or TESTSET
    if not Path(path).is_file():
        raise GptnlError(f"{path}: test set not found")
    report = evaluate(load_testset(path))
    table = Table(title=f"py3langid on {path} ({report['items']} texts)")
    table.add_column("language/kind")
    table.add_column("accuracy")
    for group, acc in report["per_group"].items():
        table.add_row(group, f"{acc:.1%}")
    console.print(table)
    wrong = report["wrongly_dutch"] or "none"
    console.print(f"overall {report['accuracy']:.1%}; other languages labelled Dutch: {wrong}")


@data_app.command("card")
def data_card(corpus: Path = typer.Argument(..., help="Corpus dir built by `gptnl data build`.")) -> None:
    """(Re)write CARD.md from the corpus's stats and recipe."""
    from gptnl.data_pipeline.card import rewrite_card

    console.print(f"wrote {rewrite_card(corpus)}")


@app.command("pack")
def pack_cmd(
    corpus: Path = typer.Argument(..., help="Corpus dir (JSONL/JSONL.gz documents)."),
    tokenizer: Path = typer.Option(..., "--tokenizer", help="Tokenizer folder."),
    out: Path = typer.Option(..., "--out", help="Shards dir to write."),
    seq_len: int = typer.Option(None, "--seq-len", help=PACK_HELP["seq_len"]),
    val_fraction: float = typer.Option(None, "--val-fraction", help=PACK_HELP["val_fraction"]),
    shard_tokens: int = typer.Option(None, "--shard-tokens", help=PACK_HELP["shard_tokens"]),
    workers: int = typer.Option(1, "--workers", min=1, help="Tasks at once, a corpus file each (datatrove's "
                                "executor); the shards are the same for any number."),
    executor: str = typer.Option("local", "--executor", help="local or ray (Slurm: `gptnl slurm submit pack`)."),
    ray_address: str = typer.Option(None, "--ray-address", help="A running Ray cluster (default: a local Ray)."),
) -> None:
    """Tokenise a corpus into fixed-length sequences in memory-mapped shards. A killed run resumes with
    the same command, redoing only the files it had not finished."""
    from gptnl import corpus as corpus_mod
    from gptnl.pack import pack

    p = flags(PackSettings, seq_len=seq_len, val_fraction=val_fraction, shard_tokens=shard_tokens)
    with byte_progress("pack", corpus_mod.corpus_size(corpus), redirect=False) as advance:  # workers are forked
        manifest = pack(corpus, tokenizer, p.seq_len, out, val_fraction=p.val_fraction, shard_tokens=p.shard_tokens,
                        progress=advance, workers=workers, executor=executor, ray_address=ray_address)
    for split, s in manifest.produced.splits.items():
        console.print(f"{split}: {s.documents} documents, {s.tokens:,} tokens, {s.sequences} sequences "
                      f"of {p.seq_len}, {len(s.shards)} shard(s)")


app.command("train")(train_cmd)  # gptnl/commands/train.py: `python -m gptnl.train` runs it alone
app.command("finetune")(finetune_cmd)  # gptnl/commands/finetune.py, likewise


@app.command("export")
def export_cmd(
    run_dir: Path = typer.Argument(..., help="Training run dir."),
    out: Path = typer.Option(..., "--out", help="HF model folder to write."),
    dtype: str = typer.Option("float32", "--dtype", help="float32, bfloat16 or float16."),
    evals: Path = typer.Option(None, "--evals", help="Evaluation results dir whose records of these weights go "
                                                     "into the model card."),
) -> None:
    """Export the newest complete checkpoint as an HF LlamaForCausalLM folder, with its model card."""
    from gptnl.modelcard import write_model_card
    from gptnl.train.export import export_run

    path = export_run(run_dir, out, dtype=dtype)
    if evals is not None:
        write_model_card(path, evals)
    console.print(f"exported {run_dir} to {path} (model card: {path / 'README.md'})")


@app.command("card")
def card_cmd(
    model_dir: Path = typer.Argument(..., help="HF model folder written by `gptnl export` or `gptnl finetune`."),
    evals: Path = typer.Option(None, "--evals", help="Evaluation results dir (results.jsonl): the records of "
                                                     "exactly these weights are added."),
) -> None:
    """Rewrite a model's card (README.md) from its manifests, training figures and evaluation results."""
    from gptnl.modelcard import write_model_card

    if not (Path(model_dir) / "config.json").is_file():
        raise GptnlError(f"{model_dir}: not a model folder (no config.json)")
    if evals is not None and not (Path(evals) / "results.jsonl").is_file():
        raise GptnlError(f"--evals {evals}: no results.jsonl there (run `gptnl eval run --results {evals}` first)")
    console.print(f"model card: {write_model_card(model_dir, evals)}")


keys_app = typer.Typer(no_args_is_help=True, help="API keys of the gateway (stored hashed).")
app.add_typer(keys_app, name="keys")
GATEWAY = Path("serving/gateway.yaml")


@app.command("serve")
def serve_cmd(config: Path = typer.Argument(GATEWAY, help="Gateway config (serving/gateway.yaml).")) -> None:
    """Start the vLLM replicas and the OpenAI-compatible gateway in front of them."""
    from gptnl.config import load_gateway_config
    from gptnl.serving.server import serve

    serve(load_gateway_config(config))


@keys_app.command("create")
def keys_create(
    name: str = typer.Option(..., "--name", help="Who the key is for, e.g. gemeente-utrecht."),
    models: str = typer.Option(..., "--models", help="Comma-separated models the key may use."),
    rpm: int = typer.Option(60, "--rpm", min=1, help="Requests per minute."),
    tpm: int = typer.Option(20000, "--tpm", min=1, help="Tokens (prompt + completion) per minute."),
    max_concurrent: int = typer.Option(4, "--max-concurrent", min=1, help="Requests in flight at once."),
    expires: str = typer.Option(None, "--expires", help="Last valid day, YYYY-MM-DD."),
    log_content: bool = typer.Option(False, "--log-content", help="Write prompts and answers to the audit log."),
    output_guard: bool = typer.Option(True, "--output-guard/--no-output-guard",
                                      help="Redact checksum-valid BSN/IBAN/card numbers from answers."),
    metrics: bool = typer.Option(False, "--metrics", help="The key may read /metrics."),
    budget_day: int = typer.Option(None, "--budget-day", min=1, help="Tokens per UTC day (default: no budget)."),
    budget_month: int = typer.Option(None, "--budget-month", min=1, help="Tokens per UTC month (default: none)."),
    budget_soft: float = typer.Option(None, "--budget-soft", min=0.01, max=1.0,
                                      help="Share of a budget after which answers carry a warning header."),
    config: Path = typer.Option(GATEWAY, "--config", help="Gateway config whose key store to use."),
) -> None:
    """Create a key; it is printed once and stored only as a hash."""
    import datetime as dt

    from gptnl.config import load_gateway_config
    from gptnl.errors import GptnlError
    from gptnl.serving.keys import KeyStore

    cfg = load_gateway_config(config, check_models=False)
    wanted = [m.strip() for m in models.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in cfg.models]
    if unknown:
        raise GptnlError(f"--models: {', '.join(unknown)} not served by {config} (it serves: {', '.join(cfg.models)})")
    try:
        until = dt.date.fromisoformat(expires) if expires else None
    except ValueError:
        raise GptnlError(f"--expires {expires!r}: use YYYY-MM-DD") from None
    key = KeyStore(cfg.keys).create(name, wanted, rpm, tpm, max_concurrent=max_concurrent, expires=until,
                                    log_content=log_content, output_guard=output_guard, metrics=metrics,
                                    budget_day=budget_day, budget_month=budget_month, budget_soft=budget_soft)
    typer.echo(f"key for {name} (shown once; store it safely):", err=True)
    print(key)  # alone on stdout, so `KEY=$(gptnl keys create ...)` works


@keys_app.command("list")
def keys_list(config: Path = typer.Option(GATEWAY, "--config")) -> None:
    """Keys with their scopes and limits (never the keys themselves)."""
    from gptnl.config import load_gateway_config
    from gptnl.serving.keys import KeyStore

    table = Table()
    for col in ("name", "key", "models", "rpm", "tpm", "concurrent", "budget day/month", "expires", "state",
                "guard", "content"):
        table.add_column(col)
    for r in KeyStore(load_gateway_config(config, check_models=False).keys).records():
        budget = f"{r.budget_day or '-'}/{r.budget_month or '-'}" + (f" (warn {r.budget_soft:.0%})"
                                                                      if r.budget_soft else "")
        table.add_row(r.name, r.shown, ",".join(r.models), str(r.rpm), str(r.tpm), str(r.max_concurrent), budget,
                      str(r.expires or "-"), r.problem() or "active", "on" if r.output_guard else "off",
                      "logged" if r.log_content else "-")
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(name: str = typer.Argument(...), config: Path = typer.Option(GATEWAY, "--config")) -> None:
    """Revoke a key; a running gateway refuses it from its next request on (every gateway on the
    config's shared store, too)."""
    from gptnl.config import load_gateway_config
    from gptnl.serving.keys import KeyStore

    cfg = load_gateway_config(config, check_models=False)
    KeyStore(cfg.keys).revoke(name)
    if cfg.store is not None:
        from gptnl.serving.store import revoke_shared

        revoke_shared(cfg.store.url, cfg.store.prefix, name)
    console.print(f"revoked {name}" + (f" (also in the shared store {cfg.store.url})" if cfg.store else ""))


@keys_app.command("update")
def keys_update(
    name: str = typer.Argument(..., help="The key's name (see `gptnl keys list`)."),
    models: str = typer.Option(None, "--models", help="Comma-separated models the key may use."),
    rpm: int = typer.Option(None, "--rpm", min=1, help="Requests per minute."),
    tpm: int = typer.Option(None, "--tpm", min=1, help="Tokens (prompt + completion) per minute."),
    max_concurrent: int = typer.Option(None, "--max-concurrent", min=1, help="Requests in flight at once."),
    budget_day: int = typer.Option(None, "--budget-day", min=0, help="Tokens per UTC day; 0 removes the budget."),
    budget_month: int = typer.Option(None, "--budget-month", min=0, help="Tokens per UTC month; 0 removes it."),
    budget_soft: float = typer.Option(None, "--budget-soft", min=0, max=1.0,
                                      help="Share of a budget after which answers warn; 0 removes the warning."),
    expires: str = typer.Option(None, "--expires", help="Last valid day, YYYY-MM-DD; 'never' removes it."),
    config: Path = typer.Option(GATEWAY, "--config", help="Gateway config whose key store to use."),
) -> None:
    """Change a key's models or limits; running gateways apply it from their next request on."""
    import datetime as dt

    from gptnl.config import load_gateway_config
    from gptnl.errors import GptnlError
    from gptnl.serving.keys import KeyStore

    cfg = load_gateway_config(config, check_models=False)
    changes: dict = {f: v for f, v in (("rpm", rpm), ("tpm", tpm), ("max_concurrent", max_concurrent))
                     if v is not None}
    changes.update({f: v or None for f, v in (("budget_day", budget_day), ("budget_month", budget_month),
                                              ("budget_soft", budget_soft)) if v is not None})
    if models is not None:
        wanted = [m.strip() for m in models.split(",") if m.strip()]
        unknown = [m for m in wanted if m not in cfg.models]
        if unknown or not wanted:
            raise GptnlError(f"--models: {', '.join(unknown) or 'none given'}; {config} serves: "
                             f"{', '.join(cfg.models)}")
        changes["models"] = wanted
    if expires is not None:
        try:
            changes["expires"] = None if expires == "never" else dt.date.fromisoformat(expires)
        except ValueError:
            raise GptnlError(f"--expires {expires!r}: use YYYY-MM-DD or 'never'") from None
    if not changes:
        raise GptnlError("nothing to change: give at least one of --models, --rpm, --tpm, --max-concurrent, "
                         "--budget-day, --budget-month, --budget-soft, --expires")
    r = KeyStore(cfg.keys).update(name, **changes)
    console.print(f"updated {name}: " + ", ".join(f"{f}={getattr(r, f)}" for f in changes))


@keys_app.command("usage")
def keys_usage(
    since: str = typer.Option(None, "--since", help="From this UTC day (YYYY-MM-DD) or time on."),
    by: str = typer.Option("key", "--by", help="Group by key, model or day (UTC)."),
    fmt: str = typer.Option("table", "--format", help="table, csv or json."),
    config: Path = typer.Option(GATEWAY, "--config", help="Gateway config whose audit log to read."),
) -> None:
    """Requests, refusals, tokens and latency per key, model or day, from the audit log (cost allocation)."""
    import csv
    import json
    import sys

    from gptnl.config import load_gateway_config
    from gptnl.errors import GptnlError
    from gptnl.serving.usage import usage_report

    if fmt not in ("table", "csv", "json"):
        raise GptnlError(f"--format {fmt!r}: use table, csv or json")
    cfg = load_gateway_config(config, check_models=False)
    rows, notes = usage_report(cfg.audit, since, by)
    for note in notes.skipped:
        typer.echo(f"{cfg.audit}: {note}", err=True)
    records = [r.as_dict() | {by: r.as_dict()["group"]} for r in rows]
    cols = [by, "requests", "ok", "refused", "errors", "prompt_tokens", "completion_tokens", "tokens", "p50_ms",
            "p99_ms"]
    if fmt == "json":
        print(json.dumps([{c: r[c] for c in cols} for r in records], indent=1))
    elif fmt == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
    else:
        table = Table()
        for c in cols:
            table.add_column(c, justify="left" if c == by else "right")
        for r in records:
            table.add_row(*("-" if r[c] is None else str(r[c]) for c in cols))
        console.print(table)


from gptnl.evals.cli import eval_app  # noqa: E402 - a sub-app of its own module, registered here

app.add_typer(eval_app, name="eval")

slurm_app = typer.Typer(no_args_is_help=True, help="Submit and watch jobs on a Slurm cluster.")
app.add_typer(slurm_app, name="slurm")
submit_app = typer.Typer(no_args_is_help=True, help="Submit a stage as a Slurm job.")
slurm_app.add_typer(submit_app, name="submit")


@submit_app.command("train")
def slurm_submit_train(
    config: Path = typer.Argument(..., help="Training config YAML."),
    cluster: Path = typer.Option(..., "--cluster", help="Cluster profile (slurm/clusters/*.yaml)."),
    run_dir: Path = typer.Option(None, "--run-dir", help=(
        "Run dir on the cluster's shared filesystem (default: the profile's scratch/<config name>).")),
    nodes: int = typer.Option(1, "--nodes"),
    time: str = typer.Option(None, "--time", help="Time limit (default: the profile's), e.g. 5-00:00:00."),
    partition: str = typer.Option(None, "--partition", help="Default: the profile's train partition."),
    gpus_per_node: int = typer.Option(None, "--gpus-per-node", help="Default: all GPUs of a node."),
    max_steps: int = typer.Option(None, "--max-steps", help="Overrides max_steps."),
    universal: bool = typer.Option(False, "--universal", help=(
        "The first run resumes from the converted universal checkpoint (another node count); requeued "
        "runs resume from their own checkpoints.")),
    grace: int = typer.Option(None, "--grace", help=(
        "Seconds before the time limit to checkpoint and requeue (default: the profile's); 0: no warning "
        "signal, the job ends TIMEOUT after a checkpoint on Slurm's SIGTERM.")),
    max_restarts: int = typer.Option(None, "--max-restarts", help="Requeues allowed (default: the profile's)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the sbatch script; submit nothing."),
) -> None:
    """Train as a Slurm job: one task per GPU (or process), requeued after a checkpoint on SIGUSR1."""
    from gptnl.slurm.submit import render_train, sbatch

    job = render_train(config, cluster, run_dir=run_dir, nodes=nodes, time=time, partition=partition,
                       gpus_per_node=gpus_per_node, max_steps=max_steps, grace_s=grace, max_restarts=max_restarts,
                       universal=universal)
    if dry_run:
        print(job.script, end="")
        return
    job_id = sbatch(job)
    print(job_id)
    typer.echo(f"submitted job {job_id}; logs in {job.logs}, checkpoints in {job.logs.parent}", err=True)


@submit_app.command("finetune")
def slurm_submit_finetune(
    config: Path = typer.Argument(..., help="Fine-tuning config YAML (configs/finetune/*.yaml)."),
    cluster: Path = typer.Option(..., "--cluster", help="Cluster profile (slurm/clusters/*.yaml)."),
    base: Path = typer.Option(..., "--base", help="HF model folder to tune, on the shared filesystem."),
    data: Path = typer.Option(..., "--data", help="Chat JSONL file or folder, on the shared filesystem."),
    out: Path = typer.Option(None, "--out", help="Run dir (default: the profile's scratch/<config name>)."),
    nodes: int = typer.Option(1, "--nodes"),
    time: str = typer.Option(None, "--time", help="Time limit (default: the profile's train time)."),
    partition: str = typer.Option(None, "--partition", help="Default: the profile's train partition."),
    gpus_per_node: int = typer.Option(None, "--gpus-per-node", help="Default: all GPUs of a node."),
    max_steps: int = typer.Option(None, "--max-steps", help="Overrides max_steps."),
    grace: int = typer.Option(None, "--grace", help="Seconds before the time limit to checkpoint and requeue."),
    max_restarts: int = typer.Option(None, "--max-restarts", help="Requeues allowed (default: the profile's)."),
    universal: bool = typer.Option(False, "--universal", help=(
        "The first run resumes from the converted universal checkpoint (another node count).")),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the sbatch script; submit nothing."),
) -> None:
    """Fine-tune as a Slurm job: the training job's shape, checkpoint on SIGUSR1 and requeue."""
    from gptnl.slurm.submit import render_finetune, sbatch

    job = render_finetune(config, cluster, base=base, data=data, out=out, nodes=nodes, time=time,
                          partition=partition, gpus_per_node=gpus_per_node, max_steps=max_steps, grace_s=grace,
                          max_restarts=max_restarts, universal=universal)
    if dry_run:
        print(job.script, end="")
        return
    job_id = sbatch(job)
    print(job_id)
    typer.echo(f"submitted job {job_id}; logs in {job.logs}, tuned model in {job.logs.parent / 'model'}", err=True)


@submit_app.command("data")
def slurm_submit_data(
    recipe: Path = typer.Argument(..., help="Recipe YAML (data_pipeline/recipes/*.yaml)."),
    cluster: Path = typer.Option(..., "--cluster", help="Cluster profile (slurm/clusters/*.yaml)."),
    out: Path = typer.Option(..., "--out", help="Corpus dir on the cluster's shared filesystem."),
    workers: int = typer.Option(None, "--workers", min=1, help="Array tasks running at once (default: no limit)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print every stage's sbatch script; submit nothing."),
) -> None:
    """The corpus pipeline as array jobs, one per stage, and a final job that writes the corpus."""
    from gptnl.config import load_recipe
    from gptnl.data_pipeline.build import build

    stats = build(recipe, load_recipe(recipe), out, workers=workers, executor="slurm", cluster=cluster,
                  dry_run=dry_run)
    if dry_run:
        for name, script in stats.scripts:
            print(f"# ---- {name} ----\n{script}")
        return
    for stage, job in stats.jobs.items():
        typer.echo(f"{stage}: " + ("already complete" if job == -1 else f"job {job}"), err=True)
    print(stats.finalise)
    typer.echo(f"submitted: job {stats.finalise} finishes the corpus in {Path(out).resolve()} when every stage "
               f"is done; logs under {stats.logs}", err=True)


@submit_app.command("pack")
def slurm_submit_pack(
    corpus: Path = typer.Argument(..., help="Corpus dir on the cluster's shared filesystem."),
    tokenizer: Path = typer.Option(..., "--tokenizer", help="Tokenizer folder."),
    out: Path = typer.Option(..., "--out", help="Shards dir to write."),
    cluster: Path = typer.Option(..., "--cluster", help="Cluster profile (slurm/clusters/*.yaml)."),
    seq_len: int = typer.Option(None, "--seq-len", help=PACK_HELP["seq_len"]),
    val_fraction: float = typer.Option(None, "--val-fraction", help=PACK_HELP["val_fraction"]),
    shard_tokens: int = typer.Option(None, "--shard-tokens", help=PACK_HELP["shard_tokens"]),
    tasks: int = typer.Option(None, "--tasks", min=1, help="Array tasks (default: one per corpus file)."),
    workers: int = typer.Option(None, "--workers", min=1, help="Array tasks running at once (default: no limit)."),
) -> None:
    """`gptnl pack` as an array job, a corpus file per task, and a job that merges the shards."""
    from gptnl.config import load_cluster
    from gptnl.pack.slurm import submit

    p = flags(PackSettings, seq_len=seq_len, val_fraction=val_fraction, shard_tokens=shard_tokens)
    jobs = submit(corpus, tokenizer, p.seq_len, out, val_fraction=p.val_fraction, shard_tokens=p.shard_tokens,
                  cluster=load_cluster(cluster), tasks=tasks, workers=workers)
    typer.echo("tasks: " + ("already complete" if jobs["tasks"] == -1 else f"job {jobs['tasks']}"), err=True)
    print(jobs["merge"])
    typer.echo(f"submitted: job {jobs['merge']} writes the shards in {Path(out).resolve()} when every task is done; "
               f"logs under {jobs['logs']}", err=True)


@submit_app.command("ray")
def slurm_submit_ray(
    command: list[str] = typer.Argument(..., help="The driver to run against the Ray cluster, after `--`."),
    cluster: Path = typer.Option(..., "--cluster", help="Cluster profile (slurm/clusters/*.yaml)."),
    run_dir: Path = typer.Option(..., "--run-dir", help="Dir on the shared filesystem for logs and the token."),
    nodes: int = typer.Option(1, "--nodes"),
    time: str = typer.Option(None, "--time", help="Time limit (default: the profile's ray time)."),
    partition: str = typer.Option(None, "--partition", help="Default: the profile's ray partition."),
    gpus_per_node: int = typer.Option(None, "--gpus-per-node", help="Default: all GPUs of a node."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the sbatch script; submit nothing."),
) -> None:
    """Start a Ray cluster on the allocation (head on the first node) and run a driver against it."""
    from gptnl.slurm.submit import render_ray, sbatch

    job = render_ray(command, cluster, run_dir=run_dir, nodes=nodes, time=time, partition=partition,
                     gpus_per_node=gpus_per_node)
    if dry_run:
        print(job.script, end="")
        return
    job_id = sbatch(job)
    print(job_id)
    typer.echo(f"submitted job {job_id}; logs in {job.logs}", err=True)


@submit_app.command("eval")
def slurm_submit_eval(
    sweep: Path = typer.Argument(..., help="Sweep YAML (evals/sweeps/*.yaml)."),
    cluster: Path = typer.Option(..., "--cluster", help="Cluster profile (slurm/clusters/*.yaml)."),
    run_dir: Path = typer.Option(..., "--run-dir", help="Dir on the shared filesystem: results, logs, token."),
    nodes: int = typer.Option(1, "--nodes"),
    time: str = typer.Option(None, "--time", help="Time limit (default: the profile's ray time)."),
    partition: str = typer.Option(None, "--partition", help="Default: the profile's ray partition."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the sbatch script; submit nothing."),
) -> None:
    """An evaluation sweep on a Ray cluster started on the allocation; results in RUN_DIR/results."""
    from gptnl.evals.spec import load_sweep
    from gptnl.slurm.submit import render_ray, sbatch

    load_sweep(sweep)  # a sweep that does not validate is refused here, not in the job
    run_dir = Path(run_dir).resolve()
    command = [sys.executable, "-m", "gptnl", "eval", "sweep", str(Path(sweep).resolve()), "--results",
               str(run_dir / "results")]  # the job exports RAY_ADDRESS, which ray.init() joins
    job = render_ray(command, cluster, run_dir=run_dir, nodes=nodes, time=time, partition=partition, kind="eval")
    if dry_run:
        print(job.script, end="")
        return
    job_id = sbatch(job)
    print(job_id)
    typer.echo(f"submitted job {job_id}; logs in {job.logs}, results in {run_dir / 'results'}", err=True)


@slurm_app.command("status")
def slurm_status(job: str = typer.Argument(None, help="Job id; without it, your jobs in the queue.")) -> None:
    """State, restarts, run time and log of a job (or your queue); from accounting once Slurm forgets it."""
    from gptnl.slurm.submit import status

    console.print(status(job), highlight=False, soft_wrap=True)


@slurm_app.command("logs")
def slurm_logs(
    job: str = typer.Argument(...),
    lines: int = typer.Option(50, "--lines", "-n", help="Lines from the end (0: all)."),
    restart: int = typer.Option(None, "--restart", help="Only what run N of a requeued job wrote (0: the first)."),
    follow_: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the job has ended."),
) -> None:
    """The end of a job's log; with --restart, the part of one run (a requeued job appends to one file)."""
    from gptnl.slurm.submit import follow, log_path, restart_part

    path = log_path(job)
    if not path.is_file() and not follow_:
        raise GptnlError(f"job {job}: no log at {path} yet")
    data = path.read_bytes() if path.is_file() else b""
    text = data.decode(errors="replace")
    if restart is not None:
        text = restart_part(text, restart)
    shown = text.splitlines()[-lines:] if lines else text.splitlines()
    if shown:
        print("\n".join(shown), flush=True)
    if follow_:
        for chunk in follow(job, path, len(data)):
            print(chunk, end="", flush=True)


@slurm_app.command("cancel")
def slurm_cancel(job: str = typer.Argument(...)) -> None:
    """Cancel a job."""
    from gptnl.slurm.submit import cancel

    cancel(job)
    console.print(f"cancelled {job}")


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Where every stage writes."),
    quick: bool = typer.Option(False, "--quick", help="A shorter training run."),
    fresh: bool = typer.Option(False, "--fresh", help="Rebuild every stage instead of reusing outputs."),
) -> None:
    """The main job on the bundled sample: corpus → tokenizer → pack → train → export → generate."""
    from gptnl.demo import run_demo

    run_demo(out, quick=quick, fresh=fresh, console=console)


def main(argv: list[str] | None = None) -> None:
    run(app, argv)
