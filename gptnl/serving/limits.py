"""Per-key limits: requests per minute, tokens per minute, requests in flight.

Sliding 60-second windows. A request reserves its prompt tokens plus `max_tokens` against the
token limit when it starts; the reservation is replaced by the tokens actually used when it
ends, so a burst cannot overshoot the limit and unused reservations are given back.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

WINDOW_S = 60.0


@dataclass
class _Usage:
    requests: deque = field(default_factory=deque)  # start times
    tokens: deque = field(default_factory=deque)  # [time, tokens] pairs (lists, so a reservation can be settled)
    in_flight: int = 0


class Refused(Exception):
    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class Limiter:
    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._usage: dict[str, _Usage] = {}

    def _prune(self, u: _Usage, now: float) -> None:
        while u.requests and u.requests[0] <= now - WINDOW_S:
            u.requests.popleft()
        while u.tokens and u.tokens[0][0] <= now - WINDOW_S:
            u.tokens.popleft()

    def acquire(self, key: str, rpm: int, tpm: int, max_concurrent: int, tokens: int) -> list:
        """Admit a request or raise Refused; returns the token reservation to settle later."""
        now = self.clock()
        u = self._usage.setdefault(key, _Usage())
        self._prune(u, now)
        if u.in_flight >= max_concurrent:
            raise Refused(f"key '{key}' has {u.in_flight} requests in flight, its limit is {max_concurrent}; "
                          "wait for one to finish", 1)
        if len(u.requests) >= rpm:
            wait = u.requests[0] + WINDOW_S - now
            raise Refused(f"key '{key}' is limited to {rpm} requests per minute", max(1, math.ceil(wait)))
        used = sum(t for _, t in u.tokens)
        if tokens > tpm:
            raise Refused(f"this request needs up to {tokens} tokens (prompt + max_tokens), more than key '{key}' "
                          f"may use per minute ({tpm}); lower max_tokens", 60)
        if used + tokens > tpm:
            freed, wait = 0, WINDOW_S
            for t0, t in u.tokens:
                freed += t
                if used - freed + tokens <= tpm:
                    wait = t0 + WINDOW_S - now
                    break
            raise Refused(f"key '{key}' is limited to {tpm} tokens per minute ({used} used in the last minute)",
                          max(1, math.ceil(wait)))
        u.requests.append(now)
        reservation = [now, tokens]
        u.tokens.append(reservation)
        u.in_flight += 1
        return reservation

    def release(self, key: str, reservation: list, used_tokens: int | None) -> None:
        """The request ended: free its slot and settle its tokens (the reservation stands if unknown)."""
        u = self._usage[key]
        u.in_flight -= 1
        if used_tokens is not None:
            reservation[1] = used_tokens
