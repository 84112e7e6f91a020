"""Our log-likelihood tasks as lm-evaluation-harness tasks: one YAML per task plus its items, for
`lm_eval --include_path DIR --model local-completions ...`, so scores can be checked against the
harness everyone uses. Generation and probe tasks need our scorers and are not exported."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import yaml

from gptnl.evals.tasks import TASKS_DIR, EvalError, discover, load_task
from gptnl.fileio import atomic_write_text


def _jinja(prompt: str) -> str:
    """Python's `{field}` as Jinja's `{{field}}`."""
    return re.sub(r"\{(\w+)\}", r"{{\1}}", prompt)


def task_yaml(name: str, data: Path) -> dict | None:
    t = load_task(name)
    s = t.spec
    base = {"task": f"gptnl_{name.replace('-', '_')}", "dataset_path": "json", "dataset_name": None,
            "dataset_kwargs": {"data_files": {"test": str(data)}}, "test_split": "test",
            "output_type": "multiple_choice", "metadata": {"version": float(s.version), "gptnl_sha256": t.sha256}}
    if s.type == "pairs":
        return {**base, "doc_to_text": "", "doc_to_choice": "{{[good, bad]}}", "doc_to_target": 0,
                "target_delimiter": "", "metric_list": [{"metric": "acc", "aggregation": "mean",
                                                         "higher_is_better": True}]}
    if s.type == "multiple_choice" and s.expand is None and isinstance(s.choices, str):
        return {**base, "doc_to_text": _jinja(s.prompt), "doc_to_choice": s.choices, "doc_to_target": s.answer,
                "target_delimiter": s.target_delimiter,
                "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True}
                                for m in ("acc", "acc_norm")]}
    return None


def export(out: Path, names: list[str] | None = None) -> list[Path]:
    """Write OUT/<task>/<task>.yaml and OUT/<task>/items.jsonl; returns the YAML paths."""
    found = discover(TASKS_DIR)
    explicit = names is not None
    names = names or list(found)
    unknown = [n for n in names if n not in found]
    if unknown:
        raise EvalError(f"--task {', '.join(unknown)}: no such task (found: {', '.join(found)})")
    written = []
    for name in names:
        if "\npublic:" in found[name].read_text(encoding="utf-8"):  # lm-eval has its own task for a public set
            if explicit:
                raise EvalError(f"{name}: a public set; lm-eval reads it with its own task (docs/evals.md names it)")
            continue
        t = load_task(name)
        folder = Path(out).resolve() / name
        data = folder / "items.jsonl"
        doc = task_yaml(name, data)
        if doc is None:
            if explicit:
                raise EvalError(f"{name}: a {t.spec.type} task has no lm-eval equivalent (only log-likelihood tasks "
                                "export)")
            continue
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(t.dir / t.spec.items, data)
        path = folder / f"{name}.yaml"
        atomic_write_text(path, yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
        written.append(path)
    return written
