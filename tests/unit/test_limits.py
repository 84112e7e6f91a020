"""The limiter on its in-memory store, driven by an injected clock (no sleeps): windows, retry_after,
settling, budgets rolling over at UTC midnight and on the first of the month, and concurrency slots
given back however a request ends."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gptnl.config import GatewayConfig
from gptnl.serving.audit import AuditLog
from gptnl.serving.keys import KeyRecord
from gptnl.serving.limits import BUDGET_WARNING, Limiter, Refused
from gptnl.serving.store import MemoryStore, open_store

NOON = dt.datetime(2030, 3, 14, 12, 0, tzinfo=dt.UTC).timestamp()


class Clock:
    def __init__(self, t: float = NOON):
        self.t = t

    def __call__(self) -> float:
        return self.t


def key(**limits) -> KeyRecord:
    base = {"rpm": 100, "tpm": 100_000, "max_concurrent": 10}
    return KeyRecord(name="svc", hash="0" * 64, shown="gptnl-x…", models=["m"], created="2030-01-01",
                     **(base | limits))


def hold(limiter: Limiter, k: KeyRecord, tokens: int, used: int | None = None):
    """One whole request: admitted, settled to `used`, ended; returns its lease."""
    async def run():
        async with limiter.hold(k, tokens) as lease:
            lease.settle(used)
        return lease
    return asyncio.run(run())


def refused(limiter: Limiter, k: KeyRecord, tokens: int) -> Refused:
    with pytest.raises(Refused) as info:
        hold(limiter, k, tokens)
    return info.value


def test_rpm_window_slides_and_says_when_to_retry():
    clock = Clock()
    limiter, k = Limiter(clock=clock), key(rpm=3)
    for dt_s in (0, 10, 20):
        clock.t = NOON + dt_s
        hold(limiter, k, 1)
    clock.t = NOON + 30
    r = refused(limiter, k, 1)
    assert (r.code, r.status, r.retry_after) == ("rate_limit_exceeded", 429, 30)  # the first leaves at +60
    assert "3 requests per minute" in str(r)
    clock.t = NOON + 60  # the request of +0 has left the window
    hold(limiter, k, 1)
    assert refused(limiter, k, 1).retry_after == 10


def test_tpm_counts_reservations_until_settled():
    clock = Clock()
    limiter, k = Limiter(clock=clock), key(tpm=100)
    hold(limiter, k, 60)  # not settled: the reservation stands
    clock.t += 5
    r = refused(limiter, k, 50)
    assert r.retry_after == 55 and "60 used" in str(r)
    hold(limiter, k, 40, used=5)  # reserved 40, used 5
    lease = hold(limiter, k, 35)  # 60 + 5 + 35 = 100: exactly the limit
    assert lease.headers["x-ratelimit-remaining-tokens"] == "0"


def test_settle_none_keeps_the_reservation():
    limiter, k = Limiter(clock=Clock()), key(tpm=100)
    hold(limiter, k, 80, used=None)
    assert "80 used" in str(refused(limiter, k, 30))


def test_tpm_retry_after_waits_for_enough_tokens_to_leave():
    clock = Clock()
    limiter, k = Limiter(clock=clock), key(tpm=100)
    for dt_s, n in ((0, 30), (20, 30), (40, 30)):
        clock.t = NOON + dt_s
        hold(limiter, k, n)
    clock.t = NOON + 45
    assert refused(limiter, k, 40).retry_after == 15  # 10 left; the +0 request must go (+60)
    assert refused(limiter, k, 70).retry_after == 35  # needs the +0 and +20 requests gone (+80)


def test_one_request_over_tpm_is_told_to_lower_max_tokens():
    r = refused(Limiter(clock=Clock()), key(tpm=100), 101)
    assert "lower max_tokens" in str(r) and r.retry_after == 60


def test_concurrency_slot_released_on_exception():
    limiter, k = Limiter(clock=Clock()), key(max_concurrent=1)

    async def run():
        with pytest.raises(ZeroDivisionError):
            async with limiter.hold(k, 1):
                raise ZeroDivisionError
        async with limiter.hold(k, 1) as lease:
            with pytest.raises(Refused) as info:
                async with limiter.hold(k, 1):
                    pass
            assert "1 requests in flight" in str(info.value) and info.value.code == "rate_limit_exceeded"
        return lease
    asyncio.run(run())


def test_concurrency_slot_released_on_cancellation():
    limiter, k = Limiter(clock=Clock()), key(max_concurrent=1)

    async def run():
        inside = asyncio.Event()

        async def request():
            async with limiter.hold(k, 1):
                inside.set()
                await asyncio.Event().wait()  # a stream whose client went away

        task = asyncio.create_task(request())
        await inside.wait()
        with pytest.raises(Refused):
            async with limiter.hold(k, 1):
                pass
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with limiter.hold(k, 1):  # the slot came back
            pass
    asyncio.run(run())


def test_day_budget_refuses_with_reset_time_and_rolls_over_at_utc_midnight():
    clock = Clock(dt.datetime(2030, 3, 14, 23, 0, tzinfo=dt.UTC).timestamp())
    limiter, k = Limiter(clock=clock), key(budget_day=100)
    hold(limiter, k, 80, used=90)  # settled higher than reserved: the budget counts what was used
    r = refused(limiter, k, 20)
    assert r.code == "budget_exceeded" and r.status == 429
    assert r.retry_after == 3600 and "2030-03-15T00:00:00Z" in str(r) and "90 of its 100" in str(r)
    hold(limiter, k, 10)  # what is left still passes
    clock.t = dt.datetime(2030, 3, 15, 0, 0, tzinfo=dt.UTC).timestamp()
    hold(limiter, k, 100)


def test_month_budget_rolls_over_on_the_first_across_a_year():
    clock = Clock(dt.datetime(2030, 12, 30, 22, 0, tzinfo=dt.UTC).timestamp())
    limiter, k = Limiter(clock=clock), key(budget_month=500, budget_day=400)
    hold(limiter, k, 300)
    clock.t += 86400  # Dec 31: a new day, the same month
    hold(limiter, k, 200)
    r = refused(limiter, k, 1)
    assert r.code == "budget_exceeded" and "this month" in str(r) and "2031-01-01T00:00:00Z" in str(r)
    assert r.retry_after == 2 * 3600
    clock.t = dt.datetime(2031, 1, 1, 0, 0, 30, tzinfo=dt.UTC).timestamp()
    hold(limiter, k, 400)  # a new month (and day): the day budget is the limit again
    assert "today" in str(refused(limiter, k, 1))


def test_month_budget_names_the_first_of_next_month():
    clock = Clock(dt.datetime(2030, 2, 27, 12, 0, tzinfo=dt.UTC).timestamp())
    limiter, k = Limiter(clock=clock), key(budget_month=100)
    hold(limiter, k, 100)
    clock.t += 86400  # Feb 28, a new day, same month
    r = refused(limiter, k, 1)
    assert "this month" in str(r) and "2030-03-01T00:00:00Z" in str(r)
    assert r.retry_after == 12 * 3600


def test_settling_gives_unused_budget_back():
    limiter, k = Limiter(clock=Clock()), key(budget_day=100)
    hold(limiter, k, 100, used=10)
    hold(limiter, k, 90)


def test_soft_threshold_adds_a_warning_header_with_the_reset():
    limiter, k = Limiter(clock=Clock()), key(budget_day=1000, budget_soft=0.5)
    assert BUDGET_WARNING not in hold(limiter, k, 400).headers
    headers = hold(limiter, k, 100).headers
    assert "day budget 50% used (500 of 1000 tokens)" in headers[BUDGET_WARNING]
    assert "2030-03-15T00:00:00Z" in headers[BUDGET_WARNING]


def test_rate_limit_headers_count_down():
    limiter, k = Limiter(clock=Clock()), key(rpm=5, tpm=1000)
    h = hold(limiter, k, 100).headers
    assert (h["x-ratelimit-limit-requests"], h["x-ratelimit-remaining-requests"]) == ("5", "4")
    assert h["x-ratelimit-remaining-tokens"] == "900"


def test_settle_after_the_block_still_counts():
    limiter, k = Limiter(clock=Clock()), key(tpm=100)
    lease = hold(limiter, k, 90)
    lease.settle(10)
    hold(limiter, k, 90)


def test_keys_are_counted_apart():
    limiter = Limiter(clock=Clock())
    a, b = key(rpm=1), key(rpm=1).model_copy(update={"name": "other"})
    hold(limiter, a, 1)
    hold(limiter, b, 1)
    refused(limiter, a, 1)


def test_zero_argument_limiter_is_in_memory():
    limiter = Limiter()
    assert isinstance(limiter.store, MemoryStore)
    hold(limiter, key(tpm=100), 100)


def test_budgets_spent_before_a_restart_are_carried_over_from_the_audit_log(tmp_path):
    """A restarted gateway on the in-memory store counts what its audit log says was spent."""
    log = AuditLog(tmp_path / "audit.jsonl")
    for tokens in ((400, 300), (200, None)):
        log.write({"request_id": "r", "key": "svc", "model": "m", "endpoint": "chat", "status": 200,
                   "stream": False, "prompt_tokens": tokens[0], "completion_tokens": tokens[1], "latency_ms": 5.0})
    log.write({"request_id": "r", "key": None, "model": None, "endpoint": "chat", "status": 401, "stream": False,
               "prompt_tokens": None, "completion_tokens": None, "latency_ms": 0.1})
    log.close()
    cfg = GatewayConfig(models={"m": {"replicas": 0, "upstreams": ["http://127.0.0.1:1"]}},
                        audit=tmp_path / "audit.jsonl")
    limiter, k = Limiter(store=open_store(cfg)), key(budget_day=1000)  # the real clock: the lines are of now
    r = refused(limiter, k, 101)
    assert "900 of its 1000" in str(r)
    hold(limiter, k, 100)


@settings(max_examples=150, deadline=None)
@example(ops=[(0, 0, 0.0)] * 3 + [(1, 0, 0.0), (0, 141, 1.0), (0, 160, 0.0)])  # refused for rpm; tpm then too
@given(ops=st.lists(st.tuples(st.sampled_from([0, 0, 0.5, 1, 7, 30, 59.5, 60, 61, 3600, 43200]),
                              st.integers(0, 160), st.floats(0, 1)), max_size=40))
def test_no_window_or_day_ever_holds_more_than_the_limits_and_retry_after_is_enough(ops):
    """Random traffic (answers using up to what they reserved): in every 60 s window at most rpm
    requests and tpm tokens, per UTC day at most the budget; a request refused for rpm or tpm passes
    when retried after Retry-After seconds."""
    clock = Clock(dt.datetime(2030, 3, 14, 20, 0, tzinfo=dt.UTC).timestamp())
    limiter, k = Limiter(clock=clock), key(rpm=5, tpm=300, budget_day=1000)
    admitted: list[tuple[float, int]] = []
    for step, tokens, share in ops:
        clock.t += step
        try:
            hold(limiter, k, tokens, used=int(tokens * share))
        except Refused as r:
            if r.code == "rate_limit_exceeded" and tokens <= k.tpm:
                later = Limiter(store=copy.deepcopy(limiter.store), clock=Clock(clock.t + r.retry_after))
                try:
                    hold(later, k, tokens)
                except Refused as again:
                    assert again.code == "budget_exceeded", (str(r), str(again))
            continue
        admitted.append((clock.t, int(tokens * share)))
        window = [n for t, n in admitted if t > clock.t - 60]
        assert len(window) <= k.rpm and sum(window) <= k.tpm
        day = dt.datetime.fromtimestamp(clock.t, dt.UTC).date()
        assert sum(n for t, n in admitted if dt.datetime.fromtimestamp(t, dt.UTC).date() == day) <= 1000
