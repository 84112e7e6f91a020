"""Chat-format instruction data: read, validate, and pass through the corpus pipeline's gates.

A conversation is one JSON object per line: `id`, `messages` (system?, then user/assistant turns
ending with the assistant), `licence` (SPDX id) and `source`; a tool-use conversation also has
`tools`, assistant `tool_calls` and `tool` results in OpenAI's format (`toolcalls`). Every line ends up in the ledger
exactly once: kept (train or validation) or refused with the step and the reason, like a corpus
document. The licence gate, the PII scrubber and decontamination are the corpus pipeline's own.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from gptnl import pii
from gptnl.config import SftData, load_licence_policy
from gptnl.data_pipeline.decontaminate import ngram_keys, task_index
from gptnl.data_pipeline.licences import LicenceGate
from gptnl.errors import GptnlError
from gptnl.finetune import toolcalls

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Conversation:
    id: str
    messages: list[dict]
    licence: str
    source: str
    location: str
    tools: list[dict] | None = None  # OpenAI's function tools, for conversations that call them


@dataclass
class Prepared:
    train: list[Conversation]
    val: list[Conversation]
    ledger: list[dict]
    pii: Counter = field(default_factory=Counter)

    def counts(self) -> dict:
        refused = Counter(f"{r['step']}: {r['reason'].split(' (')[0]}" for r in self.ledger
                          if r["outcome"] == "refused")
        return {"read": len(self.ledger), "train": len(self.train), "val": len(self.val),
                "refused": sum(refused.values()), "refused_by": dict(sorted(refused.items())),
                "pii": dict(sorted(self.pii.items()))}


def data_files(data: Path) -> list[Path]:
    """A JSONL(.gz) file, or every JSONL(.gz) file under a folder, in a fixed order."""
    data = Path(data)
    if data.is_file():
        return [data]
    if not data.is_dir():
        raise GptnlError(f"--data {data}: no such file or folder")
    files = sorted(p for p in data.rglob("*") if p.is_file() and p.name.endswith((".jsonl", ".jsonl.gz")))
    if not files:
        raise GptnlError(f"--data {data}: no .jsonl or .jsonl.gz files in it")
    return files


def _structure_problem(messages) -> str | None:
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            return f"messages[{i}] must be an object with 'role' and 'content'"
        if m.get("role") not in ROLES:
            return f"messages[{i}].role {m.get('role')!r} is not one of {', '.join(ROLES)}"
        if not isinstance(m.get("content"), str) or not m["content"].strip():
            return f"messages[{i}].content must be a non-empty string"
    roles = [m["role"] for m in messages]
    turns = roles[1:] if roles[0] == "system" else roles
    if "system" in turns:
        return "a system message may only come first"
    if not turns or any(r != ("user" if i % 2 == 0 else "assistant") for i, r in enumerate(turns)):
        return "turns must alternate user, assistant, ... starting with user"
    if turns[-1] != "assistant":
        return "the last message must be the assistant's"
    return None


def parse_line(raw: bytes, location: str) -> Conversation | str:
    """A Conversation, or why the line is not one."""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return f"invalid UTF-8 at byte {exc.start}"
    except json.JSONDecodeError as exc:
        return f"not valid JSON: {exc.msg}"
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    for key in ("id", "source"):
        if not isinstance(obj.get(key), str) or not obj[key].strip():
            return f"'{key}' must be a non-empty string"
    if not isinstance(obj.get("licence") or "", str):
        return f"'licence' must be a string (an SPDX id), got {type(obj['licence']).__name__}"
    if toolcalls.uses_tools(obj):
        try:
            tools, messages = toolcalls.parse(obj)
        except toolcalls.Malformed as exc:
            return str(exc)
        return Conversation(obj["id"], messages, obj.get("licence") or "", obj["source"], location, tools)
    problem = _structure_problem(obj.get("messages"))
    if problem:
        return problem
    messages = [{"role": m["role"], "content": m["content"]} for m in obj["messages"]]
    return Conversation(obj["id"], messages, obj.get("licence") or "", obj["source"], location)


def read(files: list[Path], base: Path) -> Iterator[tuple[str, Conversation | str]]:
    for path in files:
        rel = str(path.relative_to(base)) if path.is_relative_to(base) else str(path)
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                if raw.strip():
                    yield f"{rel}:{lineno}", parse_line(raw.rstrip(b"\r\n"), f"{rel}:{lineno}")


def in_validation(conv_id: str, fraction: float) -> bool:
    """The same split for the same id, whatever else is in the data."""
    h = int.from_bytes(hashlib.sha256(conv_id.encode()).digest()[:8], "big")
    return h / 2**64 < fraction


def prepare(data: Path, cfg: SftData, length: Callable[[Conversation], int], seq_len: int) -> Prepared:
    """Every line read, gated, scrubbed and measured; kept ones split into train and validation."""
    files = data_files(data)
    base = Path(data) if Path(data).is_dir() else Path(data).parent
    gate = LicenceGate(load_licence_policy(cfg.licences))
    index = task_index(cfg.decontamination.tasks, cfg.decontamination.n_grams)
    out = Prepared([], [], [])
    seen: dict[str, str] = {}

    def refuse(location: str, conv_id: str | None, step: str, reason: str) -> None:
        out.ledger.append({"id": conv_id, "location": location, "outcome": "refused", "step": step,
                           "reason": reason})

    for location, item in read(files, base):
        if isinstance(item, str):
            refuse(location, None, "malformed", f"{location}: {item}")
            continue
        if item.id in seen:
            refuse(location, item.id, "duplicate", f"duplicate id (first at {seen[item.id]})")
            continue
        seen[item.id] = location
        decision = gate.decide(item.licence)
        if not decision.admitted:
            refuse(location, item.id, "licence", decision.reason)
            continue
        contaminated = _contamination(item, index, cfg.decontamination.n_grams)
        if contaminated:
            refuse(location, item.id, "contamination", contaminated)
            continue
        messages, found = [], Counter()
        for m in item.messages:
            scrubbed, counts = toolcalls.scrub(m, lambda t: pii.redact(t, cfg.pii.mode, seed=cfg.pii.seed))
            messages.append(scrubbed)
            found.update(counts)
        conv = Conversation(item.id, messages, decision.licence, item.source, location, item.tools)
        n = length(conv)
        if n > seq_len:
            refuse(location, item.id, "length", f"{n} tokens, more than seq_len {seq_len} (never cut)")
            continue
        out.pii.update(found)
        split = "val" if in_validation(item.id, cfg.val_fraction) else "train"
        (out.val if split == "val" else out.train).append(conv)
        out.ledger.append({"id": item.id, "location": location, "outcome": "kept", "step": split, "reason": ""})
    if not out.train:
        raise GptnlError(f"--data {data}: no conversation left for training "
                         f"({len(out.ledger)} read; see the refusals in the ledger)")
    return out


def _contamination(conv: Conversation, index: dict[int, str], n: int) -> str | None:
    if not index:
        return None
    for m in conv.messages:
        for key in ngram_keys(m["content"], n):
            if key in index:
                return f"shares a {n}-gram with evals task {index[key]}"
    return None
