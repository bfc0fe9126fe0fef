"""The store's contract, run against both backends: migrations, keys with their revision and
audit entries, usage totals per group and time range, and failures as StoreUnavailableError."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from proxy.admin.records import AuditEntry, KeyRecord, UsageQuery, UsageRow
from proxy.admin.schema import MIGRATIONS, Migration, pending
from proxy.admin.store import (
    AdminStore,
    KeyExistsError,
    KeyMissingError,
    StoreUnavailableError,
    open_store,
    store_url,
)
from proxy.config import AdminConfig, BudgetConfig, LimitSpec

RECORD = KeyRecord(
    name="team-a",
    digest="ab" * 32,
    models=("gpt-4o*", "chat"),
    limits=LimitSpec(requests="10/minute", concurrency=2),
    budget=BudgetConfig(usd=5, period="day"),
    expires_at=1_900_000_000.0,
    metadata={"owner": "search"},
    created_at=1_800_000_000.0,
    updated_at=1_800_000_000.0,
)


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def row(when: str, key: str, model: str, route: str, spend: float, status: int = 200) -> UsageRow:
    return UsageRow(at(when), "req", key, model, route, "chat", status, 10, 20, spend, 1.5, "miss")


async def test_keys_round_trip_with_revision_and_audit(store: AdminStore) -> None:
    start = await store.revision()
    assert start == 0
    revision = await store.create_key(RECORD, AuditEntry("create", "team-a", {"models": ["x"]}))
    assert revision == 1
    snapshot = await store.snapshot()
    assert snapshot.revision == 1 and snapshot.keys == [RECORD]
    revision, changed = await store.update_key(
        "team-a",
        {"models": ("*",), "limits": None, "metadata": {}},
        AuditEntry("update", "team-a", {"limits": None}, at=1_850_000_000.0),
    )
    assert revision == 2 and changed.models == ("*",) and changed.limits is None
    assert changed.budget == RECORD.budget and changed.updated_at == 1_850_000_000
    assert await store.delete_key("team-a", AuditEntry("delete", "team-a")) == 3
    assert (await store.snapshot()).keys == []
    entries = await store.audit(10)
    assert [e.action for e in entries] == ["delete", "update", "create"]
    assert entries[1].changes == {"limits": None} and entries[0].id is not None
    assert [e.action for e in await store.audit(1, key="team-a")] == ["delete"]
    assert await store.audit(10, key="nobody") == []


async def test_names_are_unique_and_missing_keys_are_said(store: AdminStore) -> None:
    await store.create_key(RECORD, AuditEntry("create", "team-a"))
    with pytest.raises(KeyExistsError):
        await store.create_key(RECORD, AuditEntry("create", "team-a"))
    with pytest.raises(KeyMissingError):
        await store.update_key("nobody", {"models": ("*",)}, AuditEntry("update", "nobody"))
    with pytest.raises(KeyMissingError):
        await store.delete_key("nobody", AuditEntry("delete", "nobody"))
    assert await store.revision() == 1, "a refused change changes nothing"
    assert len(await store.audit(10)) == 1


async def test_usage_totals_per_group_and_time_range(store: AdminStore) -> None:
    await store.add_usage(
        [
            row("2026-12-01T10:00:00", "a", "chat", "up/x", 0.5),
            row("2026-12-01T23:59:59", "a", "chat", "up/y", 0.25, status=502),
            row("2026-12-02T00:00:00", "b", "embed", "up/x", 1.0),
        ]
    )
    everything = (at("2026-11-01T00:00:00"), at("2027-01-01T00:00:00"))
    by_day = await store.usage(UsageQuery("day", *everything))
    assert [(t.group, t.requests, t.spend_usd) for t in by_day] == [
        ("2026-12-01", 2, 0.75),
        ("2026-12-02", 1, 1.0),
    ]
    by_key = {t.group: t for t in await store.usage(UsageQuery("key", *everything))}
    assert by_key["a"].prompt_tokens == 20 and by_key["a"].completion_tokens == 40
    assert {t.group for t in await store.usage(UsageQuery("route", *everything))} == {
        "up/x",
        "up/y",
    }
    assert [t.group for t in await store.usage(UsageQuery("model", *everything))] == [
        "chat",
        "embed",
    ]
    first_day = await store.usage(
        UsageQuery("key", at("2026-12-01T00:00:00"), at("2026-12-02T00:00:00"))
    )
    assert [(t.group, t.requests) for t in first_day] == [("a", 2)], "until is exclusive"
    assert await store.usage(UsageQuery("key", 0, 1)) == []


async def test_opening_again_migrates_nothing(store_url: str) -> None:
    for _ in range(2):
        store = open_store(store_url)
        await store.open()
        await store.open()
        assert await store.revision() == 0
        await store.close()


async def test_a_new_migration_is_applied_to_an_existing_store(store_url: str) -> None:
    store = open_store(store_url)
    await store.open()
    await store.create_key(RECORD, AuditEntry("create", "team-a"))
    await store.close()
    later = (
        *MIGRATIONS,
        Migration(2, "a notes column", ("ALTER TABLE llm_proxy_keys ADD COLUMN notes TEXT",)),
    )
    backend = type(open_store(store_url))
    upgraded = backend(store_url, migrations=later)  # type: ignore[call-arg]
    await upgraded.open()
    assert (await upgraded.snapshot()).keys == [RECORD], "the data stays"
    await upgraded.close()


def test_migration_versions_must_increase() -> None:
    assert [m.version for m in pending(0)] == [1]
    assert pending(1) == []
    with pytest.raises(ValueError):
        pending(0, (MIGRATIONS[0], MIGRATIONS[0]))


async def test_an_unreachable_store_is_unavailable(tmp_path: Path, postgres: bool) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    urls = [f"sqlite:///{blocker / 'admin.db'}"]
    if postgres:
        urls.append("postgresql://postgres@127.0.0.1:1/none?sslmode=disable")
    for url in urls:
        store = open_store(url)
        with pytest.raises(StoreUnavailableError):
            await store.open()
        with pytest.raises(StoreUnavailableError):
            await store.revision()
        await store.close()


def test_the_default_store_is_a_file_in_the_data_directory() -> None:
    assert store_url(AdminConfig(key="k"), ".cache/llm-proxy") == (
        "sqlite:///.cache/llm-proxy/admin.db"
    )
    assert store_url(AdminConfig(key="k"), "/var/cache/llm-proxy") == (
        "sqlite:////var/cache/llm-proxy/admin.db"
    )
    assert store_url(AdminConfig(key="k", store="postgresql://db/x"), "/x") == "postgresql://db/x"
