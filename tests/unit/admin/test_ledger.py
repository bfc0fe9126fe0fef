"""The usage ledger: a bounded queue (drops counted), batches, a refused batch kept and written
first, everything queued written at close, and the writer never blocking `record`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

from proxy.accounting import RequestRecord
from proxy.admin.ledger import UsageLedger
from proxy.admin.records import UsageQuery, UsageRow
from proxy.admin.store import AdminStore, StoreUnavailableError, open_store


class Rows:
    """A stand-in store for what the ledger uses: add_usage, failing on demand."""

    def __init__(self) -> None:
        self.batches: list[list[UsageRow]] = []
        self.down = False

    async def add_usage(self, rows: Sequence[UsageRow]) -> None:
        await asyncio.sleep(0)
        if self.down:
            raise StoreUnavailableError("down")
        self.batches.append(list(rows))


def settled(number: int, caller: str = "team-a") -> RequestRecord:
    record = RequestRecord(f"req-{number}", time.perf_counter(), "chat")
    record.caller, record.model, record.route = caller, "chat", "up/chat"
    record.prompt_tokens, record.completion_tokens, record.spend_usd = 3, 4, 0.001
    return record


def ledger(rows: Rows, **options: float) -> tuple[UsageLedger, list[StoreUnavailableError]]:
    failures: list[StoreUnavailableError] = []
    made = UsageLedger(rows, failures.append, **options)  # a stand-in for the store
    return made, failures


async def test_a_full_queue_drops_and_counts() -> None:
    made, _ = ledger(Rows(), max_queue=3, batch=10)
    for number in range(5):
        made.record(settled(number))
    assert made.queued == 3 and made.dropped == 2


async def test_batches_are_written_in_order() -> None:
    rows = Rows()
    made, _ = ledger(rows, batch=2)
    for number in range(5):
        made.record(settled(number))
    while made.queued:
        assert await made.flush()
    assert [len(batch) for batch in rows.batches] == [2, 2, 1]
    assert [r.request_id for b in rows.batches for r in b] == [f"req-{n}" for n in range(5)]
    assert made.written == 5 and made.health()["last_write"] is not None
    first = rows.batches[0][0]
    assert (first.key_name, first.prompt_tokens, first.spend_usd) == ("team-a", 3, 0.001)


async def test_a_refused_batch_is_kept_and_written_first() -> None:
    rows = Rows()
    made, failures = ledger(rows, batch=2)
    for number in range(3):
        made.record(settled(number))
    rows.down = True
    assert not await made.flush()
    assert made.queued == 3 and len(failures) == 1
    rows.down = False
    made.record(settled(3))
    while made.queued:
        assert await made.flush()
    assert [r.request_id for b in rows.batches for r in b] == [f"req-{n}" for n in range(4)]


async def test_the_writer_flushes_on_its_own_and_close_writes_the_rest() -> None:
    rows = Rows()
    made, _ = ledger(rows, batch=3, interval=0.05)
    made.start()
    for number in range(4):  # one full batch now, one row after the interval
        made.record(settled(number))
    async with asyncio.timeout(2):
        while made.written < 4:
            await asyncio.sleep(0.01)
    for number in range(4, 6):
        made.record(settled(number))
    await made.close()
    assert made.written == 6 and made.queued == 0


async def test_close_gives_up_when_the_store_is_down() -> None:
    rows = Rows()
    made, _ = ledger(rows, interval=0.05)
    made.start()
    rows.down = True
    made.record(settled(1))
    async with asyncio.timeout(2):
        await made.close()
    assert made.queued == 1 and made.written == 0


async def test_rows_land_in_a_real_store(tmp_path: Path) -> None:
    store: AdminStore = open_store(f"sqlite:///{tmp_path}/admin.db")
    await store.open()
    made = UsageLedger(store, lambda _: None)
    made.start()
    for number in range(250):
        made.record(settled(number, caller=f"key-{number % 2}"))
    await made.close()
    totals = await store.usage(UsageQuery("key", 0, time.time() + 60))
    assert [(t.group, t.requests) for t in totals] == [("key-0", 125), ("key-1", 125)]
    await store.close()
