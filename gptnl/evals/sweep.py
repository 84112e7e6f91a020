"""Models x tasks x settings: the cells of an evaluation, run in this process (`gptnl eval run`) or
as one Ray task each (`gptnl eval sweep`), with results appended as each cell ends and finished
cells skipped on a rerun."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gptnl import fileio
from gptnl.evals import results as res
from gptnl.evals.spec import ModelRef, Settings
from gptnl.evals.tasks import EvalError, load_task


@dataclass(frozen=True)
class Endpoint:
    info: res.ModelInfo
    base_url: str
    api_key: str | None
    tokenizer: str | None = None  # the model's tokenizer folder, for perplexity in windows of tokens


@dataclass(frozen=True)
class Cell:
    id: str
    task: str
    model: str
    settings: Settings
    error: str | None = None  # why the cell cannot even start (its task does not load)


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
    found = fileio.weights_fingerprint(path)
    if not found:
        raise EvalError(f"{path}: no *.safetensors weights (is it an HF export?)")
    return found


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
                                                   fingerprint=weights_fingerprint(path)), base, key,
                                     str(path.resolve()))
        for name, ref in models.items():
            if ref.endpoint:
                key = os.environ.get(ref.api_key_env) if ref.api_key_env else api_key
                model_id = ref.model_id or Client(ref.endpoint, api_key=key).model
                out[name] = Endpoint(res.ModelInfo(name=name, endpoint=ref.endpoint, model_id=model_id,
                                                   fingerprint=""), ref.endpoint, key, ref.tokenizer)
        yield out


def plan(task_names: list[str], tasks_dir: Path, eps: dict[str, Endpoint], settings: list[Settings]) -> list[Cell]:
    """Every model x setting x task; a task that does not load becomes failed cells, not a stop."""
    loaded: dict[str, str | EvalError] = {}
    for name in task_names:
        try:
            loaded[name] = load_task(name, tasks_dir).sha256
        except EvalError as exc:
            loaded[name] = exc
    cells = []
    for model, ep in eps.items():
        for s in settings:
            for name in task_names:
                sha = loaded[name]
                error = str(sha) if isinstance(sha, EvalError) else None
                cells.append(Cell(res.cell_id(ep.info, name, "unloadable" if error else sha, s.model_dump()), name,
                                  model, s, error))
    return cells


def run_one(cell: Cell, tasks_dir: str, ep: Endpoint, suite: dict | None, results_dir: str, concurrency: int) -> str:
    """Run a cell and append its record (in a Ray worker or in this process)."""
    from gptnl.evals.client import Cache, Client
    from gptnl.evals.runner import run_cell

    task = load_task(cell.task, Path(tasks_dir))
    cache = Cache(Path(results_dir) / "cache.sqlite")
    try:
        client = Client(ep.base_url, model_id=ep.info.model_id, api_key=ep.api_key, fingerprint=ep.info.fingerprint,
                        cache=cache, concurrency=task.spec.concurrency or concurrency, tokenizer=ep.tokenizer)
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


def _failed(results_dir: Path, cell: Cell, exc: BaseException | str) -> res.FailedCell:
    error = exc if isinstance(exc, str) else str(exc) if isinstance(exc, EvalError) else f"{type(exc).__name__}: {exc}"
    failure = res.FailedCell(cell=cell.id, model=cell.model, task=cell.task, settings=cell.settings.name,
                             error=" ".join(error.split())[:2000], at=datetime.now(UTC).isoformat(timespec="seconds"))
    res.append_failure(results_dir / "failed.jsonl", failure)
    return failure


def _run_here(todo: list[Cell], tasks_dir: Path, eps: dict[str, Endpoint], suite: dict | None, results_dir: Path,
              concurrency: int, progress: Progress, bar) -> list[res.FailedCell]:
    failed = []
    for c in todo:
        progress.update(bar, description=f"{c.model} · {c.task} · {c.settings.name}")
        try:
            run_one(c, str(tasks_dir), eps[c.model], suite, str(results_dir), concurrency)
        except Exception as exc:  # noqa: BLE001 - one cell's failure is recorded; the others still run
            failed.append(_failed(results_dir, c, exc))
        progress.advance(bar)
    return failed


def _run_on_ray(todo: list[Cell], tasks_dir: Path, eps: dict[str, Endpoint], suite: dict | None, results_dir: Path,
                concurrency: int, retries: int, address: str | None, progress: Progress, bar) -> list[res.FailedCell]:
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    failed = []
    try:
        remote = ray.remote(max_retries=retries, retry_exceptions=False, num_cpus=1)(run_one)
        pending = {remote.remote(c, str(tasks_dir), eps[c.model], suite, str(results_dir), concurrency): c
                   for c in todo}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            cell = pending.pop(ready[0])
            try:
                ray.get(ready[0])
            except ray.exceptions.RayTaskError as exc:  # the cell raised: the user's error, not Ray's traceback
                failed.append(_failed(results_dir, cell, exc.cause if exc.cause is not None else exc))
            except ray.exceptions.RayError as exc:  # its worker died more often than the retries allow
                failed.append(_failed(results_dir, cell, f"{type(exc).__name__}: {str(exc).splitlines()[0]}"))
            progress.update(bar, description=f"{cell.model} · {cell.task} · {cell.settings.name}")
            progress.advance(bar)
    finally:
        if started:
            ray.shutdown()
    return failed


def pending(cells: list[Cell], results_dir: Path) -> list[Cell]:
    """The cells whose record is not yet in results_dir/results.jsonl."""
    finished = {r["cell"] for r in res.read(Path(results_dir) / "results.jsonl")}
    return [c for c in cells if c.id not in finished]


def execute(cells: list[Cell], tasks_dir: Path, eps: dict[str, Endpoint], suite: dict | None, results_dir: Path,
            *, concurrency: int = 4, retries: int = 2, use_ray: bool = False, address: str | None = None,
            console: Console | None = None) -> dict:
    """Run the cells not yet in results.jsonl. A cell that fails is recorded in failed.jsonl and the
    others go on; a rerun tries it again. Returns {"done": n, "skipped": n, "failed": [FailedCell]}."""
    console = console or Console(stderr=True)
    results_dir.mkdir(parents=True, exist_ok=True)
    from gptnl.evals.client import Cache

    Cache(results_dir / "cache.sqlite").close()  # created once here, before workers open it together
    todo = pending(cells, results_dir)
    skipped = len(cells) - len(todo)
    if skipped:
        console.print(f"{skipped} of {len(cells)} cells already in {results_dir / 'results.jsonl'}: skipped")
    failed = [_failed(results_dir, c, c.error) for c in todo if c.error]
    runnable = [c for c in todo if not c.error]
    with _progress(console) as progress:
        bar = progress.add_task("cells", total=len(runnable))
        if use_ray and runnable:
            failed += _run_on_ray(runnable, tasks_dir, eps, suite, results_dir, concurrency, retries, address,
                                  progress, bar)
        else:
            failed += _run_here(runnable, tasks_dir, eps, suite, results_dir, concurrency, progress, bar)
    return {"done": len(todo) - len(failed), "skipped": skipped, "failed": failed}
