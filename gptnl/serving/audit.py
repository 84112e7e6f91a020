"""The audit log: one JSON line per request, refused ones included.

Each line goes to the kernel in a single `write` on a file opened with O_APPEND, so concurrent
requests never interleave and a gateway that is killed leaves no half line. `fsync: true` in the
gateway config also makes each line survive a machine crash, at the cost of a disk flush per request.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


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

    def write(self, record: dict) -> None:
        line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **record},
                          ensure_ascii=False, separators=(",", ":")) + "\n"
        os.write(self.fd, line.encode())
        if self.fsync:
            os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)
