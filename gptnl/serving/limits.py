"""Per-key limits as leases: requests per minute, tokens per minute, requests in flight, and token
budgets per UTC day and month.

    limiter = Limiter(store=open_store(cfg))          # gptnl.serving.store: the config's shared store, or
                                                      # memory with today's/this month's budgets rebuilt
                                                      # from the audit log; Limiter(): memory, empty
    ...                                               # at shutdown: await limiter.store.aclose()
    async with limiter.hold(key, tokens) as lease:    # key: KeyRecord; tokens: prompt + max_tokens * n
        ...                                           # raises Refused before the body runs
        lease.settle(used_tokens)                     # int: replaces the reservation; None: it stands
        response.headers.update(lease.headers)        # x-ratelimit-*, and the soft-budget warning

`Refused` has `.retry_after` (whole seconds), `.code` ("rate_limit_exceeded" for rpm, tpm and
concurrency; "budget_exceeded" for a day or month budget; "invalid_api_key" for a key revoked in the
shared store; "store_unavailable" when the shared store cannot be reached) and `.status` (429; 401
for a revoked key; 503 when the store is unreachable: limits fail closed).

A request reserves its prompt tokens plus its possible completion tokens against the tpm window
and the budgets when it starts; settling replaces the reservation by the tokens really used, so a
burst cannot overshoot a limit and unused reservations are given back. The concurrency slot is
given back when the `async with` block ends, however it ends (return, exception, cancellation).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import time
from collections.abc import AsyncIterator

from gptnl.serving.store import Denial, Grant, Limits, MemoryStore, StoreUnavailable, period_end

BUDGET_WARNING = "x-gptnl-budget-warning"


class Refused(Exception):
    """A request the key's limits do not admit now."""

    def __init__(self, message: str, retry_after: int, code: str = "rate_limit_exceeded", status: int = 429):
        super().__init__(message)
        self.retry_after, self.code, self.status = retry_after, code, status


def limits_of(key) -> Limits:
    return Limits(key.rpm, key.tpm, key.max_concurrent, getattr(key, "budget_day", None),
                  getattr(key, "budget_month", None))


def _reset(period: str) -> str:
    return period_end(period).strftime("%Y-%m-%dT%H:%M:%SZ")


def refusal(name: str, limits: Limits, tokens: int, d: Denial, now: float) -> Refused:
    """The user's message for a store's denial."""
    wait = max(1, math.ceil(d.wait))
    if d.reason == "revoked":
        return Refused(f"API key '{name}' has been revoked; ask the operator for a new key", 0,
                       "invalid_api_key", 401)
    if d.reason == "concurrency":
        return Refused(f"key '{name}' has {d.used} requests in flight, its limit is {limits.max_concurrent}; "
                       "wait for one to finish", 1)
    if d.reason == "rpm":
        return Refused(f"key '{name}' is limited to {limits.rpm} requests per minute", wait)
    if d.reason == "tpm_request":
        return Refused(f"this request needs up to {tokens} tokens (prompt + max_tokens), more than key '{name}' "
                       f"may use per minute ({limits.tpm}); lower max_tokens", 60)
    if d.reason == "tpm":
        return Refused(f"key '{name}' is limited to {limits.tpm} tokens per minute ({d.used} used in the last "
                       "minute)", wait)
    day = dt.datetime.fromtimestamp(now, dt.UTC).date().isoformat()
    period, budget, what = (day, limits.budget_day, "today (UTC)") if d.reason == "day" \
        else (day[:7], limits.budget_month, "this month (UTC)")
    return Refused(f"key '{name}' has used {d.used} of its {budget} tokens for {what}; this request may use up "
                   f"to {tokens}; the budget resets at {_reset(period)}", wait, "budget_exceeded")


def lease_headers(limits: Limits, grant: Grant, soft: float | None) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers, and a warning once a budget passes its soft threshold."""
    headers = {"x-ratelimit-limit-requests": str(limits.rpm),
               "x-ratelimit-remaining-requests": str(max(0, limits.rpm - grant.requests)),
               "x-ratelimit-limit-tokens": str(limits.tpm),
               "x-ratelimit-remaining-tokens": str(max(0, limits.tpm - grant.window_tokens))}
    if soft is None:
        return headers
    warnings = [f"{what} budget {spent / budget:.0%} used ({spent} of {budget} tokens), resets at {_reset(period)}"
                for what, budget, spent, period in (("day", limits.budget_day, grant.day_tokens, grant.day),
                                                    ("month", limits.budget_month, grant.month_tokens, grant.month))
                if budget is not None and spent >= soft * budget]
    if warnings:
        headers[BUDGET_WARNING] = "; ".join(warnings)
    return headers


class Lease:
    """One admitted request. `settle` may be called any number of times; the last value counts."""

    def __init__(self, limiter: Limiter, name: str, grant: Grant, headers: dict[str, str]):
        self._limiter, self._name, self.grant, self.headers = limiter, name, grant, headers
        self._used: int | None = None
        self._open = True

    def settle(self, used_tokens: int | None) -> None:
        """Replace the reservation by the tokens really used (None: the reservation stands)."""
        if used_tokens is None:
            return
        self._used = max(0, int(used_tokens))
        if not self._open:  # settled after the block ended: apply now
            self._limiter._apply_late(self._name, self.grant, self._used)


class Limiter:
    def __init__(self, store=None, clock=time.time):
        self.store = store if store is not None else MemoryStore()
        self.clock = clock
        self._late: set[asyncio.Task] = set()

    @contextlib.asynccontextmanager
    async def hold(self, key, tokens: int) -> AsyncIterator[Lease]:
        """Admit `key` (a KeyRecord) for a request reserving `tokens`, or raise Refused."""
        limits, now = limits_of(key), self.clock()
        try:
            result = await self.store.admit(key.name, limits, tokens, now)
        except StoreUnavailable as exc:
            raise Refused(f"{exc}; retry shortly", 5, "store_unavailable", 503) from None
        if isinstance(result, Denial):
            raise refusal(key.name, limits, tokens, result, now)
        lease = Lease(self, key.name, result, lease_headers(limits, result, getattr(key, "budget_soft", None)))
        keeper = asyncio.create_task(self._keep(key.name, result)) if self.store.lease_ttl_s else None
        try:
            yield lease
        finally:
            lease._open = False
            if keeper is not None:
                keeper.cancel()
            if isinstance(self.store, MemoryStore):  # no I/O: nothing a cancellation could interrupt
                if lease._used is not None:
                    self.store.settle_now(key.name, result, lease._used)
                self.store.release_now(key.name, result)
            else:
                await asyncio.shield(self._end(key.name, result, lease._used))

    async def _end(self, name: str, grant: Grant, used: int | None) -> None:
        # unanswered, the reservation stands (counted high, never low) and the lease expires by itself
        with contextlib.suppress(StoreUnavailable):
            await self.store.finish(name, grant, used)

    async def _keep(self, name: str, grant: Grant) -> None:
        """Refresh a shared-store lease while its request runs, so only a dead gateway's leases expire."""
        while True:
            await asyncio.sleep(self.store.lease_ttl_s / 3)
            with contextlib.suppress(Exception):  # a missed refresh is retried; the lease has slack
                await self.store.refresh(name, grant, self.clock())

    def _apply_late(self, name: str, grant: Grant, used: int) -> None:
        if isinstance(self.store, MemoryStore):
            self.store.settle_now(name, grant, used)
            return
        task = asyncio.get_running_loop().create_task(self.store.settle(name, grant, used))
        self._late.add(task)
        task.add_done_callback(self._late.discard)
