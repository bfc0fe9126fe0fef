"""The chaos run (bench/chaos.py), bounded for CI: two replicas behind one Redis, 20 s of load
with upstream faults, a key limit that must hold exactly across the replicas, a breaker that must
be shared, a Redis restart, a valid then an invalid policy rewrite and a SIGTERM to both with
streams in flight. It runs as its own process (its fakes and load keep their own interpreter) and
must lose nothing. docs/reliability.md says what it checks; `python bench/chaos.py --duration 120`
is the long run.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
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
from fakes.proxy_harness import PROXY_ENV_OVERRIDES, REPO_ROOT
from fakes.redis_server import redis_available

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.chaos_load import Load, Mix

pytestmark = pytest.mark.timeout(240)

DURATION = 20


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
    assert len(ledger["events"]) == 9, ledger["events"]
    assert ledger["ok"] > 0 and ledger["faults_total"] > 0, ledger
    assert set(ledger["by_replica"]) == {"0", "1"}, ledger["by_replica"]  # JSON keys
    burst = ledger["replica_checks"]["limit burst"]
    assert burst["answers"]["200"] == burst["limit"], burst
    assert len(ledger["replica_checks"]["shared breaker"]["seen_open_after_s"]) == 1, ledger
    assert done.returncode == 0, output[-5000:]


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
                spec = load.mix.spec("chat-backup")
                spec.stream, spec.client, spec.key_name, spec.hang_up = stream, client, "svc", False
                outcomes.append((await load.one(spec)).outcome)
        finally:
            await load.close()
        return outcomes

    assert asyncio.run(drive()) == [expected for _, _, expected in cases]
