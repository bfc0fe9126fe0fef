"""Breaker and parking state shared by replicas through Redis (when limits use Redis).

Each replica keeps deciding from its local RouteHealth (no Redis round trip per request);
transitions are written through, and every REFRESH seconds each replica pulls the others'
openings, parkings and closings. The half-open trial is claimed cluster-wide with SET NX,
so one replica sends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable

import redis.asyncio as aioredis
from loguru import logger
from redis.exceptions import RedisError

from proxy.routing.health import HealthBoard, RouteHealth

REFRESH = 0.5
TIMEOUT = 0.25
TRIAL_LEASE_MS = 30_000
PREFIX = "llm-proxy:route"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _to_local(epoch: float) -> float:
    """An epoch time as a reading of the board's monotonic clock."""
    return epoch - time.time() + time.monotonic()


def _to_epoch(local: float) -> float:
    return local - time.monotonic() + time.time()


class SharedHealth:
    def __init__(self, url: str, board: HealthBoard) -> None:
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT
        )
        self.board = board
        self._task: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[None]] = set()

    async def start(self, labels: Iterable[str]) -> None:
        self._labels = list(labels)
        self.board.listener = self.publish
        self._task = asyncio.get_running_loop().create_task(self._refresh_forever())

    def track(self, labels: Iterable[str]) -> None:
        self._labels = list(labels)

    def publish(self, health: RouteHealth, event: str) -> None:
        """Write a transition through (fire and forget: a slow Redis never slows a request)."""
        task = asyncio.get_running_loop().create_task(self._write(health, event))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, health: RouteHealth, event: str) -> None:
        key = f"{PREFIX}:{health.label}"
        now = time.time()
        try:
            if event == "open":
                until = _to_epoch(health.open_until)
                ttl = max(int((until - now) * 1000), 1)
                await self._redis.set(f"{key}:open", f"{until}:{health.opens}", px=ttl)
            elif event == "park":
                until = _to_epoch(health.parked_until)
                ttl = max(int((until - now) * 1000), 1)
                flag = int(health.park_rate_limited)
                await self._redis.set(f"{key}:park", f"{until}:{flag}", px=ttl)
            elif event == "close":
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.delete(f"{key}:open", f"{key}:trial")
                    pipe.set(f"{key}:closed", str(now), px=600_000)
                    await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            logger.warning("shared breaker state: write failed for {}: {}", health.label, exc)

    async def flush_writes(self) -> None:
        """Wait for the transitions written so far (tests, and shutdown)."""
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    async def claim_trial(self, label: str) -> bool:
        """True when this replica may send the half-open trial (one in the cluster)."""
        try:
            won = await self._redis.set(f"{PREFIX}:{label}:trial", "1", nx=True, px=TRIAL_LEASE_MS)
        except (RedisError, OSError, TimeoutError):
            return True  # Redis down: decide per replica, as without Redis
        return bool(won)

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(REFRESH)
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await self.refresh()

    async def refresh(self) -> None:
        labels = self._labels
        if not labels:
            return
        names = [
            f"{PREFIX}:{label}:{kind}" for label in labels for kind in ("open", "park", "closed")
        ]
        values = await self._redis.mget(names)
        for index, label in enumerate(labels):
            opened, parked, closed = values[index * 3 : index * 3 + 3]
            self._adopt(self.board[label], opened, parked, closed)

    @staticmethod
    def _adopt(
        health: RouteHealth,
        opened: bytes | str | None,
        parked: bytes | str | None,
        closed: bytes | str | None,
    ) -> None:
        if opened:
            until, opens = _text(opened).split(":")
            local = _to_local(float(until))
            if local > health.open_until + 0.05:
                health.adopt_open(local, int(opens))
        if parked:
            until, flag = _text(parked).split(":")
            local = _to_local(float(until))
            if local > health.parked_until + 0.05:
                health.parked_until = local
                health.park_rate_limited = flag == "1"
        if closed and health.open_until and float(_text(closed)) > health.opened_at:
            health.adopt_close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush_writes()
        await self._redis.aclose()
