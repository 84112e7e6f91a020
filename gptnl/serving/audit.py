"""The audit log: one JSON line per request, refused ones included.

Each line goes to the kernel in a single `write` on a file opened with O_APPEND, so concurrent
requests never interleave and a gateway that is killed leaves no half line. `fsync: true` in the
gateway config also makes each line survive a machine crash, at the cost of a disk flush per request.

Writing a line cannot fail on what a client sent: strings are escaped (a lone surrogate becomes the
six characters `\\ud800`), every string and list is capped, nesting is cut, and a record that still
cannot be written is replaced by a line that says so. Error messages are the gateway's own or a
sanitised, truncated upstream message: upstream validators copy offending `input` values into
their messages, and those values are prompt text.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path

FIELD_CHARS = 300  # any field but `content`
CONTENT_CHARS = 100_000  # each string in `content` (keys with log_content only)
MAX_ITEMS = 1000
MAX_DEPTH = 8
MESSAGE_CHARS = 200

# where upstream validators start quoting what the client sent
_INPUT_QUOTE = re.compile(r"(input_value=|input_type=|'input':|\"input\":|input:|\{'type'|\[\{|\{\"|"
                          r"Input should|got |value is |: ')", re.IGNORECASE)


def clean(value, limit: int = FIELD_CHARS, depth: int = 0):
    """A JSON-safe copy of `value`: valid UTF-8 strings no longer than `limit`, capped lists, cut nesting."""
    if isinstance(value, str):
        if len(value) > limit:
            value = value[:limit] + "…"
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # NaN and infinities are not JSON
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if depth >= MAX_DEPTH:
        return "…"
    if isinstance(value, dict):
        return {clean(str(k), 100): clean(v, limit, depth + 1) for k, v in list(value.items())[:MAX_ITEMS]}
    if isinstance(value, (list, tuple)):
        return [clean(v, limit, depth + 1) for v in value[:MAX_ITEMS]]
    return clean(repr(value), limit)


def sanitise_message(message) -> str:
    """An upstream error message cut before anything it quotes from the request, and truncated."""
    text = message if isinstance(message, str) else ""
    cut = _INPUT_QUOTE.search(text)
    if cut:
        text = text[: cut.start()].rstrip(" ,:;([{") + " …"
    return clean(text, MESSAGE_CHARS)


class AuditLog:
    def __init__(self, path: Path, fsync: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.fsync = fsync
        self._repair_tail()

    def _repair_tail(self) -> None:
        """A line cut by a machine crash (never by a killed process) is closed so the next one stands alone."""
        size = os.fstat(self.fd).st_size
        if size:
            with open(self.path, "rb") as fh:
                fh.seek(size - 1)
                if fh.read(1) != b"\n":
                    os.write(self.fd, b"\n")

    @staticmethod
    def line(record: dict) -> bytes:
        """The record as one line; never raises."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        try:
            safe = {k: clean(v, CONTENT_CHARS if k == "content" else FIELD_CHARS) for k, v in record.items()}
            text = json.dumps({"time": stamp, **safe}, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except Exception as exc:  # noqa: BLE001 (the line is written whatever the record held)
            text = json.dumps({"time": stamp, "request_id": clean(str(record.get("request_id"))),
                               "status": record.get("status") if isinstance(record.get("status"), int) else None,
                               "audit_error": type(exc).__name__})
        return text.encode("utf-8") + b"\n"

    def write(self, record: dict) -> None:
        os.write(self.fd, self.line(record))
        if self.fsync:
            os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)
