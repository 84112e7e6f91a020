"""`gptnl eval run | sweep | report | list | fetch | export-lm-eval`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

eval_app = typer.Typer(no_args_is_help=True, help="Evaluate models on the public-values suite.")
console = Console(stderr=True)


def _suite_info(suite_path: Path) -> tuple[list[str], Path, dict]:
    from gptnl.evals.tasks import load_suite_tasks

    suite, tasks_dir, digest = load_suite_tasks(suite_path)
    return suite.tasks, tasks_dir, {"name": suite.name, "sha256": digest}


def _summary(results_dir: Path, cells) -> None:
    from gptnl.evals import results as res
    from gptnl.evals.report import fmt

    ids = {c.id for c in cells}
    table = Table(title=f"results in {results_dir / 'results.jsonl'}")
    for col in ("model", "task", "settings", "primary metric", "value", "95% interval", "n"):
        table.add_column(col)
    for r in res.read(results_dir / "results.jsonl"):
        if r["cell"] in ids:
            m = r["metrics"][r["primary"]]
            table.add_row(r["model"]["name"], r["task"]["name"], r["settings"]["name"], r["primary"], fmt(m["value"]),
                          f"{fmt(m['low'])} – {fmt(m['high'])}", str(m["n"]))
    Console().print(table)


def _failed(results_dir: Path, outcome: dict) -> None:
    """The cells that failed, one line each, then a non-zero exit; the others were recorded."""
    from gptnl.evals.tasks import EvalError

    failed = outcome["failed"]
    if not failed:
        return
    table = Table(title=f"failed cells (in {results_dir / 'failed.jsonl'}; a rerun retries only these)")
    for col in ("model", "task", "settings", "error"):
        table.add_column(col)
    for f in failed:
        table.add_row(f.model, f.task, f.settings, f.error[:300])
    console.print(table)
    raise EvalError(f"{len(failed)} of {len(failed) + outcome['done']} cells failed; the others are in "
                    f"{results_dir / 'results.jsonl'}")


@eval_app.command("run")
def run(
    suite: Path = typer.Option(Path("evals/suites/public-values.yaml"), "--suite", help="Suite YAML."),
    model: list[str] = typer.Option(..., "--model", help="NAME=URL[#model-id] or NAME=PATH (an HF export); repeat."),
    api_key: str = typer.Option(None, "--api-key", envvar="GPTNL_EVAL_API_KEY", help="Key for URL endpoints."),
    results: Path = typer.Option(Path("runs/evals"), "--results", help="Results dir (results.jsonl, cache)."),
    task: list[str] = typer.Option(None, "--task", help="Only these tasks of the suite; repeat."),
    limit: int = typer.Option(None, "--limit", min=1, help="At most N items (or templates) per task."),
    concurrency: int = typer.Option(4, "--concurrency", min=1, help="Requests at once."),
) -> None:
    """Run a suite against models in this process; finished cells are skipped on a rerun."""
    from gptnl.evals.spec import Settings
    from gptnl.evals.sweep import endpoints, execute, parse_model, plan
    from gptnl.evals.tasks import EvalError

    names, tasks_dir, info = _suite_info(suite)
    if task:
        unknown = [t for t in task if t not in names]
        if unknown:
            raise EvalError(f"--task {', '.join(unknown)}: not in {suite} (it has: {', '.join(names)})")
        names = [t for t in names if t in task]
    models = dict(parse_model(m) for m in model)
    settings = [Settings(limit=limit)]
    with endpoints(models, results, api_key) as eps:
        cells = plan(names, tasks_dir, eps, settings)
        outcome = execute(cells, tasks_dir, eps, info, results, concurrency=concurrency, console=console)
    _summary(results, cells)
    _failed(results, outcome)


@eval_app.command("sweep")
def sweep(
    spec: Path = typer.Argument(..., help="Sweep YAML (evals/sweeps/*.yaml): models x suite x settings."),
    results: Path = typer.Option(Path("runs/evals"), "--results", help="Results dir."),
    address: str = typer.Option(None, "--address", help="Ray cluster (e.g. auto); default: a local Ray."),
    api_key: str = typer.Option(None, "--api-key", envvar="GPTNL_EVAL_API_KEY"),
) -> None:
    """Every cell as a Ray task with retries; results appended as cells finish; a rerun skips them."""
    from gptnl.evals.spec import load_sweep
    from gptnl.evals.sweep import endpoints, execute, plan

    sw = load_sweep(spec)
    names, tasks_dir, info = _suite_info((spec.parent / sw.suite).resolve())
    models = {n: m.model_copy(update={k: str((spec.parent / getattr(m, k)).resolve())
                                      for k in ("path", "tokenizer") if getattr(m, k)}) for n, m in sw.models.items()}
    with endpoints(models, results, api_key, reachable=address is not None) as eps:
        # on a cluster, local exports are served from this node to every node's workers
        for name, ep in eps.items():
            if ep.info.endpoint.startswith("local:"):
                console.print(f"[dim]serving {name} at {ep.base_url}", soft_wrap=True)
        cells = plan(names, tasks_dir, eps, sw.settings)
        outcome = execute(cells, tasks_dir, eps, info, results, concurrency=sw.concurrency, retries=sw.retries,
                          use_ray=True, address=address, console=console)
    _summary(results, cells)
    _failed(results, outcome)


@eval_app.command("report")
def report(
    results: Path = typer.Argument(..., help="Results dir with results.jsonl."),
    out: Path = typer.Option(None, "--out", help="Report dir (default: RESULTS/report)."),
    references: Path = typer.Option(None, "--references",
                                    help="CSV of published scores (model,task,metric,value,source) to show."),
) -> None:
    """A leaderboard per suite, published scores beside ours, a chart per public value with
    intervals, the failed cells, model profiles and a comparison: report.html (+ PNGs) and report.md."""
    from gptnl.evals.report import write_report

    path = write_report(results, out or results / "report", references)
    print(path)


@eval_app.command("list")
def list_tasks(
    tasks_dir: Path = typer.Option(None, "--tasks", help="Tasks dir (default: evals/tasks)."),
) -> None:
    """Tasks and suites found."""
    from gptnl.evals.spec import load_suite, load_task_spec
    from gptnl.evals.tasks import SUITES_DIR, TASKS_DIR, discover, load_task
    from gptnl.public_data import present

    table = Table(title="tasks")
    for col in ("task", "public value", "type", "items", "metrics"):
        table.add_column(col)
    for name, path in discover(tasks_dir or TASKS_DIR).items():
        spec = load_task_spec(path)
        if spec.public and not present(name, spec.public.files, spec.public.split):  # a public set not fetched here
            table.add_row(name, spec.value, spec.type, f"not here: gptnl eval fetch {name}", ", ".join(spec.metrics))
            continue
        t = load_task(name, tasks_dir or TASKS_DIR)
        table.add_row(name, t.spec.value, t.spec.type, str(len(t.items)), ", ".join(t.spec.metrics))
    Console().print(table)
    for path in sorted(SUITES_DIR.glob("*.yaml")):
        s = load_suite(path)
        print(f"suite {s.name} ({path}): {', '.join(s.tasks)}")


@eval_app.command("fetch")
def fetch(
    names: list[str] = typer.Argument(..., help="Public tasks (or a suite, e.g. euroeval-nl) to fetch."),
    to: Path = typer.Option(..., "--to", help="Folder to put each set in (DIR/<task>/), recorded for later runs."),
    token: str = typer.Option(None, "--token", envvar="HF_TOKEN", help="Hugging Face token, for gated sets."),
) -> None:
    """Download public sets as their publishers distribute them (huggingface_hub; HF_ENDPOINT and
    HF_HUB_OFFLINE honoured), check and record them; offline, say which files to place where."""
    from gptnl.evals.fetch import fetch as fetch_sets

    fetch_sets(names, to, token=token)


@eval_app.command("export-lm-eval")
def export_lm_eval(
    out: Path = typer.Option(..., "--out", help="Dir to write lm-eval task YAMLs and data into."),
    task: list[str] = typer.Option(None, "--task", help="Only these tasks; repeat (default: all that map)."),
) -> None:
    """Our log-likelihood tasks as lm-eval YAML tasks (`lm_eval --include_path OUT`)."""
    from gptnl.evals.lmeval import export

    for path in export(out, task or None):
        print(path)
