"""The per-input cache on every backend (memory, disk, a real redis-server): one key per
input, read all at once, filled with each input's own vector; and what a key depends on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest
from fakes.redis_server import RedisServer, redis_available

from proxy.cache.cache import ResponseCache
from proxy.cache.keys import CacheDecision
from proxy.config import CacheConfig
from proxy.formats.embeddings.cache import StoredInputs, input_keys
from proxy.observability.metrics import Metrics

Raw = msgspec.Raw
FIELDS = {"model": Raw(b'"emb"'), "input": Raw(b'["a","b"]'), "dimensions": Raw(b"8")}


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not redis_available():
        pytest.skip("redis-server is not installed")
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture(params=["memory", "disk", "redis"])
async def cache(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ResponseCache]:
    backend = request.param
    url = request.getfixturevalue("redis_url") if backend == "redis" else "redis://unused"
    config = CacheConfig(backend=backend, path=str(tmp_path), url=url)
    responses = ResponseCache(config, Metrics(False))
    yield responses
    await responses.close()


async def test_each_input_is_stored_and_read_on_its_own(cache: ResponseCache) -> None:
    decision = CacheDecision(key="whole", read=True, ttl=60, max_age=None)
    first = StoredInputs(cache, decision, input_keys("ns", "emb", FIELDS, ["a", "b"]))
    await first.read()
    assert first.missing == [0, 1]
    first.fill([0, 1], [b"[0.5]", b'"AAAAPw=="'], "up/emb", "up/emb-1")
    second = StoredInputs(cache, decision, input_keys("ns", "emb", FIELDS, ["b", "new", "a"]))
    for _ in range(100):  # Redis fills are written in the background
        await second.read()
        if second.missing == [1]:
            break
        await asyncio.sleep(0.01)
    assert second.missing == [1]
    assert [entry.body if entry else None for entry in second.found] == [
        b'"AAAAPw=="',
        None,
        b"[0.5]",
    ]
    found = second.found[0]
    assert found is not None and (found.route, found.target) == ("up/emb", "up/emb-1")


async def test_entries_older_than_max_age_are_not_read(cache: ResponseCache) -> None:
    keys = input_keys("ns", "emb", FIELDS, ["old"])
    stored = StoredInputs(cache, CacheDecision("w", True, 60, None), keys)
    stored.fill([0], [b"[1.0]"], "r", "t")
    for _ in range(100):
        await stored.read()
        if not stored.missing:
            break
        await asyncio.sleep(0.01)
    assert stored.missing == []
    young_only = StoredInputs(cache, CacheDecision("w", True, 60, -1.0), keys)
    await young_only.read()
    assert young_only.missing == [0]


def test_a_key_depends_on_namespace_model_input_and_the_fields_that_change_a_vector() -> None:
    base = input_keys("ns", "emb", FIELDS, ["a"])[0]
    assert input_keys("ns", "emb", FIELDS, ["a", "a"]) == [base, base]
    assert input_keys("other", "emb", FIELDS, ["a"])[0] != base
    assert input_keys("ns", "emb-2", FIELDS, ["a"])[0] != base
    assert input_keys("ns", "emb", FIELDS, ["b"])[0] != base
    assert input_keys("ns", "emb", FIELDS, [[97]])[0] != base  # ids are not the text
    shorter = {**FIELDS, "dimensions": Raw(b"4")}
    assert input_keys("ns", "emb", shorter, ["a"])[0] != base
    unknown = {**FIELDS, "x_vendor": Raw(b"true")}
    assert input_keys("ns", "emb", unknown, ["a"])[0] != base
    same = {
        **FIELDS,
        "encoding_format": Raw(b'"base64"'),
        "user": Raw(b'"u"'),
        "model": Raw(b'"alias"'),
        "input": Raw(b'"something else"'),
    }
    assert input_keys("ns", "emb", same, ["a"])[0] == base
