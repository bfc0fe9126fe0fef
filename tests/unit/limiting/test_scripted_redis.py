"""Scripted admission in a real redis-server: one round trip for every scope of a
request, all or nothing, in the `limits` library's own keys so that the library reads what
the scripts write; concurrency as leases that a timed-out admission gives back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import limits
import pytest
import redis.asyncio as aioredis
from fakes.redis_server import RedisServer, redis_available

from proxy.config import LimitsConfig, LimitSpec
from proxy.limits import store as store_module
from proxy.limits.scopes import Hold, OverBudget, Refused, Scope, compile_limits
from proxy.limits.store import LimitStore
from proxy.observability.metrics import Metrics

pytestmark = pytest.mark.skipif(not redis_available(), reason="redis-server is not installed")


@pytest.fixture
def redis_server(tmp_path: Path) -> Any:
    with RedisServer(tmp_path) as server:
        yield server


@pytest.fixture
async def store(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[LimitStore]:
    limit_store = LimitStore(LimitsConfig(storage=redis_server.url), Metrics(), tmp_path)
    yield limit_store
    await limit_store.close()


def scope(name: str, ident: str, **spec: Any) -> Scope:
    limits_ = compile_limits(name, LimitSpec(**spec))
    assert limits_ is not None
    return Scope(limits_, ident, states=name == "key")


async def client_commands(url: str, action: Any) -> list[str]:
    """The commands clients sent while `action` ran (MONITOR; commands a script runs are
    left out), so a test can count round trips."""
    monitor_client = aioredis.Redis.from_url(url)
    seen: list[str] = []
    async with monitor_client.monitor() as monitor:
        listening = asyncio.ensure_future(_collect(monitor, seen))
        await asyncio.sleep(0.05)
        await action()
        await asyncio.sleep(0.1)
        listening.cancel()
    await monitor_client.aclose()
    return seen


async def _collect(monitor: Any, seen: list[str]) -> None:
    async for event in monitor.listen():
        if event.get("client_type") != "lua":
            seen.append(event["command"].split()[0].upper())


async def test_key_and_model_limits_cost_one_round_trip(
    store: LimitStore, redis_server: RedisServer
) -> None:
    scopes = [
        scope("key", "alice", requests="100/minute", tokens="1000/minute", concurrency=5),
        scope("model", "gpt", requests="100/minute; 1000/hour"),
    ]
    budget, spend = ("alice:month:2026-11-01", 5.0), ("alice:month:2026-11-01", 0.25, 3600)
    warm = await store.admit(scopes, 10, budget)  # the scripts are loaded on first use
    await store.settle([(hold, True) for hold in warm], 12, spend)
    holds: list[Hold] = []

    async def admit_then_settle() -> None:
        holds.extend(await store.admit(scopes, 10, budget))
        await store.settle([(hold, True) for hold in holds], 12, spend)

    commands = await client_commands(redis_server.url, admit_then_settle)
    assert commands == ["EVALSHA", "EVALSHA"]  # admission, then the end of the request
    assert [s.kind for s in holds[0].states] == ["requests", "tokens"]
    assert await store.spend("alice:month:2026-11-01") == 0.5  # both requests' spend


async def test_requests_only_end_without_a_round_trip(
    store: LimitStore, redis_server: RedisServer
) -> None:
    scopes = [scope("key", "bob", requests="100/minute"), scope("model", "gpt", requests="9/hour")]
    holds = await store.admit(scopes, 1)

    async def settle() -> None:
        await store.settle([(hold, True) for hold in holds], 30)

    assert await client_commands(redis_server.url, settle) == []


async def test_the_library_reads_what_the_script_wrote(store: LimitStore, tmp_path: Path) -> None:
    key_scope = scope("key", "carol", requests="10/minute", tokens="500/minute")
    for _ in range(3):
        holds = await store.admit([key_scope], 40)
        await store.settle([(holds[0], True)], 100)
    item = limits.parse("10/minute")
    states = await store.states(key_scope.limits, "carol")  # the library's window stats
    assert [(s.kind, s.remaining) for s in states] == [("requests", 7), ("tokens", 200)]
    assert 0 < states[0].reset <= item.get_expiry()
    assert [(s.kind, s.remaining) for s in holds[0].states] == [("requests", 7), ("tokens", 300)]


async def test_a_refusal_anywhere_takes_nothing_anywhere(store: LimitStore) -> None:
    key_scope = scope("key", "dave", requests="10/minute", concurrency=3)
    full_model = scope("model", "small", requests="2/minute")
    await store.admit([full_model], 1)
    await store.admit([full_model], 1)
    for _ in range(5):
        with pytest.raises(Refused) as refused:
            await store.admit([key_scope, full_model], 1)
        assert (refused.value.scope, refused.value.kind) == ("model", "requests")
        assert refused.value.retry_after is not None and refused.value.retry_after > 0
    states = await store.states(key_scope.limits, "dave")
    assert states[0].remaining == 10  # not one request of the key's window was used
    assert await store.in_flight(key_scope.limits, "dave") == 0


async def test_a_spent_budget_refuses_and_takes_nothing(store: LimitStore) -> None:
    key_scope = scope("key", "judy", requests="10/minute", concurrency=2)
    budget = ("judy:day:2026-11-26", 1.0)
    holds = await store.admit([key_scope], 1, budget)
    await store.settle([(holds[0], True)], 10, ("judy:day:2026-11-26", 1.0, 3600))
    with pytest.raises(OverBudget) as refused:
        await store.admit([key_scope], 1, budget)
    assert refused.value.spent == 1.0
    assert (await store.states(key_scope.limits, "judy"))[0].remaining == 9
    assert await store.in_flight(key_scope.limits, "judy") == 0
    assert await store.admit([key_scope], 1)  # without a budget (a cached answer): admitted


async def test_token_windows_admit_on_the_estimate_and_fill_on_overshoot(
    store: LimitStore,
) -> None:
    key_scope = scope("key", "erin", tokens="100/minute")
    holds = await store.admit([key_scope], 60)
    await store.settle([(holds[0], True)], 250)  # more than the window holds: it fills
    assert (await store.states(key_scope.limits, "erin"))[0].remaining == 0
    with pytest.raises(Refused) as refused:
        await store.admit([key_scope], 1)
    assert refused.value.kind == "tokens"
    cached = Scope(key_scope.limits, "erin", tokens=False, states=True)
    assert await store.admit([cached], 1)  # a cached answer is not held to token windows


async def test_concurrency_leases_are_released_once(store: LimitStore) -> None:
    key_scope = scope("key", "frank", concurrency=2)
    first = await store.admit([key_scope], 1)
    second = await store.admit([key_scope], 1)
    with pytest.raises(Refused) as refused:
        await store.admit([key_scope], 1)
    assert refused.value.kind == "concurrency"
    assert await store.in_flight(key_scope.limits, "frank") == 2
    await store.release(first[0])
    await store.release(first[0])  # a second release gives back nothing more
    await store.settle([(first[0], False)], 0)
    assert await store.in_flight(key_scope.limits, "frank") == 1
    await store.settle([(second[0], True)], 0)
    assert await store.in_flight(key_scope.limits, "frank") == 0


async def test_a_timed_out_admission_gives_its_lease_back(
    store: LimitStore, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "STORAGE_PAUSE", 0.5)
    heidi = scope("key", "heidi", concurrency=1)
    await store.admit([scope("key", "ivan", concurrency=1)], 1)  # scripts loaded
    redis_server.pause()
    holds = await store.admit([heidi], 1)  # times out: allowed through, holding nothing
    assert not holds[0].entered
    redis_server.resume()  # the admission runs in Redis now and takes heidi's only slot
    leases = aioredis.Redis.from_url(redis_server.url)
    seen = []
    for _ in range(100):
        seen.append(await leases.zcard("llm-proxy:leases:key:heidi"))
        if seen[-1] == 0 and 1 in seen:
            break
        await asyncio.sleep(0.02)
    await leases.aclose()
    assert 1 in seen and seen[-1] == 0  # taken late, then given back
    await asyncio.sleep(0.5)  # past the pause the store is used again
    assert await store.admit([heidi], 1)


async def test_other_strategies_share_the_bucket_and_the_leases(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    config = LimitsConfig(storage=redis_server.url, strategy="fixed-window")
    fixed = LimitStore(config, Metrics(), tmp_path)
    try:
        key_scope = scope("key", "kim", requests="10/minute", burst=5, concurrency=1)
        (hold,) = await fixed.admit([key_scope], 1)
        assert (hold.states[0].limit, hold.states[0].remaining) == (5, 4)  # the bucket
        with pytest.raises(Refused) as refused:
            await fixed.admit([key_scope], 1)
        assert refused.value.kind == "concurrency"
        leases = aioredis.Redis.from_url(redis_server.url)
        assert await leases.zcard("llm-proxy:leases:key:kim") == 1
        await leases.aclose()
        await fixed.release(hold)
        await fixed.release(hold)
        assert await fixed.in_flight(key_scope.limits, "kim") == 0
        assert await fixed.admit([key_scope], 1)
    finally:
        await fixed.close()
