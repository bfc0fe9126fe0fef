"""The live upstream clients across reloads, in-process against the fake OpenAI upstream on
loopback: a local worker's client counts its calls in flight, so a reload that removes it
closes it the moment its last call ends (never under one); remote clients keep their timed
close; the log says whether an upstream was removed or its settings changed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from fakes.openai_upstream import FakeOpenAI, hang
from loguru import logger

from proxy.config import LocalUpstreamConfig, OpenAIUpstreamConfig, Timeouts, UpstreamConfig
from proxy.upstreams.base import UpstreamCall
from proxy.upstreams.local import LocalUpstream
from proxy.upstreams.pool import UpstreamPool

CHAT = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()


@pytest.fixture
def log() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), format="{message}")
    yield lines
    logger.remove(sink)


def call() -> UpstreamCall:
    return UpstreamCall(CHAT, "m", Timeouts(), "req-pool-1")


def track_close(upstream: object) -> asyncio.Event:
    closed = asyncio.Event()
    close = upstream.close  # type: ignore[attr-defined]

    async def recording() -> None:
        await close()
        closed.set()

    upstream.close = recording  # type: ignore[attr-defined]
    return closed


async def test_a_removed_local_client_closes_once_its_call_ends(
    fake_openai: FakeOpenAI, log: list[str]
) -> None:
    local: UpstreamConfig = LocalUpstreamConfig(url=fake_openai.url)
    pool = UpstreamPool()
    await pool.update({"w": local}, {})
    upstream = pool.get("w")
    assert isinstance(upstream, LocalUpstream)
    closed = track_close(upstream)
    fake_openai.script(hang(1.0))
    in_flight = asyncio.ensure_future(upstream.complete(call()))
    await asyncio.sleep(0.2)
    assert upstream.in_flight == 1
    await pool.update({}, {})
    assert pool.get("w") is None
    assert any("upstream w: removed" in line for line in log), log
    await asyncio.sleep(0.3)
    assert not closed.is_set()  # never under a call in flight
    reply = json.loads(await in_flight)
    assert reply["object"] == "chat.completion"
    await asyncio.wait_for(closed.wait(), 1.0)  # ... and at once after it
    await pool.close()


async def test_an_idle_removed_local_client_closes_at_once(fake_openai: FakeOpenAI) -> None:
    pool = UpstreamPool()
    await pool.update({"w": LocalUpstreamConfig(url=fake_openai.url)}, {})
    await pool.get("w").complete(call())  # type: ignore[union-attr]
    closed = track_close(pool.get("w"))
    await pool.update({}, {})
    await asyncio.wait_for(closed.wait(), 1.0)
    await pool.close()


async def test_remote_clients_keep_their_timed_close(
    fake_openai: FakeOpenAI, log: list[str]
) -> None:
    remote = OpenAIUpstreamConfig(base_url=fake_openai.base_url, timeout=Timeouts(total=30))
    pool = UpstreamPool()
    await pool.update({"a": remote, "b": remote}, {})
    old_a = pool.get("a")
    closed = track_close(old_a)
    changed = OpenAIUpstreamConfig(base_url=fake_openai.base_url, timeout=Timeouts(total=20))
    await pool.update({"a": changed}, {})
    assert pool.get("a") is not old_a and pool.get("b") is None
    assert any("upstream a: settings changed; the old client closes in 35s" in x for x in log)
    assert any("upstream b: removed; the old client closes in 35s" in x for x in log)
    await asyncio.sleep(0.2)
    assert not closed.is_set()
    await pool.close()
    assert closed.is_set()  # closing the pool closes what was retiring
