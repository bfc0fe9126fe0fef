"""Limits with Redis storage (docs/semantics.md, "Limits"): replicas sharing one redis-server
enforce one limit exactly (request windows, tokens, the burst bucket, concurrency, budgets),
and a Redis that is down or slow follows `limits.on_storage_error` (allow: through and
counted; deny: 503), recovering by itself when it is back.

Every Redis here is a `redis-server` of our own on a free port (tests/fakes/redis_server.py),
never the system one. The limits storage times out after 0.25 s, so every wait is bounded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from fakes.openai_upstream import FakeOpenAI, slow_stream
from fakes.proxy_harness import ProxyLauncher, RunningProxy
from fakes.redis_server import RedisServer, redis_available

from .conftest import USER_MESSAGES, assert_openai_error
from .test_limits_scopes import (
    LONG_REPLY,
    MODEL,
    assert_rate_limited,
    assert_retry_headers,
    async_sdk,
    away_from_window_end,
    chat,
    in_flight,
    key,
    metric,
    sdk,
    start_together,
    stop_together,
    tuned,
    upstream,
    usage_of,
    wait_until,
)

pytestmark = pytest.mark.skipif(not redis_available(), reason="redis-server is not installed")

STORAGE_ERRORS = "llm_proxy_storage_errors_total"
# A request may wait on a slow store about one storage timeout (0.25 s), not one per call.
SLOW_STORE_BOUND = 1.0


def redis_policy(base_url: str, storage: str, on_error: str) -> dict[str, Any]:
    return tuned(
        {
            "upstreams": {"fake": upstream(base_url)},
            "models": {MODEL: {"routes": [{"upstream": "fake", "model": "replica-up"}]}},
            "keys": [
                key("exact", requests="50/hour"),
                key("tokens", tokens="50/hour"),
                key("bucket", requests="1/second", burst=4),
                key("pair", concurrency=2),
                {**key("wallet"), "budget": {"usd": 1, "period": "day"}},
                key("guarded", requests="3/hour"),
                key("probe", requests="1000000/hour"),
                # every kind at once: each is a storage call or two per request
                key("full", requests="1000000/hour", tokens="100000000/hour", concurrency=100),
            ],
            # $50,000 per million tokens: a default exchange (12 tokens) costs $0.60
            "prices": {"replica-up": {"input": 50_000, "output": 50_000}},
            "limits": {"storage": storage, "on_storage_error": on_error},
        }
    )


@dataclass
class Cluster:
    shared: RedisServer  # healthy all along
    replicas: tuple[RunningProxy, RunningProxy]  # on `shared`, on_storage_error: deny
    faulty: RedisServer  # stopped, paused and restarted by the fault tests
    allow: RunningProxy  # on `faulty`
    deny: RunningProxy  # on `faulty`


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, fake_openai_server: FakeOpenAI
) -> Iterator[Cluster]:
    base_url = fake_openai_server.base_url
    redis_dir = tmp_path_factory.mktemp("redis")
    launchers = [ProxyLauncher(tmp_path_factory.mktemp(f"redis-proxy-{i}")) for i in range(4)]
    with RedisServer(redis_dir / "shared") as shared, RedisServer(redis_dir / "faulty") as faulty:
        try:
            # two at a time: four at once on two busy cores can outlast the start timeout
            a, b = start_together(
                (launchers[0], redis_policy(base_url, shared.url, "deny"), None),
                (launchers[1], redis_policy(base_url, shared.url, "deny"), None),
            )
            allow, deny = start_together(
                (launchers[2], redis_policy(base_url, faulty.url, "allow"), None),
                (launchers[3], redis_policy(base_url, faulty.url, "deny"), None),
            )
            yield Cluster(shared, (a, b), faulty, allow, deny)
        finally:
            faulty.resume_if_paused()
            stop_together(*launchers)


@pytest.fixture
def faulty(cluster: Cluster) -> Iterator[RedisServer]:
    """The Redis of the fault tests, running and answering again after each of them."""
    yield cluster.faulty
    cluster.faulty.resume_if_paused()
    if not cluster.faulty.running:
        cluster.faulty.start()


# ---------------------------------------------------------------------------------------------
# Two replicas, one limit


async def test_two_replicas_enforce_one_request_limit_exactly(
    cluster: Cluster, fake_openai: FakeOpenAI
) -> None:
    """requests "50/hour": 80 requests at once, half on each replica: exactly 50 admitted."""
    away_from_window_end(3600, 20)
    a, b = cluster.replicas
    refused_before = sum(metric(p, "llm_proxy_rate_limited_total", scope="key") for p in (a, b))
    async with async_sdk(a, "sk-exact") as ca, async_sdk(b, "sk-exact") as cb:

        async def one(client: openai.AsyncOpenAI) -> int:
            try:
                await client.chat.completions.create(model=MODEL, messages=USER_MESSAGES)
            except openai.RateLimitError as exc:
                assert assert_openai_error(exc.response.json())["code"] == "rate_limit_exceeded"
                return 429
            return 200

        codes = await asyncio.gather(*(one(ca if i % 2 else cb) for i in range(80)))
    assert (codes.count(200), codes.count(429)) == (50, 30)
    assert len(fake_openai.chat_requests) == 50
    refused = sum(metric(p, "llm_proxy_rate_limited_total", scope="key") for p in (a, b))
    assert refused - refused_before == 30
    assert usage_of(b, "sk-exact")["limits"][0]["remaining"] == 0


async def test_two_replicas_share_one_burst_bucket(
    cluster: Cluster, fake_openai: FakeOpenAI
) -> None:
    """requests "1/second" with burst 4 (GCRA in one Lua script): 8 at once over both
    replicas, exactly 4 admitted."""
    a, b = cluster.replicas
    async with async_sdk(a, "sk-bucket") as ca, async_sdk(b, "sk-bucket") as cb:

        async def one(client: openai.AsyncOpenAI) -> int:
            try:
                await client.chat.completions.create(model=MODEL, messages=USER_MESSAGES)
            except openai.RateLimitError as exc:
                assert_retry_headers(exc.response, at_most=1.0)
                return 429
            return 200

        codes = await asyncio.gather(*(one(ca if i % 2 else cb) for i in range(8)))
    assert (codes.count(200), codes.count(429)) == (4, 4)


def test_two_replicas_share_token_windows(cluster: Cluster, fake_openai: FakeOpenAI) -> None:
    """tokens "50/hour": 106 tokens used on one replica; the other refuses the next one."""
    away_from_window_end(3600, 5)
    a, b = cluster.replicas
    fake_openai.reply = LONG_REPLY
    assert chat(a, "sk-tokens").status_code == 200
    assert_rate_limited(chat(b, "sk-tokens"))
    assert len(fake_openai.chat_requests) == 1


def test_two_replicas_share_concurrency(cluster: Cluster, fake_openai: FakeOpenAI) -> None:
    """concurrency 2: one stream open on each replica fills it for both; closing one frees a
    slot for the other replica."""
    a, b = cluster.replicas
    fake_openai.reply = LONG_REPLY
    fake_openai.script(slow_stream(0.05), slow_stream(0.05))
    with sdk(a, "sk-pair") as ca, sdk(b, "sk-pair") as cb:
        on_a = ca.chat.completions.create(model=MODEL, messages=USER_MESSAGES, stream=True)
        next(iter(on_a))
        on_b = cb.chat.completions.create(model=MODEL, messages=USER_MESSAGES, stream=True)
        next(iter(on_b))
        assert in_flight(a, "sk-pair") == in_flight(b, "sk-pair") == 2
        for client in (ca, cb):
            with pytest.raises(openai.RateLimitError):
                client.chat.completions.create(model=MODEL, messages=USER_MESSAGES)
        on_a.close()
        wait_until(lambda: in_flight(b, "sk-pair") == 1, what="replica A's slot released")
        answer = cb.chat.completions.create(model=MODEL, messages=USER_MESSAGES)
        assert answer.choices[0].message.content == LONG_REPLY
        on_b.close()
    wait_until(lambda: in_flight(a, "sk-pair") == 0, what="every slot released")
    assert len(fake_openai.chat_requests) == 3


def test_two_replicas_share_one_budget(cluster: Cluster, fake_openai: FakeOpenAI) -> None:
    """$1 a day, $0.60 a request: one on each replica spends it, then both refuse."""
    a, b = cluster.replicas
    assert chat(a, "sk-wallet").status_code == 200
    assert usage_of(b, "sk-wallet")["budget"]["spent_usd"] == pytest.approx(0.6)
    assert chat(b, "sk-wallet").status_code == 200
    for proxy in (a, b):
        refused = chat(proxy, "sk-wallet")
        assert_rate_limited(refused, "insufficient_quota")
        assert refused.headers["x-should-retry"] == "false"
    budget = usage_of(a, "sk-wallet")["budget"]
    assert budget["spent_usd"] == pytest.approx(1.2)
    assert budget["remaining_usd"] == 0
    assert len(fake_openai.chat_requests) == 2


# ---------------------------------------------------------------------------------------------
# Redis down or slow


def storage_recovered(proxy: RunningProxy) -> bool:
    """A limited request went through the store without a storage error."""
    before = metric(proxy, STORAGE_ERRORS, store="limits")
    ok = chat(proxy, "sk-probe").status_code == 200
    return ok and metric(proxy, STORAGE_ERRORS, store="limits") == before


def test_redis_down_allow_lets_requests_through_then_limits_again(
    cluster: Cluster, faulty: RedisServer, fake_openai: FakeOpenAI
) -> None:
    away_from_window_end(3600, 30)
    proxy = cluster.allow
    assert [chat(proxy, "sk-guarded").status_code for _ in range(4)] == [200, 200, 200, 429]

    errors = metric(proxy, STORAGE_ERRORS, store="limits")
    faulty.stop()
    for _ in range(3):
        started = time.monotonic()
        resp = chat(proxy, "sk-guarded")
        assert resp.status_code == 200, resp.text  # fail open
        assert time.monotonic() - started < SLOW_STORE_BOUND
    assert metric(proxy, STORAGE_ERRORS, store="limits") >= errors + 3

    faulty.start()  # same port, empty: the proxy reconnects by itself
    wait_until(lambda: storage_recovered(proxy), what="the limits store back in use")
    assert [chat(proxy, "sk-guarded").status_code for _ in range(4)] == [200, 200, 200, 429]


def test_redis_down_deny_answers_503_then_recovers(
    cluster: Cluster, faulty: RedisServer, fake_openai: FakeOpenAI
) -> None:
    proxy = cluster.deny
    assert chat(proxy, "sk-probe").status_code == 200
    errors = metric(proxy, STORAGE_ERRORS, store="limits")
    faulty.stop()
    refused = chat(proxy, "sk-probe")
    assert refused.status_code == 503, refused.text
    assert_openai_error(refused.json())
    assert int(refused.headers["retry-after"]) >= 1
    assert metric(proxy, STORAGE_ERRORS, store="limits") > errors
    assert len(fake_openai.chat_requests) == 1  # refused before any upstream call

    faulty.start()
    wait_until(lambda: chat(proxy, "sk-probe").status_code == 200, what="recovery")


def test_slow_redis_deny_answers_503_within_the_storage_timeout(
    cluster: Cluster, faulty: RedisServer, fake_openai: FakeOpenAI
) -> None:
    faulty.pause()  # connections accepted, nothing answered: every call times out
    started = time.monotonic()
    refused = chat(cluster.deny, "sk-full")
    assert time.monotonic() - started < SLOW_STORE_BOUND
    assert refused.status_code == 503, refused.text
    assert_openai_error(refused.json())
    faulty.resume()
    wait_until(lambda: chat(cluster.deny, "sk-full").status_code == 200, what="recovery")
    assert in_flight(cluster.deny, "sk-full") == 0


def test_slow_redis_allow_waits_about_one_storage_timeout(
    cluster: Cluster, faulty: RedisServer, fake_openai: FakeOpenAI
) -> None:
    faulty.pause()
    started = time.monotonic()
    resp = chat(cluster.allow, "sk-full")
    elapsed = time.monotonic() - started
    faulty.resume()
    assert resp.status_code == 200, resp.text
    assert elapsed < SLOW_STORE_BOUND, f"{elapsed:.2f} s"
