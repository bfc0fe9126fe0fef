"""The `limits` library's private key format, pinned.

With Redis, proxy/limits/scripted.py's Lua writes the library's sliding-window counters itself
(a current and a previous counter per window, in the library's key names and arithmetic), so
that the library's own `get_window_stats` reads what the script wrote. That format is not the
library's public API: an upgrade may change it without notice. Here the library and our
scripts make the same hits, in one real redis-server, and must leave the same keys, with the
same counts and lifetimes, before and after a window rolls over.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import limits
import limits.aio.storage
import limits.aio.strategies
import pytest
import redis.asyncio as aioredis
from fakes.redis_server import RedisServer, redis_available

from proxy.config import LimitsConfig, LimitSpec
from proxy.limits.scopes import Limits, Scope, compile_limits
from proxy.limits.store import PREFIX, LimitStore
from proxy.observability.metrics import Metrics

pytestmark = pytest.mark.skipif(not redis_available(), reason="redis-server is not installed")

REQUESTS, TOKENS = "5/second", "1000/second"  # one-second windows: a rollover costs a second
OURS, THEIRS = "written-by-proxy", "written-by-library"
TTL_SLACK_MS = 300  # the two writers run a few milliseconds apart; a loaded machine, more
# A window's current counter becomes the previous one 1 s after it was made; by 1.2 s both
# writers' have, and the previous count of 2 requests still weighs more than 1 (until 1.5 s).
ROLLOVER_WAIT = 1.2
Snapshot = dict[str, tuple[int, int]]  # key name (identity masked) -> (count, ms to live)

WHAT_TO_DO = (
    "The `limits` library's private sliding-window-counter format changed. Make _WINDOW_LUA in "
    "proxy/limits/scripted.py and LimitStore._windows in proxy/limits/store.py write what the "
    "library now writes (see its resources/redis/lua_scripts/*sliding_window.lua and "
    "RedisStorage._current_window_key/_previous_window_key), or keep `limits` in the range "
    "pyproject.toml pins."
)


@pytest.fixture
def redis_server(tmp_path: Path) -> Any:
    with RedisServer(tmp_path) as server:
        yield server


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    redis_client = aioredis.Redis.from_url(redis_server.url)
    yield redis_client
    await redis_client.aclose()


async def snapshot(client: aioredis.Redis, identity: str) -> Snapshot:
    found: Snapshot = {}
    async for raw in client.scan_iter(match=f"*{identity}*"):
        name = raw.decode()
        found[name.replace(identity, "<identity>")] = (
            int(await client.get(name)),
            int(await client.pttl(name)),
        )
    return found


def assert_same(theirs: Snapshot, ours: Snapshot, after: str) -> None:
    context = f"limits {version('limits')}, after {after}"
    assert sorted(ours) == sorted(theirs), (
        f"{context}: the library wrote the keys {sorted(theirs)}, our script "
        f"{sorted(ours)}. {WHAT_TO_DO}"
    )
    counts = {name: count for name, (count, _) in theirs.items()}
    our_counts = {name: count for name, (count, _) in ours.items()}
    assert our_counts == counts, (
        f"{context}: the library counted {counts}, our script {our_counts}. {WHAT_TO_DO}"
    )
    for name, (_, ttl) in theirs.items():
        our_ttl = ours[name][1]
        assert abs(our_ttl - ttl) <= TTL_SLACK_MS, (
            f"{context}: {name} lives {ttl} ms as the library writes it, {our_ttl} ms as our "
            f"script does. {WHAT_TO_DO}"
        )


@dataclass
class Writers:
    """Our store and the library, making the same hits under two identities."""

    store: LimitStore
    library: limits.aio.strategies.SlidingWindowCounterRateLimiter
    compiled: Limits
    requests: limits.RateLimitItem = field(default_factory=lambda: limits.parse(REQUESTS))
    tokens: limits.RateLimitItem = field(default_factory=lambda: limits.parse(TOKENS))

    @property
    def library_key(self) -> str:
        return f"{self.compiled.scope}:{THEIRS}"  # the identity LimitStore gives the library

    async def proxy_hit(self, tokens: int) -> int:
        """A request and its tokens; what our admission says is left of the request window."""
        holds = await self.store.admit([Scope(self.compiled, OURS, states=True)], 1)
        await self.store.settle([(holds[0], True)], tokens)
        return next(s.remaining for s in holds[0].states if s.kind == "requests")

    async def library_hit(self, tokens: int) -> int:
        assert await self.library.hit(self.requests, self.library_key)
        assert await self.library.hit(self.tokens, self.library_key, cost=tokens)
        return (await self.library.get_window_stats(self.requests, self.library_key)).remaining


async def test_our_script_writes_the_keys_the_library_writes(
    redis_server: RedisServer, client: aioredis.Redis, tmp_path: Path
) -> None:
    compiled = compile_limits("key", LimitSpec(requests=REQUESTS, tokens=TOKENS))
    assert compiled is not None
    library_storage = limits.aio.storage.RedisStorage(
        "async+" + redis_server.url,
        implementation="redispy",
        key_prefix=PREFIX,
        connection_pool=client.connection_pool,  # closed with the client
    )
    store = LimitStore(LimitsConfig(storage=redis_server.url), Metrics(), tmp_path)
    writers = Writers(
        store, limits.aio.strategies.SlidingWindowCounterRateLimiter(library_storage), compiled
    )
    try:
        await both_hit(writers, client, 40, "a first hit")
        await both_hit(writers, client, 25, "a second hit in the same window")
        await asyncio.sleep(ROLLOVER_WAIT)
        await both_hit(writers, client, 10, "a hit once the window rolled over")
        await assert_read_alike(writers)
    finally:
        await store.close()


async def both_hit(writers: Writers, client: aioredis.Redis, tokens: int, after: str) -> None:
    our_remaining = await writers.proxy_hit(tokens)
    remaining = await writers.library_hit(tokens)
    assert_same(await snapshot(client, THEIRS), await snapshot(client, OURS), after)
    assert our_remaining == remaining, (
        f"limits {version('limits')}, after {after}: the library counts {remaining} requests "
        f"left, our script's arithmetic {our_remaining}. {WHAT_TO_DO}"
    )


async def assert_read_alike(writers: Writers) -> None:
    """The library reads our counters as it reads its own. The two were written milliseconds
    apart and a previous window's weight shrinks by the millisecond, so a count of 65 may read
    one apart; a format the library no longer reads is far more than that."""
    for item in (writers.requests, writers.tokens):
        theirs = await writers.library.get_window_stats(item, writers.library_key)
        ours = await writers.library.get_window_stats(
            item, writers.library_key.replace(THEIRS, OURS)
        )
        assert abs(ours.remaining - theirs.remaining) <= 1, (
            f"limits {version('limits')} reads {ours.remaining} left of {item} from our "
            f"script's counters, {theirs.remaining} from its own. {WHAT_TO_DO}"
        )
