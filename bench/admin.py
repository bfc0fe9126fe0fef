"""The operators' backend on the hot path: runtime keys against file keys, and the usage ledger
at the bench's full request rate.

    python bench/admin.py                                   # 6 rounds x 3 s, JSON and streams, c=16
    python bench/admin.py --rounds 2 --duration 2 --modes json   # a short check

Two targets on the `proxy` target's policy (bench/targets.py), each with 1,000 client keys,
the bench key among them:

* `proxy-file-keys`: the keys in proxy.yaml, admin off (the baseline);
* `proxy-runtime-keys`: admin on with a SQLite store in the temp dir, the keys made in it
  before the proxy starts: every request is authenticated from the runtime keys and becomes
  a usage-ledger row (and a count in the overview's traffic ring).

Rounds are interleaved as in bench/interleaved.py (each round measures both, the order
swapped every round; the ratio runtime / file per round, then the median and spread). The
target runs on core 0, nginx and wrk on core 1. After the rounds, the runtime target's
`/health` says what the ledger did; the bars: no row dropped, every request answered written
(or still queued), and the process RSS under 100 MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    HERE = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
    sys.path.insert(0, str(REPO))

from bench.interleaved import Comparison, render, rounds  # noqa: E402
from bench.report import Outcome  # noqa: E402
from bench.run import (  # noqa: E402
    LOAD_CORE,
    _interrupt,
    exclusive,
    log,
    measure,
    start_targets,
    start_upstream,
)
from bench.targets import (  # noqa: E402
    CHAT_PATH,
    CLIENT_KEY,
    Call,
    Context,
    Target,
    default_policy,
    proxy_target,
)

KEYS = 1_000
ADMIN_KEY = "bench-admin-key-0123456789"
MAX_RSS_MIB = 100
CALLS = {False: Call(CHAT_PATH, "gpt-4o-mini"), True: Call(CHAT_PATH, "gpt-4o-mini-stream")}
RESULTS = REPO / "bench" / "results"


def other_keys() -> list[tuple[str, str]]:
    """(name, sha256 hex) of the keys besides the bench key."""
    return [
        (f"team-{n:04d}", hashlib.sha256(f"sk-bench-other-{n}".encode()).hexdigest())
        for n in range(1, KEYS)
    ]


def file_keys_policy(ctx: Context, port: int) -> str:
    policy: dict[str, Any] = yaml.safe_load(default_policy(ctx, port))
    policy["keys"] += [{"name": name, "sha256": digest} for name, digest in other_keys()]
    return yaml.safe_dump(policy, sort_keys=False)


def runtime_keys_policy(ctx: Context, port: int) -> str:
    policy: dict[str, Any] = yaml.safe_load(default_policy(ctx, port))
    policy.pop("keys")
    database = ctx.tmp / "admin" / "admin.db"
    shutil.rmtree(database.parent, ignore_errors=True)  # a fresh ledger for each start
    asyncio.run(seed(f"sqlite:///{database}"))
    policy["admin"] = {"key": ADMIN_KEY, "store": f"sqlite:///{database}"}
    return yaml.safe_dump(policy, sort_keys=False)


async def seed(url: str) -> None:
    """The runtime keys, written through the proxy's own store before it starts."""
    from proxy.admin.records import AuditEntry, KeyRecord
    from proxy.admin.store import open_store

    store = open_store(url)
    await store.open()
    now = time.time()
    bench = ("bench", hashlib.sha256(CLIENT_KEY.encode()).hexdigest())
    for name, digest in [bench, *other_keys()]:
        record = KeyRecord(name, digest, created_at=now, updated_at=now)
        await store.create_key(record, AuditEntry("create", name, at=now))
    await store.close()


def targets() -> tuple[Target, Target]:
    runtime = proxy_target(
        "proxy-runtime-keys",
        f"llm-proxy, {KEYS:,} runtime keys (SQLite store, usage ledger on)",
        runtime_keys_policy,
        CALLS,
        baseline="proxy-file-keys",
    )
    files = proxy_target(
        "proxy-file-keys",
        f"llm-proxy, {KEYS:,} keys in proxy.yaml, admin off",
        file_keys_policy,
        CALLS,
    )
    return runtime, files


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=6, help="rounds per point (default 6)")
    p.add_argument("--duration", type=float, default=3.0, help="seconds per run (default 3)")
    p.add_argument("--concurrency", default="16", help="wrk connections (default 16)")
    p.add_argument("--modes", default="json,stream", help="json, stream or both (default)")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per target/mode")
    p.add_argument("--output", type=Path, default=RESULTS / "admin.md")
    args = p.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.modes = [{"json": False, "stream": True}[m] for m in args.modes.split(",")]
    return args


def ledger_report(url: str) -> dict[str, Any]:
    """What the runtime target's ledger did, once it had time to write its queue."""
    time.sleep(1.5)  # more than one flush interval
    health = httpx.get(f"{url}/health", timeout=10).json()
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    answered = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("llm_proxy_requests_total{")
    )
    ledger = health["storage"]["admin"]["ledger"]
    rss_mib = health["process"]["rss_bytes"] / 2**20
    return {
        "requests": int(answered),
        **ledger,
        "rss_mib": round(rss_mib, 1),
        "ok": ledger["dropped"] == 0
        and ledger["written"] + ledger["queued"] == int(answered)
        and rss_mib < MAX_RSS_MIB,
    }


def run(
    args: argparse.Namespace, tmp: Path, stack: contextlib.ExitStack
) -> tuple[list[Comparison], dict[str, Any]]:
    runtime, files = targets()
    outcome = Outcome(1, args.duration, args.concurrency, args.modes, targets=[])
    ctx = Context(REPO, tmp, start_upstream(tmp, stack))
    live = start_targets([runtime, files], ctx, stack, outcome)
    if outcome.skipped:
        raise SystemExit(f"could not start: {outcome.skipped}")
    urls = {name: url for name, (_, url) in live.items()}
    pids = {name: (proc.popen.pid if proc else None, url) for name, (proc, url) in live.items()}
    for target in (runtime, files):
        for stream in args.modes:
            measure(urls[target.name], target, stream, 16, args.warmup)
    points = []
    for stream in args.modes:
        for connections in args.concurrency:
            point = Comparison(runtime.name, files.name, stream, connections)
            rounds(runtime, files, pids, point, args)
            points.append(point)
    return points, ledger_report(urls[runtime.name])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs 2 cores: the target on core 0, nginx and wrk on core 1")
    os.sched_setaffinity(0, {LOAD_CORE})
    try:
        with exclusive(), contextlib.ExitStack() as stack:
            tmp = Path(tempfile.mkdtemp(prefix="llm-proxy-bench-admin-"))
            stack.callback(shutil.rmtree, tmp, ignore_errors=True)
            points, ledger = run(args, tmp, stack)
    except KeyboardInterrupt:
        log("interrupted; every process started was stopped")
        return 130
    report = render(points, args) + (
        f"\nUsage ledger at full rate: {ledger['requests']:,} requests answered, "
        f"{ledger['written']:,} rows written, {ledger['queued']:,} queued, "
        f"{ledger['dropped']:,} dropped; RSS {ledger['rss_mib']} MiB (bar: no drop, every "
        f"request a row, RSS < {MAX_RSS_MIB} MiB): {'OK' if ledger['ok'] else 'FAILED'}\n"
    )
    print(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    return 0 if ledger["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
