"""One cell: a task's items asked of one model under one setting, scored, and turned into metrics
with intervals."""

from __future__ import annotations

import math
import random
import re
import time
from datetime import UTC, datetime
from typing import Any

from gptnl import __version__
from gptnl.evals import detectors
from gptnl.evals.client import Client
from gptnl.evals.metrics import HIGHER_IS_BETTER, bootstrap, f1_tokens, softmax
from gptnl.evals.readability import measure
from gptnl.evals.results import ModelInfo, cell_id
from gptnl.evals.spec import Settings
from gptnl.evals.tasks import Task

PASS_THROUGH = ("condition", "stereotyped", "unknown", "misconception", "group", "kind", "category", "scenario")


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


def _few_shot(task: Task, item: dict, k: int, seed: int) -> str:
    """k solved examples from the other items, the same ones for every model."""
    if k == 0:
        return ""
    others = [i for i in task.items if i.get("cluster", i["id"]) != item.get("cluster", item["id"])]
    picked = random.Random(f"{seed}:{item['id']}").sample(others, min(k, len(others)))
    d = task.spec.target_delimiter
    return "".join(task.spec.prompt.format(**ex) + d + _choices(task, ex)[ex[task.spec.answer]] + "\n\n"
                   for ex in picked)


def _base_row(item: dict) -> dict:
    row = {"id": item["id"], "cluster": item.get("cluster", item.get("scenario", item["id"]))}
    row.update({k: item[k] for k in PASS_THROUGH if k in item})
    return row


def _tie_share(scores: list[float], answer: int) -> float:
    """1 when the answer alone scores best, 1/k when it ties with k-1 others: a model that cannot
    tell the choices apart scores chance, not whatever comes first."""
    best = [i for i, v in enumerate(scores) if v == max(scores)]
    return (answer in best) / len(best)


def _multiple_choice(task: Task, items: list[dict], client: Client, s: Settings, few_shot: int) -> list[dict]:
    d = task.spec.target_delimiter
    pairs, spans = [], []
    for item in items:
        context = _few_shot(task, item, few_shot, s.seed) + task.spec.prompt.format(**item)
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
        rows.append(row)
    return rows


def _pairs(task: Task, items: list[dict], client: Client) -> list[dict]:
    answers = client.loglik([p for i in items for p in (("", i["good"]), ("", i["bad"]))], use_cache=task.spec.cache)
    return [{**_base_row(item), "correct": _tie_share([good["loglik"], bad["loglik"]], 0),
             "margin": good["loglik"] - bad["loglik"]}
            for item, good, bad in zip(items, answers[::2], answers[1::2], strict=True)]


def _perplexity(task: Task, items: list[dict], client: Client) -> list[dict]:
    answers = client.loglik([("", i["text"]) for i in items], use_cache=task.spec.cache)
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


def _canary(task: Task, items: list[dict], client: Client, s: Settings) -> list[dict]:
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


def _score(task: Task, item: dict, text: str) -> dict:
    spec = task.spec
    if spec.scorer in ("exact", "f1"):
        targets = item[spec.answer] if isinstance(item[spec.answer], list) else [item[spec.answer]]
        if spec.scorer == "exact":
            return {"score": float(any(text.strip().lower() == t.strip().lower() for t in targets))}
        return {"score": max(f1_tokens(text, t) for t in targets)}
    if spec.scorer == "regex":
        return {"score": float(bool(re.search(spec.pattern, text)))}
    if spec.scorer == "pii":
        found = detectors.leaks(text)
        return {"flag": bool(found), "found": found}
    if spec.scorer == "refusal":
        return {"flag": detectors.refuses(text)}
    if spec.scorer == "readability":
        m = measure(text)
        b1 = spec.b1
        return {"b1": bool(m and m.flesch_douma >= b1.min_flesch_douma and m.words_per_sentence <= b1.max_sentence_words
                           and m.frequent_share >= b1.min_frequent_share),
                "flesch_douma": m and m.flesch_douma, "words_per_sentence": m and m.words_per_sentence,
                "words_per_clause": m and m.words_per_clause, "frequent_share": m and m.frequent_share}
    return {}


def _generate(task: Task, items: list[dict], client: Client, s: Settings) -> list[dict]:
    spec = task.spec
    answers = client.generate([spec.prompt.format(**i) for i in items], max_tokens=s.max_tokens or spec.max_tokens,
                              temperature=s.temperature, chat=spec.chat if s.chat is None else s.chat, seed=s.seed,
                              use_cache=spec.cache)
    return [{**_base_row(i), "text": a["text"][:2000], "completion_tokens": a["completion_tokens"],
             "latency_s": a["latency_s"], **_score(task, i, a["text"])} for i, a in zip(items, answers, strict=True)]


def score_rows(task: Task, client: Client, settings: Settings) -> list[dict]:
    items = _limit(task.items, settings.limit)
    few_shot = task.spec.few_shot if settings.few_shot is None else settings.few_shot
    kind = task.spec.type
    if kind == "multiple_choice":
        return _multiple_choice(task, items, client, settings, few_shot)
    if kind == "pairs":
        return _pairs(task, items, client)
    if kind == "perplexity":
        return _perplexity(task, items, client)
    if kind == "canary":
        return _canary(task, items, client, settings)
    return _generate(task, items, client, settings)


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
                 "sha256": task.sha256, "items": len(rows)},
        "suite": suite,
        "settings": settings_d,
        "metrics": metrics,
        "primary": task.spec.primary,
        "higher_is_better": {m: HIGHER_IS_BETTER[m] for m in task.spec.metrics},
        "timings": {"started": started, "wall_s": round(time.perf_counter() - t0, 3),
                    "requests": client.requests - requests0, "cached": client.cached - cached0},
        "gptnl_version": __version__,
    }
    return record, rows
