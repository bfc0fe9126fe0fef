"""Breaker state shared by two replicas through a real redis-server of the test's own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fakes.redis_server import RedisServer, redis_available

from proxy.config import BreakerConfig
from proxy.routing.health import HealthBoard
from proxy.routing.shared import SharedHealth

pytestmark = pytest.mark.skipif(not redis_available(), reason="redis-server is not installed")
LABEL = "up/model"


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path) as server:
        yield server


@pytest.fixture
async def replicas(redis: RedisServer) -> AsyncIterator[tuple[SharedHealth, SharedHealth]]:
    config = BreakerConfig(failures=2, window=30, cooldown=30)
    first = SharedHealth(redis.url, HealthBoard(config))
    second = SharedHealth(redis.url, HealthBoard(config))
    for replica in (first, second):
        await replica.start([LABEL])
    yield first, second
    for replica in (first, second):
        await replica.close()


async def settle(*replicas: SharedHealth) -> None:
    for replica in replicas:
        await replica.flush_writes()
    for replica in replicas:
        await replica.refresh()


async def test_an_opening_on_one_replica_opens_the_route_on_the_other(
    replicas: tuple[SharedHealth, SharedHealth],
) -> None:
    first, second = replicas
    for _ in range(2):
        first.board[LABEL].begin()
        first.board[LABEL].failed()
    assert first.board[LABEL].state() == "open"
    await settle(first, second)
    assert second.board[LABEL].state() == "open"
    assert abs(second.board[LABEL].open_until - first.board[LABEL].open_until) < 0.1


async def test_parking_travels_with_its_reason(
    replicas: tuple[SharedHealth, SharedHealth],
) -> None:
    first, second = replicas
    first.board[LABEL].begin()
    first.board[LABEL].park(20, rate_limited=True)
    await settle(first, second)
    assert second.board[LABEL].state() == "parked"
    assert second.board[LABEL].park_rate_limited


async def test_one_trial_in_the_cluster_and_a_good_trial_closes_everywhere(
    replicas: tuple[SharedHealth, SharedHealth],
) -> None:
    first, second = replicas
    for replica in (first, second):
        health = replica.board[LABEL]
        health.open_until = health.clock() - 1  # both see it half-open
        health.opened_at = 1.0
    assert [await first.claim_trial(LABEL), await second.claim_trial(LABEL)] == [True, False]
    first.board[LABEL].begin()
    first.board[LABEL].succeeded(0.2)
    await settle(first, second)
    assert second.board[LABEL].state() == "closed"
    assert await second.claim_trial(LABEL)  # the lease was released by the closing


async def test_redis_down_leaves_each_replica_deciding_alone(
    redis: RedisServer, replicas: tuple[SharedHealth, SharedHealth]
) -> None:
    first, _ = replicas
    redis.stop()
    assert await first.claim_trial(LABEL)  # no lease to be had: decide locally
    first.board[LABEL].begin()
    first.board[LABEL].park(5, rate_limited=False)  # the write fails quietly
    await first.flush_writes()
    assert first.board[LABEL].state() == "parked"
