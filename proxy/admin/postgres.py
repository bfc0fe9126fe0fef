"""The PostgreSQL store (asyncpg): keys and usage shared by every replica.

A key change bumps the revision and sends `NOTIFY llm_proxy_keys, '<revision>'` in its
transaction, so every replica listening hears of it as it commits. One connection of its own
listens; the others come from a small pool. The driver's failures become
`StoreUnavailableError` in `_translated`, the one place that knows them.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from proxy.admin.records import (
    CHANGEABLE,
    KEY_COLUMNS,
    USAGE_COLUMNS,
    AuditEntry,
    KeyRecord,
    UsageQuery,
    UsageRow,
    UsageTotal,
    column_value,
    key_columns,
    key_from_columns,
)
from proxy.admin.schema import MIGRATIONS, VERSION_TABLE, Migration, pending, statements
from proxy.admin.store import (
    AdminStore,
    Changed,
    KeyExistsError,
    KeyMissingError,
    KeySnapshot,
    Lost,
    StoreUnavailableError,
)

if TYPE_CHECKING:
    import asyncpg

CHANNEL = "llm_proxy_keys"
MIGRATION_LOCK = 7_246_815_303  # pg_advisory_xact_lock id: one replica migrates at a time
TIMEOUT = 5.0  # seconds for a connection or a statement
GROUP_EXPRESSIONS = {
    "key": "key_name",
    "model": "model",
    "route": "route",
    "day": "to_char(to_timestamp(at) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
}
_KEYS = ", ".join(KEY_COLUMNS)
_PLACEHOLDERS = ", ".join(f"${n}" for n in range(1, len(KEY_COLUMNS) + 1))
_BUMP = "UPDATE llm_proxy_revision SET value = value + 1 WHERE id = 1 RETURNING value"


@asynccontextmanager
async def _translated() -> AsyncIterator[None]:
    import asyncpg

    try:
        yield
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        raise StoreUnavailableError(f"postgresql: {type(exc).__name__}: {exc}") from None


class PostgresStore(AdminStore):
    kind = "postgresql"
    refresh_every = 2.0

    def __init__(self, url: str, migrations: tuple[Migration, ...] = MIGRATIONS) -> None:
        super().__init__(url)
        self.migrations = migrations
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None

    @property
    def opened(self) -> bool:
        return self._pool is not None

    @property
    def can_watch(self) -> bool:
        return True

    @property
    def watching(self) -> bool:
        return self._listener is not None and not self._listener.is_closed()

    async def open(self) -> None:
        import asyncpg

        if self._pool is not None:
            return
        async with _translated():
            pool = await asyncpg.create_pool(
                self.url, min_size=0, max_size=4, timeout=TIMEOUT, command_timeout=TIMEOUT
            )
            try:
                await self._migrate(pool)
            except BaseException:
                pool.terminate()
                raise
        self._pool = pool

    async def _migrate(self, pool: asyncpg.Pool) -> None:
        async with pool.acquire() as db, db.transaction():
            await db.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await db.execute(VERSION_TABLE)
            applied = await db.fetchval(
                "SELECT COALESCE(MAX(version), 0) FROM llm_proxy_schema_version"
            )
            for migration in pending(int(applied), self.migrations):
                for statement in statements(migration, "BIGINT GENERATED ALWAYS AS IDENTITY"):
                    await db.execute(statement)
                await db.execute(
                    "INSERT INTO llm_proxy_schema_version VALUES ($1, $2, $3)",
                    migration.version,
                    migration.about,
                    time.time(),
                )

    async def close(self) -> None:
        listener, pool = self._listener, self._pool
        self._listener = self._pool = None
        if listener is not None and not listener.is_closed():
            listener.terminate()
        if pool is not None:
            pool.terminate()

    async def watch(self, changed: Changed, lost: Lost) -> None:
        import asyncpg

        def notified(_: object, __: int, ___: str, payload: object) -> None:
            changed(int(str(payload)))

        async with _translated():
            listener = await asyncpg.connect(self.url, timeout=TIMEOUT)
            listener.add_termination_listener(lambda _: lost())
            await listener.add_listener(CHANNEL, notified)
        old, self._listener = self._listener, listener
        if old is not None and not old.is_closed():
            old.terminate()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        if self._pool is None:
            raise StoreUnavailableError("postgresql: the store is not open")
        async with _translated(), self._pool.acquire() as db:
            yield db

    async def snapshot(self) -> KeySnapshot:
        async with (
            self._connection() as db,
            db.transaction(isolation="repeatable_read", readonly=True),
        ):
            revision = await db.fetchval("SELECT value FROM llm_proxy_revision WHERE id = 1")
            rows = await db.fetch(f"SELECT {_KEYS} FROM llm_proxy_keys ORDER BY name")
        return KeySnapshot(int(revision), [key_from_columns(row) for row in rows])

    async def revision(self) -> int:
        async with self._connection() as db:
            return int(await db.fetchval("SELECT value FROM llm_proxy_revision WHERE id = 1"))

    async def create_key(self, record: KeyRecord, audit: AuditEntry) -> int:
        import asyncpg

        async with self._connection() as db, db.transaction():
            try:
                await db.execute(
                    f"INSERT INTO llm_proxy_keys ({_KEYS}) VALUES ({_PLACEHOLDERS})",
                    *key_columns(record),
                )
            except asyncpg.UniqueViolationError:
                raise KeyExistsError(record.name) from None
            return await _changed(db, audit)

    async def update_key(
        self, name: str, fields: Mapping[str, Any], audit: AuditEntry
    ) -> tuple[int, KeyRecord]:
        assert set(fields) <= CHANGEABLE, fields
        columns = [*fields, "updated_at"]
        assignments = ", ".join(f"{column} = ${n}" for n, column in enumerate(columns, 1))
        values = [column_value(column, value) for column, value in fields.items()]
        sql = (
            f"UPDATE llm_proxy_keys SET {assignments} WHERE name = ${len(columns) + 1} "
            f"RETURNING {_KEYS}"
        )
        async with self._connection() as db, db.transaction():
            row = await db.fetchrow(sql, *values, audit.at, name)
            if row is None:
                raise KeyMissingError(name)
            return await _changed(db, audit), key_from_columns(row)

    async def delete_key(self, name: str, audit: AuditEntry) -> int:
        async with self._connection() as db, db.transaction():
            deleted = await db.fetchval(
                "DELETE FROM llm_proxy_keys WHERE name = $1 RETURNING name", name
            )
            if deleted is None:
                raise KeyMissingError(name)
            return await _changed(db, audit)

    async def add_usage(self, rows: Sequence[UsageRow]) -> None:
        async with self._connection() as db:
            await db.copy_records_to_table(
                "llm_proxy_usage", records=rows, columns=list(USAGE_COLUMNS)
            )

    async def usage(self, query: UsageQuery) -> list[UsageTotal]:
        group = GROUP_EXPRESSIONS[query.group_by]
        sql = (
            f"SELECT {group} AS grp, COUNT(*), COALESCE(SUM(prompt_tokens), 0), "
            "COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(spend_usd), 0) "
            "FROM llm_proxy_usage WHERE at >= $1 AND at < $2 GROUP BY grp ORDER BY grp"
        )
        async with self._connection() as db:
            rows = await db.fetch(sql, query.since, query.until)
        return [UsageTotal(str(g), int(n), int(p), int(c), float(s)) for g, n, p, c, s in rows]

    async def audit(self, limit: int, key: str | None = None) -> list[AuditEntry]:
        where = "WHERE key_name = $2 " if key is not None else ""
        sql = (
            f"SELECT id, at, action, key_name, changes FROM llm_proxy_audit {where}"
            "ORDER BY id DESC LIMIT $1"
        )
        args = (limit, key) if key is not None else (limit,)
        async with self._connection() as db:
            rows = await db.fetch(sql, *args)
        return [AuditEntry.from_columns(row) for row in rows]


async def _changed(db: asyncpg.Connection, audit: AuditEntry) -> int:
    """The revision bumped, every replica told (at commit) and the change audited."""
    revision = int(await db.fetchval(_BUMP))
    await db.execute("SELECT pg_notify($1, $2)", CHANNEL, str(revision))
    await db.execute(
        "INSERT INTO llm_proxy_audit (at, action, key_name, changes) VALUES ($1, $2, $3, $4)",
        audit.at,
        audit.action,
        audit.key,
        audit.changes_json(),
    )
    return revision
