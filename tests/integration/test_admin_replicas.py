"""Two replicas sharing one PostgreSQL database (the machine's, at 127.0.0.1:5432): a key made
on one works on the other within a second, a revoked or rotated one is refused there within a
second, usage from both is one ledger, and a database outage keeps every key serving while
/health and the storage-error metric show it.

Each test makes its own database (a unique name) and drops it at the end; no other database
is touched.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from fakes.openai_upstream import FakeOpenAI
from fakes.proxy_harness import RunningProxy

from .conftest import USER_MESSAGES
from .test_admin_api import ADMIN_KEY, admin_policy, eventually, usage_rows

asyncpg = pytest.importorskip("asyncpg")

SERVER = "postgresql://postgres@127.0.0.1:5432"
ENV = {"LLM_PROXY_ADMIN_KEY": ADMIN_KEY}
WITHIN = 1.0  # seconds: a change on one replica is seen by the other by then


def run_sql(*statements: str) -> None:
    async def run() -> None:
        db = await asyncpg.connect(f"{SERVER}/postgres", timeout=5)
        try:
            for statement in statements:
                await db.execute(statement)
        finally:
            await db.close()

    asyncio.run(run())


def server_reachable() -> bool:
    try:
        run_sql("SELECT 1")
    except (OSError, asyncpg.PostgresError):
        return False
    return True


pytestmark = pytest.mark.skipif(
    not server_reachable(), reason="no PostgreSQL at 127.0.0.1:5432 (trust auth, user postgres)"
)


@pytest.fixture
def database() -> Iterator[str]:
    """A database of this test's own, dropped at the end; its URL."""
    name = f"llm_proxy_test_{uuid.uuid4().hex[:12]}"
    run_sql(f"CREATE DATABASE {name}")
    yield f"{SERVER}/{name}?sslmode=disable"
    run_sql(
        f"ALTER DATABASE {name} ALLOW_CONNECTIONS true",
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",
        f"DROP DATABASE IF EXISTS {name} WITH (FORCE)",  # a backend still exiting is no error
    )


@pytest.fixture
def replicas(
    start_proxy: Callable[..., RunningProxy], fake_openai: FakeOpenAI, database: str
) -> tuple[RunningProxy, RunningProxy]:
    policy = admin_policy(fake_openai.base_url, database)
    return start_proxy(policy, env=ENV), start_proxy(policy, env=ENV)


def admin_client(proxy: RunningProxy) -> httpx.Client:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    return httpx.Client(base_url=proxy.url, headers=headers, timeout=10)


def status_with(proxy: RunningProxy, secret: str) -> int:
    body = {"model": "chat-a", "messages": USER_MESSAGES}
    headers = {"Authorization": f"Bearer {secret}"}
    return httpx.post(f"{proxy.base_url}/chat/completions", json=body, headers=headers).status_code


def seconds_until(check: Callable[[], bool], timeout: float = 5.0) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, "not seen within the timeout"
        time.sleep(0.02)
    return time.monotonic() - started


def health_entry(proxy: RunningProxy) -> dict[str, Any]:
    entry: dict[str, Any] = httpx.get(f"{proxy.url}/health").json()["storage"]["admin"]
    return entry


def test_a_change_on_one_replica_reaches_the_other_within_a_second(
    replicas: tuple[RunningProxy, RunningProxy],
) -> None:
    a, b = replicas
    with admin_client(a) as admin:
        created = admin.post("/admin/keys", json={"name": "shared"})
        assert created.status_code == 201, created.text
        secret = created.json()["key"]
        assert seconds_until(lambda: status_with(b, secret) == 200) < WITHIN
        with admin_client(b) as other:
            assert other.get("/admin/keys/shared").json()["source"] == "runtime"
            error = other.post("/admin/keys", json={"name": "shared"})
            assert error.status_code == 409

        rotated = admin.post("/admin/keys/shared/rotate").json()["key"]
        assert seconds_until(lambda: status_with(b, secret) == 401) < WITHIN
        assert status_with(b, rotated) == 200

        assert admin.delete("/admin/keys/shared").status_code == 200
        assert seconds_until(lambda: status_with(b, rotated) == 401) < WITHIN


def test_usage_from_both_replicas_is_one_ledger(
    replicas: tuple[RunningProxy, RunningProxy],
) -> None:
    a, b = replicas
    with admin_client(a) as admin:
        secret = admin.post("/admin/keys", json={"name": "both"}).json()["key"]
    seconds_until(lambda: status_with(b, secret) == 200)  # one request on b, then more
    for proxy in (a, b, a):
        with openai.OpenAI(base_url=proxy.base_url, api_key=secret, max_retries=0) as client:
            client.chat.completions.create(model="chat-b", messages=USER_MESSAGES)
    with admin_client(b) as admin:

        def counted() -> bool:
            rows = {row["key"]: row for row in usage_rows(admin, "key")}
            return "both" in rows and rows["both"]["requests"] == 4

        assert eventually(counted)
        models = {row["model"]: row["requests"] for row in usage_rows(admin, "model")}
        assert models == {"chat-a": 1, "chat-b": 3}


def test_a_database_outage_keeps_keys_serving_and_shows_in_health(
    replicas: tuple[RunningProxy, RunningProxy], database: str
) -> None:
    a, b = replicas
    name = database.rsplit("/", 1)[1].split("?")[0]
    with admin_client(a) as admin:
        secret = admin.post("/admin/keys", json={"name": "steady"}).json()["key"]
    seconds_until(lambda: status_with(b, secret) == 200)
    assert health_entry(b)["reachable"] is True

    run_sql(
        f"ALTER DATABASE {name} ALLOW_CONNECTIONS false",
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",
    )
    for proxy in (a, b):
        seconds_until(lambda p=proxy: health_entry(p)["reachable"] is False)
        entry = health_entry(proxy)
        assert entry["keys_loaded"] == 1 and entry["last_error"]
        assert status_with(proxy, secret) == 200, "the last keys known keep serving"
        assert (
            'llm_proxy_storage_errors_total{store="admin"}'
            in httpx.get(f"{proxy.url}/metrics").text
        )
    with admin_client(a) as admin:
        refused = admin.post("/admin/keys", json={"name": "during-outage"})
        assert refused.status_code == 503 and refused.json()["error"]["type"]

    run_sql(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
    for proxy in (a, b):
        seconds_until(lambda p=proxy: health_entry(p)["reachable"] is True)
    with admin_client(a) as admin:
        secret2 = admin.post("/admin/keys", json={"name": "after-outage"}).json()["key"]
    assert seconds_until(lambda: status_with(b, secret2) == 200) < WITHIN
    with admin_client(b) as admin:
        assert eventually(lambda: "steady" in {r["key"] for r in usage_rows(admin, "key")})
