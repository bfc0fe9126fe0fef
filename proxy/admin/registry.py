"""The runtime keys in memory, kept current from the store.

The request path reads only the mapping this publishes (digest -> ClientKey); the registry
replaces it whole on every change. Changes arrive three ways: this replica's own writes
(applied before the admin call answers), the store's push (PostgreSQL NOTIFY) and a poll of
the store's key revision every few seconds, with a full reload now and then as a safety net.
While the store is unreachable the last keys known keep serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Collection, Mapping

from loguru import logger

from proxy.admin.records import KeyRecord
from proxy.admin.store import AdminStore, KeySnapshot, StoreUnavailableError
from proxy.keys import ClientKey, compile_key

FULL_RELOAD_EVERY = 60.0  # seconds: the whole set is read again even when nothing was heard
RETRY_EVERY = 1.0  # seconds between attempts while the store is unreachable

Publish = Callable[[dict[bytes, ClientKey]], None]


def client_key(record: KeyRecord) -> ClientKey:
    return compile_key(
        record.name,
        bytes.fromhex(record.digest),
        list(record.models),
        record.limits,
        record.budget,
        record.expires_at,
        runtime=True,
    )


class KeyRegistry:
    def __init__(
        self,
        store: AdminStore,
        publish: Publish,
        reserved: Callable[[], Collection[str]],
        failed: Callable[[StoreUnavailableError], None],
    ) -> None:
        self.store = store
        self._publish = publish
        self._reserved = reserved  # names of file keys: they win over a runtime key's
        self._failed = failed
        self.records: dict[str, KeyRecord] = {}
        self._compiled: dict[str, tuple[KeyRecord, ClientKey]] = {}
        self.revision = -1  # of the last consistent set read from the store
        self._floor = -1  # highest revision applied, from a snapshot or a write of our own
        self.reachable = False
        self.last_refresh: float | None = None  # epoch seconds of the last good read
        self.last_error: str | None = None
        self._last_full = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- what the admin API and the replica's own writes do --------------------------------

    def get(self, name: str) -> KeyRecord | None:
        return self.records.get(name)

    def compiled(self, name: str) -> tuple[KeyRecord, ClientKey]:
        """The key and its compiled form, as the request path sees it (KeyError if absent)."""
        record = self.records[name]
        cached = self._compiled.get(name)
        return (
            cached if cached is not None and cached[0] == record else (record, client_key(record))
        )

    def put(self, revision: int, record: KeyRecord) -> None:
        self.records[record.name] = record
        self._applied(revision)

    def remove(self, revision: int, name: str) -> None:
        self.records.pop(name, None)
        self._applied(revision)

    def _applied(self, revision: int) -> None:
        if revision == self.revision + 1:
            self.revision = revision
        else:  # someone else changed keys in between: read them all
            self._wake.set()
        self._floor = max(self._floor, revision)
        self.publish()

    def publish(self) -> None:
        """Hand the request path a new mapping (file keys' names shadow runtime keys)."""
        reserved = set(self._reserved())
        compiled: dict[str, tuple[KeyRecord, ClientKey]] = {}
        for name, record in self.records.items():
            cached = self._compiled.get(name)
            compiled[name] = (
                cached if cached and cached[0] == record else (record, client_key(record))
            )
        self._compiled = compiled
        self._publish(
            {key.digest: key for name, (_, key) in compiled.items() if name not in reserved}
        )

    # -- reading the store -----------------------------------------------------------------

    async def refresh(self) -> None:
        """Read every key; raises StoreUnavailableError."""
        snapshot = await self.store.snapshot()
        self._took(snapshot)
        self._last_full = time.monotonic()

    def _took(self, snapshot: KeySnapshot) -> None:
        if snapshot.revision < self._floor:  # read before a write of ours landed
            self._wake.set()
            return
        self.records = {record.name: record for record in snapshot.keys}
        self.revision = self._floor = snapshot.revision
        self.publish()

    def notified(self, revision: int) -> None:
        """The store says keys changed (any replica)."""
        if revision > self.revision:
            self._wake.set()

    async def check(self) -> None:
        """One round: connect and listen where needed, then read what changed."""
        store, full = self.store, False
        if not store.opened:
            await store.open()
            full = True
        if store.can_watch and not store.watching:
            await store.watch(self.notified, self._wake.set)
            full = True  # what was said while nobody listened is lost
        due = full or time.monotonic() - self._last_full >= FULL_RELOAD_EVERY
        if due or await store.revision() != self.revision:
            await self.refresh()
        self.reachable, self.last_refresh, self.last_error = True, time.time(), None

    async def check_safely(self) -> bool:
        """`check`, a failure logged (once per outage) and counted instead of raised."""
        was_down = self.last_error is not None
        try:
            await self.check()
        except StoreUnavailableError as exc:
            if not was_down:
                logger.error("admin store unreachable; the last keys known keep serving: {}", exc)
            self.reachable, self.last_error = False, str(exc)
            self._failed(exc)
            return False
        if was_down:
            logger.info("admin store reachable again: {} runtime keys", len(self.records))
        return True

    # -- the background task ---------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            self._wake.clear()  # a wake-up during the check makes the next one come at once
            ok = await self.check_safely()
            pause = self.store.refresh_every if ok else RETRY_EVERY
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def health(self) -> Mapping[str, object]:
        return {
            "reachable": self.reachable,
            "last_refresh": self.last_refresh,
            "last_error": self.last_error,
            "keys_loaded": len(self.records),
            "revision": self.revision,
        }
