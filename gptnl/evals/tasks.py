"""Tasks as data: `evals/tasks/<name>/task.yaml` + its items, found by a registry, read with
file:line errors, and mapped from public formats (lm-eval JSON/JSONL, EuroEval, MBBQ) onto ours."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gptnl.assets import asset
from gptnl.errors import GptnlError
from gptnl.evals.spec import SuiteSpec, TaskSpec, load_suite, load_task_spec

TASKS_DIR = asset("evals", "tasks")
SUITES_DIR = asset("evals", "suites")


class EvalError(GptnlError):
    """A task, item or endpoint that cannot be evaluated as asked."""


@dataclass(frozen=True)
class Task:
    spec: TaskSpec
    dir: Path
    items: list[dict[str, Any]]
    sha256: str  # of task.yaml and every file it reads: a result names exactly what it measured

    @property
    def name(self) -> str:
        return self.spec.name


def discover(tasks_dir: Path = TASKS_DIR) -> dict[str, Path]:
    """{task name: task.yaml} for every task folder."""
    return {p.parent.name: p for p in sorted(Path(tasks_dir).glob("*/task.yaml"))}


def _mbbq(row: dict, where: str) -> dict:
    """MBBQ/BBQ rows as our stereotype items, by BBQ's group-matching rules (gptnl/evals/mbbq.py)."""
    from gptnl.evals.mbbq import MbbqError, item

    try:
        return item(row, where)
    except MbbqError as exc:
        raise EvalError(str(exc)) from None


def _lm_eval(row: dict, where: str) -> dict:
    """lm-eval-style rows: `query`/`question`/`context` + `choices` + `gold`/`label`/`answer`."""
    text = next((row[k] for k in ("query", "question", "context", "text") if k in row), None)
    gold = next((row[k] for k in ("gold", "label", "answer") if k in row), None)
    choices = row.get("choices")
    if isinstance(choices, dict) and "text" in choices:  # the HF `{"text": [...], "label": [...]}` shape
        labels = choices.get("label", [])
        choices = choices["text"]
        if isinstance(gold, str) and gold in labels:
            gold = labels.index(gold)
    if text is None or gold is None or not isinstance(choices, list):
        raise EvalError(f"{where}: an lm-eval row needs query/question, choices and gold/label/answer")
    return {"id": str(row.get("id", where)), "question": text, "choices": choices, "answer": gold}


# EuroEval folds the options of a multiple-choice item into `text` under a header in the dataset's
# language, one "a. option" line each, and gives the letter as `label`
_EUROEVAL_OPTIONS = re.compile(r"\n(?:Antwoordopties|Choices|Answer options|Svarmuligheder|Svaralternativ|"
                               r"Antwortmöglichkeiten|Options de réponse|Opciones|Opzioni|Svarmöguleikar):\s*\n",
                               re.IGNORECASE)
_EUROEVAL_OPTION = re.compile(r"^([a-z])\.\s*(.*)$")


def _euroeval(row: dict, where: str, spec: TaskSpec) -> dict:
    """EuroEval's JSONL rows: multiple choice (`text` with its options, `label` a letter), text
    classification (`text`, `label` one of the task's literal `choices`), reading comprehension
    (`context`, `question`, `answers.text`) and summarisation (`text`, `target_text`)."""
    rid = str(row.get("id", where))
    if isinstance(row.get("answers"), dict) and "question" in row:
        targets = row["answers"].get("text")
        if not isinstance(targets, list) or not targets:
            raise EvalError(f"{where}: a EuroEval reading-comprehension row needs answers.text")
        return {"id": rid, "context": row.get("context", ""), "question": row["question"], "answer": targets}
    if not isinstance(row.get("text"), str):
        raise EvalError(f"{where}: a EuroEval row needs `text` (or `question` + `answers`)")
    if "target_text" in row:
        return {"id": rid, "text": row["text"], "answer": row["target_text"]}
    label = row.get("label")
    if not isinstance(label, str):
        raise EvalError(f"{where}: a EuroEval row needs a string `label` (or `target_text`)")
    parts = _EUROEVAL_OPTIONS.split(row["text"], maxsplit=1)
    if len(parts) == 2:
        options = [m.groups() for m in map(_EUROEVAL_OPTION.match, parts[1].strip().splitlines()) if m]
        letters = [letter for letter, _ in options]
        if label.lower() not in letters:
            raise EvalError(f"{where}: label {label!r} is not one of the options {letters}")
        return {"id": rid, "question": parts[0].strip(), "choices": [text for _, text in options],
                "answer": letters.index(label.lower())}
    if isinstance(spec.choices, list):
        names = [c.lower() for c in spec.choices]
        if label.lower() not in names:
            raise EvalError(f"{where}: label {label!r} is not one of the task's choices {spec.choices}")
        return {"id": rid, "text": row["text"], "answer": names.index(label.lower())}
    raise EvalError(f"{where}: a EuroEval classification row needs the task's labels as a `choices` list")


