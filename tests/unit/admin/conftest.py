"""Stores for the admin unit tests: SQLite in a temporary directory, and PostgreSQL in a
database of the test's own on the machine's server (skipped where there is none)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from proxy.admin.store import AdminStore, open_store

SERVER = "postgresql://postgres@127.0.0.1:5432"


async def run_sql(*statements: str) -> None:
    import asyncpg

    db = await asyncpg.connect(f"{SERVER}/postgres", timeout=5)
    try:
        for statement in statements:
            await db.execute(statement)
    finally:
        await db.close()


def postgres_reachable() -> bool:
    try:
        asyncio.run(run_sql("SELECT 1"))
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def postgres() -> bool:
    return postgres_reachable()


@pytest.fixture
def postgres_url(postgres: bool) -> Iterator[str]:
    """A database of this test's own (dropped at the end)."""
    if not postgres:
        pytest.skip("no PostgreSQL at 127.0.0.1:5432 (trust auth, user postgres)")
    name = f"llm_proxy_unit_{uuid.uuid4().hex[:12]}"
    asyncio.run(run_sql(f"CREATE DATABASE {name}"))
    yield f"{SERVER}/{name}?sslmode=disable"
    asyncio.run(
        run_sql(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",
            f"DROP DATABASE IF EXISTS {name} WITH (FORCE)",  # a backend still exiting is no error
        )
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store' / 'admin.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[AdminStore]:
    opened = open_store(store_url)
    await opened.open()
    yield opened
    await opened.close()
