"""Where the counters behind a key's limits live: this process (the default) or a shared Valkey/Redis.

Both stores run one algorithm, so a key gets the same answer from either: a sliding 60-second window
of admitted requests (each with its token reservation, later settled to the tokens used), a set of
leases in flight, and a token counter per UTC day and per UTC month. One `admit` call checks every
limit and records the request in one step (a Lua script on Valkey/Redis, atomic on the server), so two
gateways sharing a store give a key its limit once, not twice.

Times are wall-clock seconds (`time.time`, or the clock handed in): gateways on several machines
share windows only through a common clock, so keep them on NTP; a skew of s seconds moves a window
edge by s seconds. A lease in the shared store expires `lease_ttl_s` after its last refresh, so the
slots of a gateway that was killed come back by themselves; the limiter refreshes live leases.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

WINDOW_S = 60.0


@dataclass(frozen=True)
class Limits:
    """What one key may do, as the store needs it."""

    rpm: int
    tpm: int
    max_concurrent: int
    budget_day: int | None = None
    budget_month: int | None = None


@dataclass
class Grant:
    """An admitted request: its lease and the counters including it (for response headers)."""

    lease: str
    tokens: int  # reserved now; after settling, the tokens used
    day: str  # the UTC day and month the tokens count against
    month: str
    requests: int = 0
    window_tokens: int = 0
    day_tokens: int = 0
    month_tokens: int = 0


@dataclass(frozen=True)
class Denial:
    """Why a request was not admitted: `reason` is one of revoked, concurrency, rpm, tpm_request, tpm,
    day, month; `wait` is seconds until it could pass; `used` the count that stands in its way."""

    reason: str
    wait: float
    used: int


def periods(now: float) -> tuple[str, str]:
    """The UTC day (YYYY-MM-DD) and month (YYYY-MM) of a wall-clock time."""
    d = dt.datetime.fromtimestamp(now, dt.UTC).date()
    return d.isoformat(), d.isoformat()[:7]


def period_end(period: str) -> dt.datetime:
    """When a budget period (YYYY-MM-DD or YYYY-MM) ends: the next UTC midnight or first of the month."""
    if len(period) == 10:
        return dt.datetime.combine(dt.date.fromisoformat(period), dt.time(), dt.UTC) + dt.timedelta(days=1)
    year, month = int(period[:4]), int(period[5:7])
    return dt.datetime(year + month // 12, month % 12 + 1, 1, tzinfo=dt.UTC)


def new_lease() -> str:
    return uuid.uuid4().hex


@dataclass
class _KeyState:
    window: deque = field(default_factory=deque)  # [time, tokens, lease], oldest first
    by_lease: dict = field(default_factory=dict)  # lease -> its window entry, to settle it
    in_flight: set = field(default_factory=set)
    used: int = 0  # tokens of the window's entries, kept as a running sum: admission stays O(1)
    day: tuple[str, int] = ("", 0)  # (period, tokens)
    month: tuple[str, int] = ("", 0)


class MemoryStore:
    """Counters in this process: the default for one gateway. Budgets survive a restart by `seed`
    (the gateway rebuilds them from its audit log at start-up, see `gptnl.serving.usage`)."""

    lease_ttl_s: float | None = None  # leases die with the process; nothing to refresh

    def __init__(self):
        self._keys: dict[str, _KeyState] = {}
        self._revoked: set[str] = set()

    def _state(self, name: str, now: float) -> _KeyState:
        s = self._keys.setdefault(name, _KeyState())
        while s.window and s.window[0][0] <= now - WINDOW_S:
            _, n, lease = s.window.popleft()
            s.by_lease.pop(lease, None)
            s.used -= n
        day, month = periods(now)
        if s.day[0] != day:
            s.day = (day, 0)
        if s.month[0] != month:
            s.month = (month, 0)
        return s

    def admit_now(self, name: str, limits: Limits, tokens: int, now: float) -> Grant | Denial:
        """`admit` without the event loop: nothing in it awaits."""
        if name in self._revoked:
            return Denial("revoked", 0, 0)
        s = self._state(name, now)
        denial = check(limits, tokens, now, len(s.in_flight), len(s.window), s.used,
                       lambda: [(t, n) for t, n, _ in s.window], s.day[1], s.month[1])
        if denial is not None:
            return denial
        grant = Grant(new_lease(), tokens, s.day[0], s.month[0])
        entry = [now, tokens, grant.lease]
        s.window.append(entry)
        s.by_lease[grant.lease] = entry
        s.in_flight.add(grant.lease)
        s.used += tokens
        s.day, s.month = (s.day[0], s.day[1] + tokens), (s.month[0], s.month[1] + tokens)
        grant.requests, grant.window_tokens = len(s.window), s.used
        grant.day_tokens, grant.month_tokens = s.day[1], s.month[1]
        return grant

    def settle_now(self, name: str, grant: Grant, used: int) -> None:
        s = self._keys[name]
        entry = s.by_lease.get(grant.lease)
        if entry is not None:
            s.used += used - entry[1]
            entry[1] = used
        delta, grant.tokens = used - grant.tokens, used
        if s.day[0] == grant.day:
            s.day = (s.day[0], max(0, s.day[1] + delta))
        if s.month[0] == grant.month:
            s.month = (s.month[0], max(0, s.month[1] + delta))

    def release_now(self, name: str, grant: Grant) -> None:
        self._keys[name].in_flight.discard(grant.lease)

    def seed(self, name: str, day: str, day_tokens: int, month: str, month_tokens: int) -> None:
        """Budget counters carried over from before a restart (added to what is counted already)."""
        s = self._keys.setdefault(name, _KeyState())
        if s.day[0] in ("", day):
            s.day = (day, s.day[1] + day_tokens)
        if s.month[0] in ("", month):
            s.month = (month, s.month[1] + month_tokens)

    async def admit(self, name: str, limits: Limits, tokens: int, now: float) -> Grant | Denial:
        return self.admit_now(name, limits, tokens, now)

    async def settle(self, name: str, grant: Grant, used: int) -> None:
        self.settle_now(name, grant, used)

    async def finish(self, name: str, grant: Grant, used: int | None) -> None:
        if used is not None:
            self.settle_now(name, grant, used)
        self.release_now(name, grant)

    async def release(self, name: str, grant: Grant) -> None:
        self.release_now(name, grant)

    async def refresh(self, name: str, grant: Grant, now: float) -> None:
        return None

    async def revoke(self, name: str) -> None:
        self._revoked.add(name)

    async def aclose(self) -> None:
        return None


def check(limits: Limits, tokens: int, now: float, in_flight: int, count: int, used: int,
          window: Callable[[], list[tuple[float, int]]], day_tokens: int, month_tokens: int) -> Denial | None:
    """The one admission rule, in order: concurrency, rpm, tpm, day budget, month budget. `count` and
    `used` are the window's requests and tokens; `window()` lists its (time, tokens), oldest first, and
    is asked for only to say how long a refused request must wait. (The Valkey/Redis store runs the
    same rule in Lua.)"""
    if in_flight >= limits.max_concurrent:
        return Denial("concurrency", 1, in_flight)
    if tokens > limits.tpm and count < limits.rpm:
        return Denial("tpm_request", WINDOW_S, used)
    tpm_wait = 0.0
    if used + tokens > limits.tpm and tokens <= limits.tpm:
        freed, tpm_wait = 0, WINDOW_S
        for t0, n in window():
            freed += n
            if used - freed + tokens <= limits.tpm:
                tpm_wait = t0 + WINDOW_S - now
                break
    if count >= limits.rpm:  # its Retry-After also waits for the tokens, so the retry passes both
        return Denial("rpm", max(window()[count - limits.rpm][0] + WINDOW_S - now, tpm_wait), count)
    if used + tokens > limits.tpm:
        return Denial("tpm", tpm_wait, used)
    for reason, budget, spent, period in (("day", limits.budget_day, day_tokens, periods(now)[0]),
                                          ("month", limits.budget_month, month_tokens, periods(now)[1])):
        if budget is not None and spent + tokens > budget:
            return Denial(reason, period_end(period).timestamp() - now, spent)
    return None


def key_prefix(prefix: str, name: str) -> str:
    """Redis key prefix of one API key: quoted (no ':' from a name can collide) and hash-tagged, so a
    Redis Cluster keeps all of one key's counters in one slot, as a Lua script needs."""
    return f"{prefix}:{{{quote(name, safe='')}}}"