def _check(spec: TaskSpec, item: dict, where: str, expanded_fields: set[str]) -> None:
    if not isinstance(item.get("id"), str) or not item["id"]:
        raise EvalError(f"{where}: every item needs a string `id`")
    if spec.type in ("multiple_choice", "generate", "probe"):
        try:
            spec.prompt.format(**item, **{f: "" for f in expanded_fields})
        except (KeyError, IndexError) as exc:
            raise EvalError(f"{where}: prompt needs field {exc} that the item lacks") from None
    if spec.type == "multiple_choice":
        choices = item.get(spec.choices) if isinstance(spec.choices, str) else spec.choices
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
            raise EvalError(f"{where}: `{spec.choices}` must be a list of at least two strings")
        answer = item.get(spec.answer)
        indices = answer if isinstance(answer, list) and answer else [answer]  # a list: several true (mc2)
        if spec.expand is None and not all(isinstance(a, int) and not isinstance(a, bool) and 0 <= a < len(choices)
                                           for a in indices):
            raise EvalError(f"{where}: `{spec.answer}` must be an index into the {len(choices)} choices "
                            "(or a list of the true ones)")
    if spec.type == "pairs":
        for field in ("good", "bad"):
            if not isinstance(item.get(field), str) or not item[field].strip():
                raise EvalError(f"{where}: a pair needs non-empty `good` and `bad` sentences")
    if spec.type == "canary":
        if not isinstance(item.get("prefix"), str) or not item["prefix"].strip():
            raise EvalError(f"{where}: a canary needs a non-empty `prefix`")
        if not isinstance(item.get("secret"), str) or not item["secret"].isdigit():
            raise EvalError(f"{where}: a canary's `secret` must be a string of digits")
        if not isinstance(item.get("planted"), bool):
            raise EvalError(f"{where}: a canary needs `planted`: true (in the training data) or false (a control)")
    if spec.scorer in ("exact", "f1", "squad", "chrf", "simplification") and not isinstance(item.get(spec.answer),
                                                                                          str | list):
        raise EvalError(f"{where}: scorer {spec.scorer} needs the target text in `{spec.answer}`")
    if spec.scorer == "simplification" and not isinstance(item.get("source"), str):
        raise EvalError(f"{where}: scorer simplification needs the sentence to rewrite in `source`")


def _read_items(spec: TaskSpec, path: Path) -> list[dict]:
    if not path.is_file():
        raise EvalError(f"{spec.name}: items file {path} not found")
    if spec.type == "perplexity":
        text = path.read_text(encoding="utf-8")
        docs = [d.strip() for d in text.split("\n\n") if d.strip()]
        return [{"id": f"{path.name}:{i}", "text": d} for i, d in enumerate(docs)]
    items, seen = [], set()
    expanded = {spec.expand.placeholder} if spec.expand else set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise EvalError(f"{where}: an item must be a JSON object")
        if spec.format == "euroeval":
            row = _euroeval(row, where, spec)
        else:
            row = {"gptnl": lambda r, w: r, "lm-eval": _lm_eval, "mbbq": _mbbq}[spec.format](row, where)
        _check(spec, row, where, expanded)
        if row["id"] in seen:
            raise EvalError(f"{where}: duplicate id {row['id']!r}")
        seen.add(row["id"])
        items.append(row)
    if not items:
        raise EvalError(f"{path}: no items")
    return items


def _expand(spec: TaskSpec, items: list[dict], task_dir: Path, per_group: int) -> list[dict]:
    names_path = task_dir / spec.expand.names
    try:
        groups = json.loads(names_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise EvalError(f"{names_path}: cannot read the names ({exc})") from None
    slot = "{" + spec.expand.placeholder + "}"
    out = []
    for item in items:
        for group, names in groups.items():
            for name in names[:per_group]:
                filled = {k: v.replace(slot, name) if isinstance(v, str) else v for k, v in item.items()}
                out.append({**filled, "id": f"{item['id']}/{group}/{name}", spec.expand.placeholder: name,
                            "group": group, "cluster": item["id"]})
    return out


def _load_public(spec: TaskSpec, yaml_path: Path) -> Task:
    """A public set from its publisher's files in a local folder (gptnl/evals/public.py)."""
    from gptnl.evals.public import read_split
    from gptnl.public_data import PublicDataError

    try:
        items, files = read_split(spec)
    except PublicDataError as exc:
        raise EvalError(str(exc)) from None
    for item in items:
        _check(spec, item, item["id"], set())
    digest = hashlib.sha256(yaml_path.read_bytes())
    for path in files:
        digest.update(path.read_bytes())
    return Task(spec, yaml_path.parent, items, digest.hexdigest())


def load_task(name_or_dir: str | Path, tasks_dir: Path = TASKS_DIR, *, names_per_group: int = 2) -> Task:
    path = Path(name_or_dir)
    yaml_path = path / "task.yaml" if path.is_dir() else Path(tasks_dir) / str(name_or_dir) / "task.yaml"
    if not yaml_path.is_file():
        known = ", ".join(discover(tasks_dir)) or "none"
        raise EvalError(f"task {name_or_dir}: no {yaml_path} (tasks found: {known})")
    spec = load_task_spec(yaml_path)
    if spec.public is not None:
        return _load_public(spec, yaml_path)
    items_path = (yaml_path.parent / spec.items).resolve()
    items = _read_items(spec, items_path)
    digest = hashlib.sha256(yaml_path.read_bytes() + items_path.read_bytes())
    if spec.expand:
        items = _expand(spec, items, yaml_path.parent, names_per_group)
        digest.update((yaml_path.parent / spec.expand.names).read_bytes())
    return Task(spec, yaml_path.parent, items, digest.hexdigest())


def load_suite_tasks(suite_path: Path) -> tuple[SuiteSpec, Path, str]:
    """The suite, its tasks dir, and a hash of the suite file."""
    suite = load_suite(suite_path)
    tasks_dir = (Path(suite_path).parent / suite.tasks_dir).resolve()
    missing = [t for t in suite.tasks if not (tasks_dir / t / "task.yaml").is_file()]
    if missing:
        raise EvalError(f"{suite_path}: no task {', '.join(missing)} under {tasks_dir}")
    return suite, tasks_dir, hashlib.sha256(Path(suite_path).read_bytes()).hexdigest()
