"""Models x tasks x settings: the cells of an evaluation, run in this process (`gptnl eval run`) or
as one Ray task each (`gptnl eval sweep`), with results appended as each cell ends and finished
cells skipped on a rerun."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gptnl.evals import results as res
from gptnl.evals.spec import ModelRef, Settings
from gptnl.evals.tasks import EvalError, load_task
from gptnl.fileio import sha256_file


@dataclass(frozen=True)
class Endpoint:
    info: res.ModelInfo
    base_url: str
    api_key: str | None


@dataclass(frozen=True)
class Cell:
    id: str
    task: str
    model: str
    settings: Settings


def parse_model(arg: str) -> tuple[str, ModelRef]:
    """`name=http://…/v1[#model-id]` or `name=path/to/hf-export`."""
    name, sep, target = arg.partition("=")
    if not sep or not name or not target:
        raise EvalError(f"--model {arg!r}: write NAME=URL (an OpenAI-compatible /v1 endpoint) or NAME=PATH "
                        "(a local HF export)")
    if target.startswith(("http://", "https://")):
        url, _, model_id = target.partition("#")
        return name, ModelRef(endpoint=url, model_id=model_id or None)
    return name, ModelRef(path=target)


def weights_fingerprint(path: Path) -> str:
    """The export's safetensors digests: a result names exactly the weights it measured."""
    weights = sorted(Path(path).glob("*.safetensors"))
    if not weights:
        raise EvalError(f"{path}: no *.safetensors weights (is it an HF export?)")
    return ",".join(sha256_file(w)[:16] for w in weights)


@contextmanager
def endpoints(models: dict[str, ModelRef], workdir: Path, api_key: str | None = None, *,
              reachable: bool = False) -> Iterator[dict[str, Endpoint]]:
    """Every model as an endpoint; local exports are served together for as long as this lasts
    (`reachable`: from the other nodes of a Ray cluster too)."""
    from gptnl.evals.client import Client
    from gptnl.evals.local import served

    local = {n: Path(m.path) for n, m in models.items() if m.path}
    with ExitStack() as stack:
        out: dict[str, Endpoint] = {}
        if local:
            for name, path in local.items():
                if not path.is_dir():
                    raise EvalError(f"model {name}: {path} is not a directory")
            base, key = stack.enter_context(served(local, workdir / "serving", reachable=reachable))
            for name, path in local.items():
                out[name] = Endpoint(res.ModelInfo(name=name, endpoint=f"local:{path.resolve()}", model_id=name,
                                                   fingerprint=weights_fingerprint(path)), base, key)
        for name, ref in models.items():
            if ref.endpoint:
                key = os.environ.get(ref.api_key_env) if ref.api_key_env else api_key
                model_id = ref.model_id or Client(ref.endpoint, api_key=key).model
                out[name] = Endpoint(res.ModelInfo(name=name, endpoint=ref.endpoint, model_id=model_id,
                                                   fingerprint=""), ref.endpoint, key)
        yield out


def plan(task_names: list[str], tasks_dir: Path, eps: dict[str, Endpoint], settings: list[Settings]) -> list[Cell]:
    cells = []
    for model, ep in eps.items():
        for s in settings:
            for name in task_names:
                task = load_task(name, tasks_dir)
                cells.append(Cell(res.cell_id(ep.info, name, task.sha256, s.model_dump()), name, model, s))
    return cells


def run_one(cell: Cell, tasks_dir: str, ep: Endpoint, suite: dict | None, results_dir: str, concurrency: int) -> str:
    """Run a cell and append its record (in a Ray worker or in this process)."""
    from gptnl.evals.client import Cache, Client
    from gptnl.evals.runner import run_cell

    task = load_task(cell.task, Path(tasks_dir))
    cache = Cache(Path(results_dir) / "cache.sqlite")
    try:
        client = Client(ep.base_url, model_id=ep.info.model_id, api_key=ep.api_key, fingerprint=ep.info.fingerprint,
                        cache=cache, concurrency=task.spec.concurrency or concurrency)
        record, rows = run_cell(task, client, ep.info, cell.settings, suite)
    finally:
        cache.close()
    if record["cell"] != cell.id:
        raise EvalError(f"{cell.task}: the task changed while the sweep ran; run it again")
    res.write_rows(Path(results_dir), cell.id, rows)
    res.append(Path(results_dir) / "results.jsonl", record)
    return cell.id


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console)


def execute(cells: list[Cell], tasks_dir: Path, eps: dict[str, Endpoint], suite: dict | None, results_dir: Path,
            *, concurrency: int = 4, retries: int = 2, use_ray: bool = False, address: str | None = None,
            console: Console | None = None) -> dict:
    """Run the cells not yet in results.jsonl; returns {"done": n, "skipped": n}."""
    console = console or Console(stderr=True)
    results_dir.mkdir(parents=True, exist_ok=True)
    from gptnl.evals.client import Cache

    Cache(results_dir / "cache.sqlite").close()  # created once here, before workers open it together
    finished = {r["cell"] for r in res.read(results_dir / "results.jsonl")}
    todo = [c for c in cells if c.id not in finished]
    skipped = len(cells) - len(todo)
    if skipped:
        console.print(f"{skipped} of {len(cells)} cells already in {results_dir / 'results.jsonl'}: skipped")
    with _progress(console) as progress:
        bar = progress.add_task("cells", total=len(todo))
        if not use_ray:
            for c in todo:
                progress.update(bar, description=f"{c.model} · {c.task} · {c.settings.name}")
                run_one(c, str(tasks_dir), eps[c.model], suite, str(results_dir), concurrency)
                progress.advance(bar)
            return {"done": len(todo), "skipped": skipped}
        import ray

        started = not ray.is_initialized()
        if started:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        try:
            remote = ray.remote(max_retries=retries, retry_exceptions=False, num_cpus=1)(run_one)
            pending = {remote.remote(c, str(tasks_dir), eps[c.model], suite, str(results_dir), concurrency): c
                       for c in todo}
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                cell = pending.pop(ready[0])
                try:
                    ray.get(ready[0])
                except ray.exceptions.RayTaskError as exc:
                    if isinstance(exc.cause, EvalError):  # the user's problem: one line, not Ray's traceback
                        raise EvalError(f"{cell.model} · {cell.task}: {exc.cause}") from None
                    raise
                progress.update(bar, description=f"{cell.model} · {cell.task} · {cell.settings.name}")
                progress.advance(bar)
        finally:
            if started:
                ray.shutdown()
    return {"done": len(todo), "skipped": skipped}
