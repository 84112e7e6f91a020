"""One cell: a task's items asked of one model under one setting, scored, and turned into metrics
with intervals."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from gptnl import __version__
from gptnl.evals import fewshot
from gptnl.evals.client import Client
from gptnl.evals.metrics import METRICS, bootstrap, softmax
from gptnl.evals.results import ModelInfo, cell_id
from gptnl.evals.scorers import SCORERS
from gptnl.evals.spec import Settings
from gptnl.evals.tasks import EvalError, Task

TaskTypeFn = Callable[[Task, list[dict], Client, Settings, int], list[dict]]
TASK_TYPES: dict[str, TaskTypeFn] = {}


def task_type(name: str) -> Callable[[TaskTypeFn], TaskTypeFn]:
    """Register `fn(task, items, client, settings, few_shot) -> scored rows` as a task type."""

    def register(fn: TaskTypeFn) -> TaskTypeFn:
        if name in TASK_TYPES:
            raise ValueError(f"task type {name!r} is registered twice")
        TASK_TYPES[name] = fn
        return fn

    return register

PASS_THROUGH = ("condition", "stereotyped", "unknown", "unmapped", "misconception", "group", "kind", "category",
                "scenario")


def _limit(items: list[dict], limit: int | None) -> list[dict]:
    """The first `limit` clusters (a template with all its names counts once)."""
    if limit is None:
        return items
    keep: list[Any] = []
    for item in items:
        c = item.get("cluster", item.get("scenario", item["id"]))
        if c not in keep:
            keep.append(c)
    keep = set(keep[:limit])
    return [i for i in items if i.get("cluster", i.get("scenario", i["id"])) in keep]


def _choices(task: Task, item: dict) -> list[str]:
    c = task.spec.choices
    return item[c] if isinstance(c, str) else list(c)


def _base_row(item: dict) -> dict:
    row = {"id": item["id"], "cluster": item.get("cluster", item.get("scenario", item["id"]))}
    row.update({k: item[k] for k in PASS_THROUGH if k in item})
    return row


def _tie_share(scores: list[float], answer: int) -> float:
    """1 when the answer alone scores best, 1/k when it ties with k-1 others: a model that cannot
    tell the choices apart scores chance, not whatever comes first."""
    best = [i for i, v in enumerate(scores) if v == max(scores)]
    return (answer in best) / len(best)


@task_type("multiple_choice")
def _multiple_choice(task: Task, items: list[dict], client: Client, s: Settings, few_shot: int) -> list[dict]:
    d = task.spec.target_delimiter
    pairs, spans = [], []
    for item in items:
        context = fewshot.prefix(task, item, few_shot, s.seed) + task.spec.prompt.format(**item)
        choices = _choices(task, item)
        spans.append((len(pairs), len(choices)))
        pairs += [(context, d + c) for c in choices]
    lls = [a["loglik"] for a in client.loglik(pairs, use_cache=task.spec.cache)]
    rows = []
    for item, (start, n) in zip(items, spans, strict=True):
        mine = lls[start:start + n]
        pred = max(range(n), key=mine.__getitem__)
        # lm-eval's acc_norm: log-likelihood per byte, so that long answers are not penalised for length
        per_byte = [ll / max(1, len((d + c).encode())) for ll, c in zip(mine, _choices(task, item), strict=True)]
        pred_norm = max(range(n), key=per_byte.__getitem__)
        p = softmax(mine)
        row = {**_base_row(item), "pred": pred, "pred_norm": pred_norm, "p": p, "p_yes": p[0]}
        answer = item.get(task.spec.answer)
        if isinstance(answer, int):
            row["correct"], row["correct_norm"] = _tie_share(mine, answer), _tie_share(per_byte, answer)
            row["gold"] = answer
        elif isinstance(answer, list):  # several true answers (TruthfulQA mc2): the probability mass on them
            row["p_true"] = sum(p[i] for i in answer)
            row["correct"] = float(pred in answer)
        rows.append(row)
    return rows


@task_type("pairs")
def _pairs(task: Task, items: list[dict], client: Client, s: Settings, few_shot: int) -> list[dict]:
    answers = client.loglik([p for i in items for p in (("", i["good"]), ("", i["bad"]))], use_cache=task.spec.cache)
    return [{**_base_row(item), "correct": _tie_share([good["loglik"], bad["loglik"]], 0),
             "margin": good["loglik"] - bad["loglik"]}
            for item, good, bad in zip(items, answers[::2], answers[1::2], strict=True)]


def rolling_windows(tokens: list[int], start: int, window: int, stride: int) -> list[tuple[list[int], list[int]]]:
    """lm-eval's loglikelihood_rolling windows (get_rolling_token_windows + make_disjoint_window) as
    (context, continuation) pairs of at most `window` tokens together: every token is scored once;
    the first window after the start token, each later one `stride` new tokens with the tokens
    before them as context (the model sees window - 1 positions, lm-eval's max_length)."""
    span = window - 1
    if not 1 <= stride <= span:
        raise EvalError(f"rolling: stride {stride} must be between 1 and the window {window} - 1")
    if not tokens:
        return []
    first = min(span, len(tokens))
    out = [([start], tokens[:first])]
    done = first
    while done < len(tokens):
        n = min(len(tokens) - done, stride)
        end = done + n
        out.append((tokens[max(0, end - span - 1):end - n], tokens[end - n:end]))
        done = end
    return out


@task_type("perplexity")
def _perplexity(task: Task, items: list[dict], client: Client, s: Settings, few_shot: int) -> list[dict]:
    """Log-likelihood of whole documents; with the model's tokenizer at hand, in rolling windows of
    token ids, so a document longer than the context is scored whole instead of refused."""
    if client.tokenizer_path is None:
        try:
            answers = client.loglik([("", i["text"]) for i in items], use_cache=task.spec.cache)
        except EvalError as exc:
            if "HTTP 400" not in str(exc):
                raise
            raise EvalError(f"{exc}; to score documents longer than the context in rolling windows, give the "
                            "model's tokenizer (`tokenizer: PATH` for this model in the sweep)") from None
    else:
        room = client.max_model_len - 1 if client.max_model_len else None  # the endpoint generates one token
        window = min(w for w in (task.spec.rolling.window, room) if w) if (task.spec.rolling.window or room) else None
        if window is None:
            raise EvalError(f"{task.name}: the endpoint does not say the model's context; set rolling.window")
        span, answers = [], []
        windows: list[tuple[list[int], list[int]]] = []
        for item in items:
            tokens, start_id = client.tokenize(item["text"])
            mine = rolling_windows(tokens, start_id, window, task.spec.rolling.stride or window - 1)
            span.append((len(windows), len(mine)))
            windows += mine
        scored = client.loglik_tokens(windows, use_cache=task.spec.cache)
        for first, n in span:
            part = scored[first:first + n]
            answers.append({"loglik": sum(a["loglik"] for a in part), "tokens": sum(a["tokens"] for a in part)})
    return [{**_base_row(i), "loglik": a["loglik"], "tokens": a["tokens"], "bytes": len(i["text"].encode())}
            for i, a in zip(items, answers, strict=True)]


def decoys(secret: str, n: int, seed: str) -> list[str]:
    """n distinct digit strings of the secret's length, never the secret, the same for every model."""
    rng, space = random.Random(seed), 10 ** len(secret)
    if n >= space:
        raise ValueError(f"{n} decoys asked for a {len(secret)}-digit secret, which has only {space - 1}")
    picked: set[str] = set()
    while len(picked) < n:
        d = str(rng.randrange(space)).zfill(len(secret))
        if d != secret:
            picked.add(d)
    return sorted(picked)


@task_type("canary")
def _canary(task: Task, items: list[dict], client: Client, s: Settings, few_shot: int) -> list[dict]:
    """The Secret Sharer's exposure (Carlini et al., 2019): the secret's rank by log-likelihood among
    itself and random decoys of its shape after the canary's prefix, as log2(candidates) - log2(rank);
    and whether greedy decoding from the prefix writes the secret out."""
    n, d = task.spec.candidates, task.spec.target_delimiter
    sets = [[i["secret"], *decoys(i["secret"], n - 1, f"{s.seed}:{i['id']}")] for i in items]
    lls = [a["loglik"] for a in client.loglik([(i["prefix"], d + c) for i, cs in zip(items, sets, strict=True)
                                                for c in cs], use_cache=task.spec.cache)]
    # room for a leading space and the full stop after the longest secret
    outs = client.generate([i["prefix"] for i in items], max_tokens=max(len(i["secret"]) for i in items) + 2,
                           temperature=0.0, chat=False, seed=s.seed, use_cache=task.spec.cache) if items else []
    rows = []
    for k, (item, out) in enumerate(zip(items, outs, strict=True)):
        mine = lls[k * n:(k + 1) * n]
        # ties share the ranks they span, so a model that cannot tell the candidates apart ranks the secret mid-way
        rank = 1 + sum(v > mine[0] for v in mine[1:]) + sum(v == mine[0] for v in mine[1:]) / 2
        rows.append({**_base_row(item), "planted": item["planted"], "rank": rank, "candidates": n,
                     "exposure": math.log2(n) - math.log2(rank), "completion": out["text"][:40],
                     "extracted": out["text"].strip().startswith(item["secret"])})
    return rows


@task_type("generate")
@task_type("probe")
def _generate(task: Task, items: list[dict], client: Client, s: Settings, few_shot: int) -> list[dict]:
    spec = task.spec
    prompts = [fewshot.prefix(task, i, few_shot, s.seed) + spec.prompt.format(**i) for i in items]
    answers = client.generate(prompts, max_tokens=s.max_tokens or spec.max_tokens,
                              temperature=s.temperature, chat=spec.chat if s.chat is None else s.chat, seed=s.seed,
                              use_cache=spec.cache)
    return [{**_base_row(i), "text": a["text"][:2000], "completion_tokens": a["completion_tokens"],
             "latency_s": a["latency_s"], **SCORERS[spec.scorer](spec, i, a["text"])}
            for i, a in zip(items, answers, strict=True)]


def score_rows(task: Task, client: Client, settings: Settings) -> list[dict]:
    items = _limit(task.items, settings.limit)
    few_shot = task.spec.few_shot.n if settings.few_shot is None else settings.few_shot
    return TASK_TYPES[task.spec.type](task, items, client, settings, few_shot)


def run_cell(task: Task, client: Client, model: ModelInfo, settings: Settings,
             suite: dict | None = None) -> tuple[dict, list[dict]]:
    """(result record, scored rows)."""
    started, t0 = datetime.now(UTC).isoformat(timespec="seconds"), time.perf_counter()
    requests0, cached0 = client.requests, client.cached
    rows = score_rows(task, client, settings)
    ctx = settings.model_dump()
    metrics = {m: bootstrap(rows, m, ctx) for m in task.spec.metrics}
    settings_d = settings.model_dump()
    record = {
        "schema": "gptnl.eval.result/1",
        "cell": cell_id(model, task.name, task.sha256, settings_d),
        "model": model.model_dump(),
        "task": {"name": task.name, "value": task.spec.value, "type": task.spec.type, "version": task.spec.version,
                 "sha256": task.sha256, "items": len(rows), "unmapped": sum("unmapped" in r for r in rows)},
        "suite": suite,
        "settings": settings_d,
        "metrics": metrics,
        "primary": task.spec.primary,
        "higher_is_better": {m: METRICS[m].higher_is_better for m in task.spec.metrics},
        "timings": {"started": started, "wall_s": round(time.perf_counter() - t0, 3),
                    "requests": client.requests - requests0, "cached": client.cached - cached0},
        "gptnl_version": __version__,
    }
    return record, rows
