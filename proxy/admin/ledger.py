"""The usage ledger: one row per settled request, written in batches off the request path.

`record` (a settlement listener) only appends to a bounded queue: when the queue is full the
row is dropped and counted. A writer task flushes a batch when `batch` rows are waiting or
every `interval` seconds; a batch the store refused is kept and tried again first (new rows
queue behind it, within the bound). On shutdown everything queued is written. A crash loses
at most what was queued and not yet written: one batch, or `interval` seconds of requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from proxy.accounting import RequestRecord
from proxy.admin.records import UsageRow, usage_row
from proxy.admin.store import AdminStore, StoreUnavailableError

MAX_QUEUE = 50_000  # rows waiting at most (a few MiB); more are dropped and counted
BATCH = 1_000  # rows per write
INTERVAL = 0.5  # seconds between flushes when fewer than BATCH rows wait
CLOSE_TIMEOUT = 10.0  # seconds given to the last flushes at shutdown


class UsageLedger:
    def __init__(
        self,
        store: AdminStore,
        failed: Callable[[StoreUnavailableError], None],
        max_queue: int = MAX_QUEUE,
        batch: int = BATCH,
        interval: float = INTERVAL,
    ) -> None:
        self.store = store
        self._failed = failed
        self.max_queue, self.batch, self.interval = max_queue, batch, interval
        self._queue: deque[UsageRow] = deque()
        self._retry: list[UsageRow] = []  # a batch the store refused, written first
        self.dropped = 0
        self.written = 0
        self.last_write: float | None = None
        self._due = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        return len(self._queue) + len(self._retry)

    def record(self, record: RequestRecord) -> None:
        """A settled request (a Settlement listener: never blocks)."""
        if self.queued >= self.max_queue:
            self.dropped += 1
            return
        self._queue.append(usage_row(record, time.time(), time.perf_counter() - record.started))
        if len(self._queue) >= self.batch:
            self._due.set()

    async def flush(self) -> bool:
        """Write one batch; False when the store refused it (it is kept for the next try)."""
        rows = self._retry or [
            self._queue.popleft() for _ in range(min(self.batch, len(self._queue)))
        ]
        self._retry = []
        if not rows:
            return True
        try:
            await self.store.add_usage(rows)
        except StoreUnavailableError as exc:
            self._retry = rows
            self._failed(exc)
            return False
        self.written += len(rows)
        self.last_write = time.time()
        return True

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._due.wait(), self.interval)
            self._due.clear()
            while await self.flush() and len(self._queue) >= self.batch and not self._closing:
                pass

    async def close(self) -> None:
        """Let the writer finish its batch (a write is never cut), then write what is queued
        until the store refuses or the time is up."""
        self._closing = True
        self._due.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                if self._task is not None:
                    await self._task
                while self.queued and await self.flush():
                    pass
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = None

    def health(self) -> dict[str, Any]:
        return {
            "queued": self.queued,
            "dropped": self.dropped,
            "written": self.written,
            "last_write": self.last_write,
        }
