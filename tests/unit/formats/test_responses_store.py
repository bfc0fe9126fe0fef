"""Stored responses: each backend keeps bytes for a time to live; the store scopes them to the
key that made them and rebuilds a conversation from the chain of previous responses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from fakes.redis_server import RedisServer, redis_available

from proxy.errors import InvalidRequestError, ServiceUnavailableError
from proxy.formats.responses.store import ResponseStore, StoredResponse, build_store
from proxy.formats.responses.store.backends import (
    DiskBackend,
    MemoryBackend,
    RedisBackend,
    StoreBackend,
)
from proxy.loader import load_dict


@pytest.fixture(params=["memory", "disk", "redis"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreBackend]:
    made: StoreBackend
    if request.param == "redis":
        if not redis_available():
            pytest.skip("redis-server is not installed")
        with RedisServer(tmp_path / "redis") as server:
            made = RedisBackend(server.url)
            yield made
            await made.close()
        return
    made = MemoryBackend() if request.param == "memory" else DiskBackend(tmp_path / "store")
    yield made
    await made.close()


async def test_a_backend_keeps_deletes_and_forgets(backend: StoreBackend) -> None:
    await backend.put("a", b"one", 60)
    await backend.put("b", b"two", 0.05)
    assert await backend.get("a") == b"one"
    assert await backend.delete("a") is True
    assert await backend.delete("a") is False
    assert await backend.get("a") is None
    await asyncio.sleep(0.15)
    assert await backend.get("b") is None  # past its time to live
    assert await backend.delete("b") is False


async def test_the_memory_backend_forgets_the_oldest_beyond_its_size() -> None:
    memory = MemoryBackend(max_bytes=10)
    for key in "abc":
        await memory.put(key, b"xxxx", 60)
    assert await memory.get("a") is None and await memory.get("c") == b"xxxx"


async def test_the_disk_survives_a_new_backend_on_the_same_directory(tmp_path: Path) -> None:
    first = DiskBackend(tmp_path / "store")
    assert not (tmp_path / "store").exists()  # nothing touches the disk before it is used
    await first.put("a", b"kept", 60)
    await first.close()
    again = DiskBackend(tmp_path / "store")
    assert await again.get("a") == b"kept"
    await again.close()


def stored(owner: str, text: str, previous: str | None = None, **extra: Any) -> StoredResponse:
    output = [{"type": "message", "role": "assistant", "content": [{"type": "output_text",
               "text": f"re: {text}"}]}]  # fmt: skip
    response = msgspec.Raw(msgspec.json.encode({"output": output}))
    items = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}]
    return StoredResponse(owner, response, items, previous, **extra)


async def test_a_stored_response_exists_for_its_owner_only() -> None:
    store = ResponseStore(MemoryBackend(), 60)
    await store.save("resp_1", stored("team-a", "hi"))
    assert (await store.load("resp_1", "team-a")) is not None
    assert await store.load("resp_1", "team-b") is None
    assert await store.delete("resp_1", "team-b") is False
    assert await store.delete("resp_1", "team-a") is True


async def test_a_conversation_is_its_chain_oldest_first() -> None:
    store = ResponseStore(MemoryBackend(), 60)
    await store.save("r1", stored("k", "one"))
    await store.save("r2", stored("k", "two", "r1", upstream="openai"))
    conversation = await store.conversation("r2", "k")
    texts = [item["content"][0]["text"] for item in conversation.items]
    assert texts == ["one", "re: one", "two", "re: two"]
    assert conversation.upstream == "openai"
    await store.backend.delete("r1")  # its older part expired: the rest still counts
    assert len((await store.conversation("r2", "k")).items) == 2
    for unknown in ("r1", "nope"):
        with pytest.raises(InvalidRequestError) as caught:
            await store.conversation(unknown, "k")
        assert caught.value.param == "previous_response_id"
    with pytest.raises(InvalidRequestError):
        await store.conversation("r2", "someone-else")


async def test_a_loop_in_the_chain_ends_the_walk() -> None:
    store = ResponseStore(MemoryBackend(), 60)
    await store.save("r1", stored("k", "one", "r2"))
    await store.save("r2", stored("k", "two", "r1"))
    assert len((await store.conversation("r2", "k")).items) == 4


class BrokenBackend(MemoryBackend):
    async def get(self, key: str) -> bytes | None:
        raise OSError("disk gone")

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        raise OSError("disk gone")


async def test_a_storage_fault_is_a_503_on_reads_and_a_warning_on_writes() -> None:
    store = ResponseStore(BrokenBackend(), 60)
    await store.save("r1", stored("k", "one"))  # logged, not raised: the answer was given
    with pytest.raises(ServiceUnavailableError):
        await store.load("r1", "k")


@pytest.mark.parametrize(
    ("section", "limits", "kind"),
    [
        ({}, "memory://", DiskBackend),
        ({}, "redis://127.0.0.1:1/0", RedisBackend),
        ({"storage": "memory"}, "redis://127.0.0.1:1/0", MemoryBackend),
        ({"storage": "disk", "path": "elsewhere"}, "memory://", DiskBackend),
    ],
)
async def test_the_backend_follows_the_policy(
    section: dict[str, Any], limits: str, kind: type, tmp_path: Path
) -> None:
    policy = {"responses": {**section, "ttl": "2h"}, "limits": {"storage": limits},
              "cache": {"path": str(tmp_path / "cache")}}  # fmt: skip
    store = build_store(load_dict(policy).config)
    assert isinstance(store.backend, kind) and store.ttl == 7200
    if isinstance(store.backend, DiskBackend):
        expected = section.get("path") or str(tmp_path / "cache" / "responses")
        assert store.backend.directory == Path(expected)
    await store.close()
