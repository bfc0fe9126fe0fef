"""The SQLite store: one file, nothing to install (the default).

One connection, used by one thread of its own, so the event loop never waits on the disk.
WAL mode lets several server processes share the file; each one's key registry notices the
others' changes through the key revision it polls every second.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

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
    KeyExistsError,
    KeyMissingError,
    KeySnapshot,
    StoreUnavailableError,
)

T = TypeVar("T")
GROUP_EXPRESSIONS = {
    "key": "key_name",
    "model": "model",
    "route": "route",
    "day": "strftime('%Y-%m-%d', at, 'unixepoch')",
}
_KEYS = ", ".join(KEY_COLUMNS)
_INSERT_KEY = f"INSERT INTO llm_proxy_keys ({_KEYS}) VALUES ({', '.join('?' * len(KEY_COLUMNS))})"
_INSERT_USAGE = (
    f"INSERT INTO llm_proxy_usage ({', '.join(USAGE_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(USAGE_COLUMNS))})"
)
_BUMP = "UPDATE llm_proxy_revision SET value = value + 1 WHERE id = 1 RETURNING value"


def sqlite_path(url: str) -> Path:
    """sqlite:///relative/file.db or sqlite:////absolute/file.db."""
    return Path(url.removeprefix("sqlite:///"))


@contextmanager
def transaction(db: sqlite3.Connection, immediate: bool = False) -> Iterator[sqlite3.Connection]:
    """One transaction; IMMEDIATE takes the write lock first (no upgrade deadlock)."""
    db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


class SQLiteStore(AdminStore):
    kind = "sqlite"
    refresh_every = 0.5  # other processes on the file must see a change well within a second

    def __init__(self, url: str, migrations: tuple[Migration, ...] = MIGRATIONS) -> None:
        super().__init__(url)
        self.path = sqlite_path(url)
        self.migrations = migrations
        self._db: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="llm-proxy-admin-sqlite")

    @property
    def opened(self) -> bool:
        return self._db is not None

    async def _run(self, work: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, work)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailableError(f"sqlite: {exc}") from None

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreUnavailableError("sqlite: the store is not open")
        return self._db

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        if self._db is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._migrate(db)
        except BaseException:
            db.close()
            raise
        self._db = db

    def _migrate(self, db: sqlite3.Connection) -> None:
        db.execute(VERSION_TABLE)
        for migration in pending(self._applied(db), self.migrations):
            with transaction(db, immediate=True):
                if self._applied(db) >= migration.version:  # another process got there first
                    continue
                for statement in statements(migration, "INTEGER PRIMARY KEY"):
                    db.execute(statement)
                db.execute(
                    "INSERT INTO llm_proxy_schema_version VALUES (?, ?, ?)",
                    (migration.version, migration.about, time.time()),
                )

    @staticmethod
    def _applied(db: sqlite3.Connection) -> int:
        row = db.execute("SELECT COALESCE(MAX(version), 0) FROM llm_proxy_schema_version")
        return int(row.fetchone()[0])

    async def close(self) -> None:
        def close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await self._run(close)
        self._thread.shutdown(wait=True)

    async def snapshot(self) -> KeySnapshot:
        def read() -> KeySnapshot:
            with transaction(self._connection()) as db:
                revision = _revision(db)
                rows = db.execute(f"SELECT {_KEYS} FROM llm_proxy_keys ORDER BY name").fetchall()
            return KeySnapshot(revision, [key_from_columns(row) for row in rows])

        return await self._run(read)

    async def revision(self) -> int:
        return await self._run(lambda: _revision(self._connection()))

    async def create_key(self, record: KeyRecord, audit: AuditEntry) -> int:
        def write() -> int:
            with transaction(self._connection(), immediate=True) as db:
                try:
                    db.execute(_INSERT_KEY, key_columns(record))
                except sqlite3.IntegrityError:
                    raise KeyExistsError(record.name) from None
                return _changed(db, audit)

        return await self._run(write)

    async def update_key(
        self, name: str, fields: Mapping[str, Any], audit: AuditEntry
    ) -> tuple[int, KeyRecord]:
        assert set(fields) <= CHANGEABLE, fields
        assignments = ", ".join(f"{column} = ?" for column in [*fields, "updated_at"])
        values = [column_value(column, value) for column, value in fields.items()]

        def write() -> tuple[int, KeyRecord]:
            with transaction(self._connection(), immediate=True) as db:
                row = db.execute(
                    f"UPDATE llm_proxy_keys SET {assignments} WHERE name = ? RETURNING {_KEYS}",
                    (*values, audit.at, name),
                ).fetchone()
                if row is None:
                    raise KeyMissingError(name)
                return _changed(db, audit), key_from_columns(row)

        return await self._run(write)

    async def delete_key(self, name: str, audit: AuditEntry) -> int:
        def write() -> int:
            with transaction(self._connection(), immediate=True) as db:
                deleted = db.execute("DELETE FROM llm_proxy_keys WHERE name = ?", (name,))
                if deleted.rowcount == 0:
                    raise KeyMissingError(name)
                return _changed(db, audit)

        return await self._run(write)

    async def add_usage(self, rows: Sequence[UsageRow]) -> None:
        def write() -> None:
            with transaction(self._connection(), immediate=True) as db:
                db.executemany(_INSERT_USAGE, rows)

        await self._run(write)

    async def usage(self, query: UsageQuery) -> list[UsageTotal]:
        group = GROUP_EXPRESSIONS[query.group_by]
        sql = (
            f"SELECT {group} AS grp, COUNT(*), COALESCE(SUM(prompt_tokens), 0), "
            "COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(spend_usd), 0) "
            "FROM llm_proxy_usage WHERE at >= ? AND at < ? GROUP BY grp ORDER BY grp"
        )

        def read() -> list[UsageTotal]:
            rows = self._connection().execute(sql, (query.since, query.until)).fetchall()
            return [UsageTotal(str(g), int(n), int(p), int(c), float(s)) for g, n, p, c, s in rows]

        return await self._run(read)

    async def audit(self, limit: int, key: str | None = None) -> list[AuditEntry]:
        where, args = ("WHERE key_name = ? ", [key]) if key is not None else ("", [])
        sql = (
            f"SELECT id, at, action, key_name, changes FROM llm_proxy_audit {where}"
            "ORDER BY id DESC LIMIT ?"
        )

        def read() -> list[AuditEntry]:
            rows = self._connection().execute(sql, (*args, limit)).fetchall()
            return [AuditEntry.from_columns(row) for row in rows]

        return await self._run(read)


def _revision(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT value FROM llm_proxy_revision WHERE id = 1").fetchone()[0])


def _changed(db: sqlite3.Connection, audit: AuditEntry) -> int:
    """The revision bumped and the change audited, inside the caller's transaction."""
    revision = int(db.execute(_BUMP).fetchone()[0])
    db.execute(
        "INSERT INTO llm_proxy_audit (at, action, key_name, changes) VALUES (?, ?, ?, ?)",
        (audit.at, audit.action, audit.key, audit.changes_json()),
    )
    return revision