class StoreUnavailable(Exception):
    """The shared store did not answer; the limiter refuses (limits fail closed)."""


# KEYS: revoked, window (zset lease -> time), tokens (hash lease -> tokens), in flight (zset lease -> expiry),
# day, month, used (the window's tokens as a running sum, so admission walks the window only to refuse).
# ARGV: now, cutoff, window_s, rpm, tpm, max_concurrent, tokens, budget_day, budget_month (-1: none), lease,
# lease expiry, day end, month end (epoch seconds).  Same rule as `check`.
_ADMIT = """
local now, cutoff, win = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local rpm, tpm, maxc, tokens = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local bday, bmonth, lease = tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10]
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, 'revoked', '0', 0} end
for _, old in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff)) do
  redis.call('DECRBY', KEYS[7], redis.call('HGET', KEYS[3], old) or '0')
  redis.call('HDEL', KEYS[3], old)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', cutoff)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ARGV[1])
local inflight = redis.call('ZCARD', KEYS[4])
if inflight >= maxc then return {0, 'concurrency', '1', inflight} end
local n = redis.call('ZCARD', KEYS[2])
local used = tonumber(redis.call('GET', KEYS[7]) or '0')
if tokens > tpm and n < rpm then return {0, 'tpm_request', tostring(win), used} end
local twait = 0
if used + tokens > tpm and tokens <= tpm then
  local entries = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
  local freed = 0
  twait = win
  for i = 1, n do
    freed = freed + tonumber(redis.call('HGET', KEYS[3], entries[2 * i - 1]) or '0')
    if used - freed + tokens <= tpm then twait = tonumber(entries[2 * i]) + win - now; break end
  end
end
if n >= rpm then
  local oldest = redis.call('ZRANGE', KEYS[2], n - rpm, n - rpm, 'WITHSCORES')
  return {0, 'rpm', tostring(math.max(tonumber(oldest[2]) + win - now, twait)), n}
end
if used + tokens > tpm then return {0, 'tpm', tostring(twait), used} end
local day = tonumber(redis.call('GET', KEYS[5]) or '0')
local month = tonumber(redis.call('GET', KEYS[6]) or '0')
if bday >= 0 and day + tokens > bday then return {0, 'day', tostring(tonumber(ARGV[12]) - now), day} end
if bmonth >= 0 and month + tokens > bmonth then return {0, 'month', tostring(tonumber(ARGV[13]) - now), month} end
redis.call('ZADD', KEYS[2], ARGV[1], lease)
redis.call('HSET', KEYS[3], lease, tokens)
redis.call('EXPIRE', KEYS[2], math.ceil(win) + 5)
redis.call('EXPIRE', KEYS[3], math.ceil(win) + 5)
redis.call('INCRBY', KEYS[7], tokens)
redis.call('EXPIRE', KEYS[7], math.ceil(win) + 5)
redis.call('ZADD', KEYS[4], ARGV[11], lease)
redis.call('EXPIREAT', KEYS[4], math.ceil(tonumber(ARGV[11])) + 5)
day = redis.call('INCRBY', KEYS[5], tokens)
redis.call('EXPIREAT', KEYS[5], math.ceil(tonumber(ARGV[12])) + 86400)
month = redis.call('INCRBY', KEYS[6], tokens)
redis.call('EXPIREAT', KEYS[6], math.ceil(tonumber(ARGV[13])) + 86400)
return {1, n + 1, used + tokens, day, month}
"""

