"""The SQLite store across a restart: a runtime key made before it still works after it, the
usage rows written before it (the last ones flushed at shutdown) are still reported, and the
schema is not migrated twice."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
from fakes.openai_upstream import FakeOpenAI
from fakes.proxy_harness import RunningProxy

from .conftest import USER_MESSAGES
from .test_admin_api import ADMIN_KEY, admin_policy, usage_rows

ENV = {"LLM_PROXY_ADMIN_KEY": ADMIN_KEY}


def admin_client(proxy: RunningProxy) -> httpx.Client:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    return httpx.Client(base_url=proxy.url, headers=headers, timeout=10)


def test_keys_and_usage_survive_a_restart(
    start_proxy: Callable[..., RunningProxy], fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    database = tmp_path / "data" / "admin.db"
    policy = admin_policy(fake_openai.base_url, f"sqlite:///{database}")
    first = start_proxy(policy, env=ENV)
    with admin_client(first) as admin:
        created = admin.post("/admin/keys", json={"name": "survivor", "models": ["chat-a"]})
        assert created.status_code == 201, created.text
        secret = created.json()["key"]
    with openai.OpenAI(base_url=first.base_url, api_key=secret, max_retries=0) as client:
        for _ in range(3):
            client.chat.completions.create(model="chat-a", messages=USER_MESSAGES)
    first.stop()  # at once: what the ledger still queues is written at shutdown
    assert first.process.returncode == 0

    second = start_proxy(policy, env=ENV)
    with openai.OpenAI(base_url=second.base_url, api_key=secret, max_retries=0) as client:
        reply = client.chat.completions.create(model="chat-a", messages=USER_MESSAGES)
    assert reply.choices[0].message.content
    with admin_client(second) as admin:
        listed = {key["name"]: key for key in admin.get("/admin/keys").json()["data"]}
        assert listed["survivor"]["models"] == ["chat-a"]
        rows = {row["key"]: row for row in usage_rows(admin, "key")}
        assert rows["survivor"]["requests"] >= 3  # the first proxy's three, whatever the timing
        actions = [entry["action"] for entry in admin.get("/admin/audit").json()["data"]]
        assert actions == ["create"]
    with sqlite3.connect(database) as db:
        versions = db.execute("SELECT version FROM llm_proxy_schema_version").fetchall()
    assert versions == [(1,)]
