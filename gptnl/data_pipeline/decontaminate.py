"""Decontamination: a document that shares a word 13-gram with any item of an evaluation task
(`evals/tasks/<task>/items.jsonl`) is refused naming the task, so benchmark scores do not measure
memorisation. 13 words, lower-cased, as in GPT-3's and lm-eval's overlap checks. Canary tasks are
left out: their secrets are planted in the training data on purpose, to measure memorisation.

Public sets (a task.yaml with `public:`) are covered wherever their publisher's files are on this
machine (GPTNL_PUBLIC_DATA, or where `gptnl eval fetch` put them), every split but `train`, which
exists to be trained on. A public set that is not on this machine cannot be checked."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import yaml
from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter

from gptnl.data_pipeline.ledger import refuse
from gptnl.public_data import candidates, match, rows

_WORD = re.compile(r"\w+")


def ngram_keys(text: str, n: int) -> set[int]:
    words = _WORD.findall(text.lower())
    return {int.from_bytes(hashlib.blake2b(" ".join(words[i : i + n]).encode(), digest_size=8).digest(), "big")
            for i in range(len(words) - n + 1)}


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def task_index(tasks_dir: Path | None, n: int) -> dict[int, str]:
    """{n-gram key: task name} over every string of every item of every task."""
    index: dict[int, str] = {}
    if tasks_dir is None or not Path(tasks_dir).is_dir():
        return index
    for items in sorted(Path(tasks_dir).glob("*/items.jsonl")):
        task = items.parent.name
        spec = items.parent / "task.yaml"
        if spec.is_file() and (yaml.safe_load(spec.read_text(encoding="utf-8")) or {}).get("type") == "canary":
            continue
        for line in items.read_text(encoding="utf-8").splitlines():
            if line.strip():
                for text in _strings(json.loads(line)):
                    for key in ngram_keys(text, n):
                        index.setdefault(key, task)
    for task, files in public_files(Path(tasks_dir)).items():
        for path in files:
            for _, row in rows(path):
                for text in _strings(row):
                    for key in ngram_keys(text, n):
                        index.setdefault(key, task)
    return index


def public_files(tasks_dir: Path) -> dict[str, list[Path]]:
    """{public task: its files on this machine} for every split but train; sets not here are left out."""
    out: dict[str, list[Path]] = {}
    for spec_path in sorted(Path(tasks_dir).glob("*/task.yaml")):
        pub = (yaml.safe_load(spec_path.read_text(encoding="utf-8")) or {}).get("public")
        if not isinstance(pub, dict) or not isinstance(pub.get("files"), dict):
            continue
        task, found = spec_path.parent.name, []
        for split, layouts in pub["files"].items():
            if split != "train":
                found += next((hits for folder in candidates(task) if (hits := match(folder, layouts))), [])
        if found:
            out[task] = found
    return out


class Decontaminator(BaseFilter):
    name = "🧪 decontaminate"

    def __init__(self, tasks_dir: Path | None, n_grams: int = 13, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.n, self.tasks_dir = n_grams, str(tasks_dir) if tasks_dir else None
        self.index: dict[int, str] | None = None  # built in the worker, not pickled or logged with the step

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if self.index is None:
            self.index = task_index(Path(self.tasks_dir) if self.tasks_dir else None, self.n)
        if not self.index:
            return True
        for key in ngram_keys(doc.text, self.n):
            task = self.index.get(key)
            if task is not None:
                return refuse(doc, "contamination", f"shares a {self.n}-gram with evals task {task}")
        return True