# KEYS: tokens, day, month, used, in flight.  ARGV: lease, used, used - reserved, release (1/0), settle (1/0).
_SETTLE = """
if ARGV[4] == '1' then redis.call('ZREM', KEYS[5], ARGV[1]) end
if ARGV[5] == '0' then return 1 end
local was = redis.call('HGET', KEYS[1], ARGV[1])
if was then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('INCRBY', KEYS[4], tonumber(ARGV[2]) - tonumber(was))
end
for i = 2, 3 do
  if redis.call('EXISTS', KEYS[i]) == 1 and redis.call('INCRBY', KEYS[i], ARGV[3]) < 0 then
    redis.call('SET', KEYS[i], 0, 'KEEPTTL')
  end
end
return 1
"""

# KEYS: in flight.  ARGV: lease, new expiry.
_REFRESH = """
if redis.call('ZADD', KEYS[1], 'XX', 'CH', ARGV[2], ARGV[1]) == 1 then
  redis.call('EXPIREAT', KEYS[1], math.ceil(tonumber(ARGV[2])) + 5)
end
return 1
"""


class RedisStore:
    """Counters in a Valkey or Redis server that several gateways share (`store: {url: ...}`)."""

    def __init__(self, url: str, prefix: str = "gptnl", lease_ttl_s: float = 30.0, timeout_s: float = 2.0):
        import redis.asyncio

        self.url, self.prefix, self.lease_ttl_s = url, prefix, lease_ttl_s
        self._redis = redis.asyncio.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._admit = self._redis.register_script(_ADMIT)
        self._settle = self._redis.register_script(_SETTLE)
        self._refresh = self._redis.register_script(_REFRESH)

    def _k(self, name: str, part: str) -> str:
        return f"{key_prefix(self.prefix, name)}:{part}"

    async def _call(self, script, keys: list[str], args: list):
        import redis

        try:
            return await script(keys=keys, args=args)
        except redis.RedisError as exc:
            raise StoreUnavailable(f"the shared limits store {self.url} did not answer ({exc})") from None

    async def admit(self, name: str, limits: Limits, tokens: int, now: float) -> Grant | Denial:
        day, month = periods(now)
        lease = new_lease()
        keys = [self._k(name, p) for p in ("revoked", "window", "tokens", "inflight")] + \
            [self._k(name, f"day:{day}"), self._k(name, f"month:{month}"), self._k(name, "used")]
        args = [repr(now), repr(now - WINDOW_S), WINDOW_S, limits.rpm, limits.tpm, limits.max_concurrent, tokens,
                -1 if limits.budget_day is None else limits.budget_day,
                -1 if limits.budget_month is None else limits.budget_month,
                lease, repr(now + self.lease_ttl_s), period_end(day).timestamp(), period_end(month).timestamp()]
        r = await self._call(self._admit, keys, args)
        if r[0] == 0:
            return Denial(r[1].decode(), float(r[2]), int(r[3]))
        return Grant(lease, tokens, day, month, int(r[1]), int(r[2]), int(r[3]), int(r[4]))

    async def finish(self, name: str, grant: Grant, used: int | None, release: bool = True) -> None:
        """Settle (unless `used` is None) and give the slot back, in one round trip."""
        delta = 0 if used is None else used - grant.tokens
        if used is not None:
            grant.tokens = used
        await self._call(self._settle, [self._k(name, "tokens"), self._k(name, f"day:{grant.day}"),
                                        self._k(name, f"month:{grant.month}"), self._k(name, "used"),
                                        self._k(name, "inflight")],
                         [grant.lease, used or 0, delta, int(release), int(used is not None)])

    async def settle(self, name: str, grant: Grant, used: int) -> None:
        await self.finish(name, grant, used, release=False)

    async def release(self, name: str, grant: Grant) -> None:
        await self.finish(name, grant, None)

    async def refresh(self, name: str, grant: Grant, now: float) -> None:
        await self._call(self._refresh, [self._k(name, "inflight")], [grant.lease, repr(now + self.lease_ttl_s)])

    async def revoke(self, name: str) -> None:
        await self._redis.set(self._k(name, "revoked"), 1)

    async def aclose(self) -> None:
        await self._redis.aclose()


def revoke_shared(url: str, prefix: str, name: str, timeout_s: float = 5.0) -> None:
    """Mark a key revoked in the shared store (`gptnl keys revoke`): every gateway on it refuses the key
    from its next request on, whatever copy of the key file it has."""
    import redis

    from gptnl.errors import GptnlError

    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        client.set(f"{key_prefix(prefix, name)}:revoked", 1)
    except redis.RedisError as exc:
        raise GptnlError(f"store {url}: could not record the revocation ({exc}); the key file says revoked, "
                         "but gateways with another copy of it still accept the key") from None
    finally:
        client.close()


def open_store(cfg):
    """The store a gateway config names: the shared one, or this process's, with the budgets spent so far
    this month rebuilt from the audit log."""
    if cfg.store is not None:
        s = cfg.store
        return RedisStore(s.url, s.prefix, s.lease_ttl_s, s.timeout_s)
    import time

    from gptnl.serving.usage import spent_this_period

    store = MemoryStore()
    for name, (day, day_tokens, month, month_tokens) in spent_this_period(cfg.audit, time.time()).items():
        store.seed(name, day, day_tokens, month, month_tokens)
    return store
