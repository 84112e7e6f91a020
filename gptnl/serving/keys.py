"""API keys: created once and shown once, stored only as a sha256 hash.

Keys are 256-bit random tokens, so a plain sha256 cannot be brute-forced and lookups stay one
dictionary access per request. The store is one JSON file, replaced atomically on every change
and reread by the gateway when it changes, so `gptnl keys revoke` takes effect without a restart.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import secrets
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from gptnl.errors import GptnlError
from gptnl.fileio import atomic_write_json

PREFIX = "gptnl-"


class KeyRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    hash: str
    shown: str = Field(description="the first characters, to recognise a key in lists")
    models: list[str]
    rpm: int = Field(gt=0)
    tpm: int = Field(gt=0)
    max_concurrent: int = Field(default=4, gt=0)
    budget_day: int | None = Field(default=None, gt=0, description="tokens per UTC day; null: no budget")
    budget_month: int | None = Field(default=None, gt=0, description="tokens per UTC month; null: no budget")
    budget_soft: float | None = Field(default=None, gt=0, le=1,
                                      description="share of a budget after which answers carry a warning header")
    expires: dt.date | None = None
    revoked: bool = False
    log_content: bool = Field(default=False, description="write prompts and completions into the audit log")
    output_guard: bool = Field(default=True, description="redact checksum-valid BSN/IBAN/card numbers from answers")
    metrics: bool = Field(default=False, description="may read /metrics")
    created: str

    def problem(self, today: dt.date | None = None) -> str | None:
        """Why the key may not be used now, or None."""
        if self.revoked:
            return f"API key '{self.name}' has been revoked"
        if self.expires is not None and (today or dt.date.today()) > self.expires:
            return f"API key '{self.name}' expired on {self.expires.isoformat()}"
        return None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._mtime: tuple[int, int] | None = None
        self._by_hash: dict[str, KeyRecord] = {}

    @contextmanager
    def _locked(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def records(self) -> list[KeyRecord]:
        if not self.path.is_file():
            return []
        try:
            data = json.loads(self.path.read_text())
            return [KeyRecord.model_validate(r) for r in data["keys"]]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise GptnlError(f"{self.path}: not a readable key store ({exc})") from None

    def _write(self, records: list[KeyRecord]) -> None:
        atomic_write_json(self.path, {"keys": [json.loads(r.model_dump_json()) for r in records]})
        os.chmod(self.path, 0o600)

    def create(self, name: str, models: list[str], rpm: int, tpm: int, *, max_concurrent: int = 4,
               expires: dt.date | None = None, log_content: bool = False, output_guard: bool = True,
               metrics: bool = False, budget_day: int | None = None, budget_month: int | None = None,
               budget_soft: float | None = None) -> str:
        """A new key; returns the key itself, which is never stored."""
        if not name.strip():
            raise GptnlError("--name must not be empty")
        if not models:
            raise GptnlError("--models: give at least one model the key may use")
        key = PREFIX + secrets.token_urlsafe(32)
        with self._locked():
            records = self.records()
            if any(r.name == name for r in records):
                raise GptnlError(f"a key named '{name}' exists; revoke it or choose another name")
            records.append(KeyRecord(name=name, hash=hash_key(key), shown=key[:10] + "…", models=models, rpm=rpm,
                                     tpm=tpm, max_concurrent=max_concurrent, expires=expires,
                                     log_content=log_content, output_guard=output_guard, metrics=metrics,
                                     budget_day=budget_day, budget_month=budget_month, budget_soft=budget_soft,
                                     created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds")))
            self._write(records)
        return key

    def revoke(self, name: str) -> None:
        with self._locked():
            records = self.records()
            found = [r for r in records if r.name == name]
            if not found:
                raise GptnlError(f"no key named '{name}' (see `gptnl keys list`)")
            for r in found:
                r.revoked = True
            self._write(records)

    def update(self, name: str, **changes) -> KeyRecord:
        """Change a key's scopes or limits (validated as on creation); running gateways pick it up from
        their next request on. A change to None removes that limit (budgets, expiry)."""
        allowed = set(KeyRecord.model_fields) - {"name", "hash", "shown", "created", "revoked"}
        unknown = set(changes) - allowed
        if unknown:
            raise GptnlError(f"cannot change {', '.join(sorted(unknown))} of a key")
        with self._locked():
            records = self.records()
            for i, r in enumerate(records):
                if r.name == name and not r.revoked:
                    try:
                        records[i] = KeyRecord.model_validate({**r.model_dump(), **changes})
                    except ValueError as exc:
                        raise GptnlError(f"key '{name}': {exc}") from None
                    self._write(records)
                    return records[i]
        raise GptnlError(f"no active key named '{name}' (see `gptnl keys list`)")

    def lookup(self, key: str) -> KeyRecord | None:
        """The record of a presented key (rereading the file when it changed)."""
        try:
            st = self.path.stat()
            mtime = (st.st_ino, st.st_mtime_ns)  # a replaced file is a new inode
        except FileNotFoundError:
            mtime = None
        if mtime != self._mtime:
            self._by_hash = {r.hash: r for r in self.records()}
            self._mtime = mtime
        return self._by_hash.get(hash_key(key))
