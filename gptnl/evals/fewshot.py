"""Few-shot examples: solved items put before each item's prompt, the same for every model.

From a named split (EuroEval's way): n examples drawn once from that split with the task's seed,
the same n before every item. Without a split: n other items of the task itself (another cluster),
drawn per item, so an item is never its own example."""

from __future__ import annotations

import random
from pathlib import Path

from gptnl.evals.tasks import EvalError, Task, _read_items


def target_text(task: Task, item: dict) -> str:
    """What follows the prompt in a solved example: the right choice, or the (first) target text."""
    spec = task.spec
    answer = item.get(spec.answer)
    if spec.type == "multiple_choice":
        choices = item[spec.choices] if isinstance(spec.choices, str) else list(spec.choices)
        index = answer[0] if isinstance(answer, list) else answer
        return choices[index]
    if isinstance(answer, list):
        return answer[0] if answer else ""
    return str(answer)


_POOLS: dict[tuple[str, str, str], list[dict]] = {}


def _split_items(task: Task, split: str) -> list[dict]:
    key = (str(task.dir), task.sha256, split)
    if key not in _POOLS:
        _POOLS[key] = _read_split(task, split)
    return _POOLS[key]


def _read_split(task: Task, split: str) -> list[dict]:
    spec = task.spec
    if spec.public is not None and split in spec.public.files:
        from gptnl.evals.public import read_split

        items, _ = read_split(spec, split)
        return items
    if split not in spec.splits:
        raise EvalError(f"{task.name}: few_shot.split {split!r} names no file (splits: {sorted(spec.splits)})")
    return _read_items(spec, (Path(task.dir) / spec.splits[split]).resolve())


def examples(task: Task, item: dict, n: int, seed: int = 0) -> list[dict]:
    """The n solved examples to show before `item` (`seed`: the settings' seed, for draws from the
    task's own items; a split is drawn with the task's few_shot.seed)."""
    if n == 0:
        return []
    fs = task.spec.few_shot
    if fs.split is not None:
        pool = _split_items(task, fs.split)
        if len(pool) < n:
            raise EvalError(f"{task.name}: few_shot asks for {n} examples, split {fs.split!r} has {len(pool)}")
        return random.Random(f"{fs.seed}:{task.name}:{fs.split}").sample(pool, n)
    others = [i for i in task.items if i.get("cluster", i["id"]) != item.get("cluster", item["id"])]
    return random.Random(f"{seed}:{item['id']}").sample(others, min(n, len(others)))


def prefix(task: Task, item: dict, n: int, seed: int = 0) -> str:
    """The examples as text, each prompt + delimiter + its target and a blank line."""
    d = task.spec.target_delimiter
    return "".join(task.spec.prompt.format(**ex) + d + target_text(task, ex) + "\n\n"
                   for ex in examples(task, item, n, seed))
