"""The store's schema as ordered, versioned migrations, shared by SQLite and PostgreSQL.

`llm_proxy_schema_version` lists the versions applied; at start each backend applies the
missing ones in order, each in its own transaction with its version row (PostgreSQL under an
advisory lock, so replicas starting together migrate once). A new version is a new entry at
the end of MIGRATIONS; an applied one is never edited. `{id}` is the dialect's
auto-numbered primary key.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    about: str
    statements: tuple[str, ...]


VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS llm_proxy_schema_version ("
    "version INTEGER PRIMARY KEY, about TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "runtime keys, their revision counter, the usage ledger, the audit trail",
        (
            """CREATE TABLE llm_proxy_keys (
                name TEXT PRIMARY KEY,
                digest TEXT NOT NULL UNIQUE,
                models TEXT NOT NULL,
                limits TEXT,
                budget TEXT,
                expires_at DOUBLE PRECISION,
                metadata TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL
            )""",
            # one row; every key change adds 1 in the same transaction: replicas compare it
            "CREATE TABLE llm_proxy_revision (id INTEGER PRIMARY KEY, value BIGINT NOT NULL)",
            "INSERT INTO llm_proxy_revision (id, value) VALUES (1, 0)",
            """CREATE TABLE llm_proxy_usage (
                at DOUBLE PRECISION NOT NULL,
                request_id TEXT NOT NULL,
                key_name TEXT NOT NULL,
                model TEXT NOT NULL,
                route TEXT NOT NULL,
                api TEXT NOT NULL,
                status INTEGER NOT NULL,
                prompt_tokens BIGINT NOT NULL,
                completion_tokens BIGINT NOT NULL,
                spend_usd DOUBLE PRECISION NOT NULL,
                duration_ms DOUBLE PRECISION NOT NULL,
                cache TEXT NOT NULL
            )""",
            "CREATE INDEX llm_proxy_usage_at ON llm_proxy_usage (at)",
            """CREATE TABLE llm_proxy_audit (
                id {id},
                at DOUBLE PRECISION NOT NULL,
                action TEXT NOT NULL,
                key_name TEXT NOT NULL,
                changes TEXT NOT NULL
            )""",
            "CREATE INDEX llm_proxy_audit_at ON llm_proxy_audit (at)",
        ),
    ),
)


def pending(applied: int, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[Migration]:
    """The migrations after version `applied`, in order."""
    versions = [m.version for m in migrations]
    if versions != sorted(set(versions)):
        raise ValueError("migration versions must be unique and increasing")
    return [m for m in migrations if m.version > applied]


def statements(migration: Migration, identity: str) -> list[str]:
    return [text.replace("{id}", identity) for text in migration.statements]
