"""The chaos run (bench/chaos.py), bounded for CI: two replicas behind one Redis, 20 s of load
through every door (chat completions, the Responses API with stored responses continued,
Anthropic's Messages API, embeddings) with upstream faults, a key limit that must hold exactly
across the replicas, a breaker that must be shared, a Redis restart, a valid then an invalid
policy rewrite, a runtime key made, rotated and revoked through the admin API, and a SIGTERM to
both with streams in flight. It runs as its own process (its fakes and load keep their own
interpreter) and must lose nothing. docs/reliability.md says what it checks;
`python bench/chaos.py --duration 120` is the long run.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import anthropic_upstream as claude
from fakes.anthropic_upstream import FakeAnthropic
from fakes.embeddings_api import embedding_list
from fakes.openai_upstream import (
    FakeOpenAI,
    drop_after,
    drop_before_response,
    end_after,
    error_event_after,
    garbage,
    ok,
    status,
)
from fakes.proxy_harness import PROXY_ENV_OVERRIDES, REPO_ROOT, base_policy
from fakes.redis_server import RedisServer, redis_available

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.chaos_load import Load, Mix
from bench.chaos_spec import DOORS

pytestmark = pytest.mark.timeout(240)

DURATION = 20
EVENTS = 12  # replica checks 2, Redis 2, rewrites 2, runtime key 3, shutdown 3


@pytest.mark.skipif(not redis_available(), reason="needs redis-server")
def test_a_short_chaos_run_loses_nothing(tmp_path: Path) -> None:
    ledger_path = tmp_path / "ledger.json"
    env = {k: v for k, v in os.environ.items() if k not in PROXY_ENV_OVERRIDES}
    done = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "bench" / "chaos.py"),
            "--duration",
            str(DURATION),
            "--workers",
            "4",
            "--long-streams",
            "3",
            "--replicas",
            "2",
            "--seed",
            "20240601",
            "--json",
            str(ledger_path),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=210,
        check=False,
    )
    output = done.stdout + done.stderr
    print(output)
    assert ledger_path.exists(), output[-5000:]
    ledger = json.loads(ledger_path.read_text())
    assert ledger["lost"] == 0, output[-5000:]
    assert ledger["unexpected_statuses"] == 0, output[-5000:]
    assert ledger["unhandled_errors_in_log"] == 0, output[-5000:]
    assert all(event["ok"] for event in ledger["events"]), ledger["events"]
    assert len(ledger["events"]) == EVENTS, ledger["events"]
    assert ledger["ok"] > 0 and ledger["faults_total"] > 0, ledger
    _assert_every_door_served(ledger)
    assert set(ledger["by_replica"]) == {"0", "1"}, ledger["by_replica"]  # JSON keys
    burst = ledger["replica_checks"]["limit burst"]
    assert burst["answers"]["200"] == burst["limit"], burst
    assert len(ledger["replica_checks"]["shared breaker"]["seen_open_after_s"]) == 1, ledger
    assert done.returncode == 0, output[-5000:]


def _assert_every_door_served(ledger: dict[str, Any]) -> None:
    """Every door had its share and answered through the faults of its own upstreams; stored
    responses were continued, the per-input cache hit, the admin changes audited."""
    for door in DOORS:
        assert ledger["by_door"][door]["ok"] > 0, ledger["by_door"]
    assert ledger["continued_ok"] > 0, ledger
    assert ledger["embedding_cache"].get("hit", 0) > 0, ledger["embedding_cache"]
    assert ledger["faults"]["up-claude"] and ledger["faults"]["up-native"], ledger["faults"]
    revoked = ledger["replica_checks"]["runtime key"][-1]
    assert revoked["audit"] == ["create", "rotate", "delete"], revoked


# ---- the checker itself: it must see a loss when there is one --------------------------------


@pytest.mark.parametrize("client", ["sdk", "raw"])
def test_the_chaos_checker_tells_lost_from_answered(fake_openai: FakeOpenAI, client: str) -> None:
    """Straight at the fake upstream (no proxy in between): a reset, a stream cut after its
    first chunk and a stream that ends without a finish are LOST; an error event is in-band
    (the raw client also wants the [DONE] the proxy sends after it, which the fake does not:
    lost); an envelope with a status is an error; a clean answer is ok."""
    cases = [
        (ok(), False, "ok"),
        (ok(), True, "ok"),
        (status(503), False, "error"),
        (error_event_after(2), True, "inband" if client == "sdk" else "lost"),
        (drop_before_response(), False, "lost"),
        (drop_after(1), True, "lost"),
        (end_after(2), True, "lost"),
        (garbage(), False, "lost"),
    ]

    async def drive() -> list[str]:
        load = Load([fake_openai.url], {"svc": "k"}, Mix(random.Random(0)), workers=1)
        outcomes = []
        try:
            for behaviour, stream, _ in cases:
                fake_openai.script(behaviour)
                spec = load.mix.spec("chat-backup", "chat")
                spec.stream, spec.client, spec.key_name, spec.hang_up = stream, client, "svc", False
                outcomes.append((await load.one(spec)).outcome)
        finally:
            await load.close()
        return outcomes

    assert asyncio.run(drive()) == [expected for _, _, expected in cases]


def _drive(base_url: str, door: str, client: str, behaviours: list[tuple[Any, bool]]) -> list[str]:
    """Each behaviour scripted for one request through `door` (streamed or not) straight at a
    fake upstream; the outcome the chaos checker gave it."""

    async def drive() -> list[str]:
        load = Load([base_url], {"svc": "k"}, Mix(random.Random(0)), workers=1)
        outcomes = []
        try:
            for script, stream in behaviours:
                spec = load.mix.spec("chat-backup", door)
                spec.stream, spec.client, spec.key_name, spec.hang_up = stream, client, "svc", False
                spec.previous = None
                script()
                outcomes.append((await load.one(spec)).outcome)
        finally:
            await load.close()
        return outcomes

    return asyncio.run(drive())


@pytest.mark.parametrize("client", ["sdk", "raw"])
def test_the_chaos_checker_reads_the_responses_api(fake_openai: FakeOpenAI, client: str) -> None:
    """Straight at the fake's native /v1/responses: an event stream must end with one of the
    response's endings; one cut, ended early or closed by a bare `error` event (the proxy must
    turn that into response.failed) is LOST."""
    cases = [
        (ok(), False, "ok"),
        (ok(), True, "ok"),
        (status(503), False, "error"),
        (end_after(3), True, "lost"),
        (drop_after(2), True, "lost"),
        (error_event_after(4), True, "lost"),
    ]
    behaviours = [(lambda b=b: fake_openai.script(b), stream) for b, stream, _ in cases]
    outcomes = _drive(fake_openai.url, "responses", client, behaviours)
    assert outcomes == [expected for _, _, expected in cases]


@pytest.mark.parametrize("client", ["sdk", "raw"])
def test_the_chaos_checker_reads_the_messages_api(client: str) -> None:
    """Straight at the fake Anthropic upstream: a stream ends with message_stop or an `error`
    event (in-band); one cut or ended early, or a body that is not JSON, is LOST; an error
    status in Anthropic's envelope is an error."""
    cases = [
        (claude.ok(), False, "ok"),
        (claude.ok(), True, "ok"),
        (claude.overloaded(), False, "error"),
        (claude.error_event_after(3), True, "inband"),
        (claude.end_after(3), True, "lost"),
        (claude.drop_after(2), True, "lost"),
        (claude.garbage(), False, "lost"),
    ]
    with FakeAnthropic() as fake:
        behaviours = [(lambda b=b: fake.script(b), stream) for b, stream, _ in cases]
        outcomes = _drive(fake.url, "messages", client, behaviours)
    assert outcomes == [expected for _, _, expected in cases]


