"""The key registry: what it publishes to the request path, how it follows the store (its own
writes at once, others' through the revision), and that an outage keeps the last keys."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from proxy.admin.records import AuditEntry, KeyRecord, UsageQuery, UsageRow, UsageTotal
from proxy.admin.registry import KeyRegistry
from proxy.admin.store import AdminStore, KeySnapshot, StoreUnavailableError, open_store
from proxy.keys import ClientKey, authenticate


def record(name: str, secret: str, **fields: Any) -> KeyRecord:
    return KeyRecord(name, hashlib.sha256(secret.encode()).hexdigest(), **fields)


class ScriptedStore(AdminStore):
    """A store whose snapshot and availability the test sets."""

    kind = "scripted"
    refresh_every = 0.05

    def __init__(self, url: str = "scripted://") -> None:
        super().__init__(url)
        self.current = KeySnapshot(0, [])
        self.down = False
        self.reads = 0

    @property
    def opened(self) -> bool:
        return True

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailableError("scripted: down")

    async def snapshot(self) -> KeySnapshot:
        self._check()
        self.reads += 1
        return self.current

    async def revision(self) -> int:
        self._check()
        return self.current.revision

    async def create_key(self, record: KeyRecord, audit: AuditEntry) -> int:
        raise NotImplementedError

    async def update_key(
        self, name: str, fields: Mapping[str, Any], audit: AuditEntry
    ) -> tuple[int, KeyRecord]:
        raise NotImplementedError

    async def delete_key(self, name: str, audit: AuditEntry) -> int:
        raise NotImplementedError

    async def add_usage(self, rows: Sequence[UsageRow]) -> None:
        raise NotImplementedError

    async def usage(self, query: UsageQuery) -> list[UsageTotal]:
        raise NotImplementedError

    async def audit(self, limit: int, key: str | None = None) -> list[AuditEntry]:
        raise NotImplementedError


class Published:
    def __init__(self) -> None:
        self.keys: dict[bytes, ClientKey] = {}
        self.failures = 0
        self.reserved: set[str] = set()

    def registry(self, store: AdminStore) -> KeyRegistry:
        def publish(keys: dict[bytes, ClientKey]) -> None:
            self.keys = keys

        def failed(_: StoreUnavailableError) -> None:
            self.failures += 1

        return KeyRegistry(store, publish, lambda: self.reserved, failed)

    def caller(self, secret: str) -> str:
        return authenticate(f"Bearer {secret}", {}, self.keys).name


async def test_it_publishes_the_store_keys_compiled_for_the_request_path() -> None:
    store, seen = ScriptedStore(), Published()
    registry = seen.registry(store)
    store.current = KeySnapshot(3, [record("a", "sk-a", models=("chat",)), record("b", "sk-b")])
    assert await registry.check_safely()
    assert seen.caller("sk-a") == "a" and seen.caller("sk-b") == "b"
    key = next(k for k in seen.keys.values() if k.name == "a")
    assert key.runtime and key.allows("chat") and not key.allows("other")
    assert registry.health()["keys_loaded"] == 2 and registry.revision == 3


async def test_a_file_key_name_shadows_a_runtime_key() -> None:
    store, seen = ScriptedStore(), Published()
    registry = seen.registry(store)
    store.current = KeySnapshot(1, [record("team", "sk-team")])
    await registry.check_safely()
    seen.reserved = {"team"}
    registry.publish()
    assert seen.keys == {}


async def test_its_own_writes_apply_at_once_and_stale_reads_are_ignored() -> None:
    store, seen = ScriptedStore(), Published()
    registry = seen.registry(store)
    await registry.check_safely()
    registry.put(1, record("new", "sk-new"))
    assert seen.caller("sk-new") == "new"
    # a read that began before the write landed must not take the key away again
    store.current = KeySnapshot(0, [])
    await registry.refresh()
    assert seen.caller("sk-new") == "new"
    registry.remove(2, "new")
    assert seen.keys == {}


async def test_an_outage_keeps_the_last_keys_and_is_counted() -> None:
    store, seen = ScriptedStore(), Published()
    registry = seen.registry(store)
    store.current = KeySnapshot(1, [record("a", "sk-a")])
    await registry.check_safely()
    store.down = True
    assert not await registry.check_safely()
    health = registry.health()
    assert health["reachable"] is False and health["last_error"] == "scripted: down"
    assert seen.failures == 1 and seen.caller("sk-a") == "a"
    store.down = False
    store.current = KeySnapshot(2, [])
    assert await registry.check_safely()
    assert seen.keys == {} and registry.health()["reachable"] is True


async def test_the_background_task_follows_another_writer(tmp_path: Any) -> None:
    """Two registries on one SQLite file (two server processes): a key written through one
    store reaches the other by its revision poll."""
    url = f"sqlite:///{tmp_path / 'admin.db'}"
    writer, reader = open_store(url), open_store(url)
    await writer.open()
    seen = Published()
    registry = seen.registry(reader)
    await registry.check_safely()
    registry.start()
    try:
        await writer.create_key(record("late", "sk-late"), AuditEntry("create", "late"))
        async with asyncio.timeout(3):
            while not seen.keys:
                await asyncio.sleep(0.02)
        assert seen.caller("sk-late") == "late"
    finally:
        await registry.stop()
        await writer.close()
        await reader.close()


async def test_a_notification_wakes_it_at_once() -> None:
    store, seen = ScriptedStore(), Published()
    store.refresh_every = 60
    registry = seen.registry(store)
    await registry.check_safely()
    registry.start()
    try:
        store.current = KeySnapshot(1, [record("pushed", "sk-pushed")])
        registry.notified(1)
        async with asyncio.timeout(1):
            while not seen.keys:
                await asyncio.sleep(0.01)
    finally:
        await registry.stop()