@pytest.mark.parametrize("client", ["sdk", "raw"])
def test_the_chaos_checker_reads_embeddings(fake_openai: FakeOpenAI, client: str) -> None:
    """Vectors must be those of the inputs sent, in order: another input's vectors are LOST."""
    others = embedding_list({"model": "chat-backup"}, ["not", "these", "inputs", "at all"])
    cases = [
        (ok(), "ok"),
        (status(503), "error"),
        (drop_before_response(), "lost"),
        (garbage(json.dumps(others).encode()), "lost"),
    ]
    behaviours = [(lambda b=b: fake_openai.script(b), False) for b, _ in cases]
    outcomes = _drive(fake_openai.url, "embeddings", client, behaviours)
    assert outcomes == [expected for _, expected in cases]


# ---- the admin store: a key change reaches every replica well within a second ---------------

ADMIN_KEY = "sk-admin-replicas-0001"
CHANGE_SEEN_WITHIN = 0.75  # seconds; the chaos run asks for 1 s under load


def _answers(http: httpx.Client, url: str, secret: str) -> int:
    return http.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {secret}"}).status_code


def _until(http: httpx.Client, url: str, secret: str, status: int) -> float:
    started = time.monotonic()
    while _answers(http, url, secret) != status:
        assert time.monotonic() - started < 5, f"{url} never answered {status}"
        time.sleep(0.005)
    return time.monotonic() - started


def test_a_revoked_key_is_refused_by_another_replica_well_within_a_second(
    start_proxy: Any, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    """Two replicas on one SQLite admin store. Right after the other replica has read the
    store (it just learnt of a new key), the key is revoked: it must be refused there well
    within a second, not at that replica's next read a whole polling period later."""
    policy = base_policy(fake_openai.base_url)
    policy["admin"] = {"key": ADMIN_KEY, "store": f"sqlite:///{tmp_path / 'admin.db'}"}
    first, other = start_proxy(policy), start_proxy(policy)
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(timeout=5) as http:
        made = http.post(f"{first.url}/admin/keys", json={"name": "rt"}, headers=admin)
        assert made.status_code == 201, made.text
        secret = made.json()["key"]
        _until(http, other.url, secret, 200)  # the other replica has just read the store
        revoked = http.delete(f"{first.url}/admin/keys/rt", headers=admin)
        assert revoked.status_code == 200, revoked.text
        assert _answers(http, first.url, secret) == 401  # the replica that revoked it: at once
        took = _until(http, other.url, secret, 401)
    assert took < CHANGE_SEEN_WITHIN, f"the other replica refused it after {took:.2f} s"


# ---- stored responses after a Redis restart -----------------------------------------------------


@pytest.mark.skipif(not redis_available(), reason="needs redis-server")
def test_a_response_stored_after_a_redis_restart_is_kept(tmp_path: Path) -> None:
    """Redis restarted (empty, same port): the connections pooled before it are dead. A
    response answered seconds later must still be stored, or its client's next turn
    (previous_response_id) is refused as unknown; the chaos run saw exactly that."""
    from proxy.formats.responses.store.backends import RedisBackend

    async def restart_between_writes(redis: RedisServer) -> bytes | None:
        backend = RedisBackend(redis.url)
        try:
            await backend.put("before", b"1", 60)  # a pooled connection to the first Redis
            await asyncio.to_thread(redis.stop)
            await asyncio.to_thread(redis.start)
            await backend.put("after", b"2", 60)
            return await backend.get("after")
        finally:
            await backend.close()

    with RedisServer(tmp_path / "redis") as redis:
        assert asyncio.run(restart_between_writes(redis)) == b"2"
