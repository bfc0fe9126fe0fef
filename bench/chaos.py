#!/usr/bin/env python3
"""Chaos run: replicas of the proxy under mixed load while their upstreams fail, Redis restarts,
their policy is rewritten (validly, then invalidly) and they are told to stop with streams in
flight. Every answer is checked; the run prints a ledger and exits non-zero if any request was
lost or any check failed.

    . .venv/bin/activate
    python bench/chaos.py --duration 120            # about duration + 25 s in all
    python bench/chaos.py --duration 60 --workers 4 --seed 7 --json /tmp/ledger.json
    python bench/chaos.py --duration 60 --replicas 1  # one proxy, no shared-breaker check

Loopback only (127.0.0.1), bounded in time. What runs:

- seven fake OpenAI upstreams (tests/fakes/openai_upstream.py, each in a thread, chat
  completions, the Responses API and embeddings): `up-a` flaky (500, 503, 429 with
  Retry-After, hangs past the timeout, resets before the answer and after the first stream
  chunk, stalls, error events), `up-b` slow (slow streams, hangs), `up-c` a mostly healthy
  backup, `up-long` slow streams for the shutdown, `up-native` a native Responses API route;
  `up-steady` (always answers) and `up-dead` (always 500) for the replica checks only; and a
  fake Anthropic upstream, `up-claude` (500, 529, 429, hangs, resets, error events, garbage);
- a redis-server of its own (never the system one), for limits, breakers, the cache and the
  stored responses;
- `--replicas` proxies (`python -m proxy serve`, subprocesses; 2 by default) on the same
  bench/chaos_policy.py policy file, the same Redis and the same admin store (SQLite): weighted
  and priority routes, fallbacks, breakers, key limits, a Redis cache;
- the load: `--workers` concurrent clients through every door (chat completions, the Responses
  API with stored responses continued, Anthropic's Messages API and count_tokens, embeddings),
  each format's SDK (`openai`, `anthropic`) and raw HTTP (SSE read line by line), streaming and
  not, through three keys (one with a tight rate limit), a few clients hanging up mid-stream on
  purpose; request i goes to replica i mod N.

Timeline (D = --duration): at 0.08 D the replica checks (bench/chaos_replicas.py): a burst on
a key limited to 30 requests a minute, spread over the replicas, must see exactly 30 pass; then
a breaker opened on replica 1 must show open on the others; at 0.25 D Redis is stopped, and
started again (empty) a few seconds later; at 0.45 D proxy.yaml is rewritten with a valid change
(a new model, which the load then uses); at 0.55 D a runtime key is made, used, rotated and
revoked through the admin API (bench/chaos_admin.py: every change seen by every replica within a
second); at 0.65 D the policy is rewritten with an invalid change (every replica must refuse it,
the old policy serving on); a second before D long streams start (through the chat, Responses
and Messages doors); at D the load stops and every replica gets SIGTERM with those streams and
the last requests in flight: they must all finish, and every replica exit 0 within its drain.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from fakes.redis_server import RedisServer  # noqa: E402

from bench.chaos_admin import runtime_key_cycle  # noqa: E402
from bench.chaos_faults import FaultyAnthropic, FaultyUpstream, Timeouts  # noqa: E402
from bench.chaos_ledger import Event, Ledger  # noqa: E402
from bench.chaos_load import Load, Mix  # noqa: E402
from bench.chaos_policy import (  # noqa: E402
    DRAIN_TIMEOUT,
    KEYS,
    changed_policy,
    chaos_policy,
    invalid_policy,
)
from bench.chaos_proxy import Proxy  # noqa: E402
from bench.chaos_replicas import breaker_shared, limit_burst  # noqa: E402
from bench.chaos_spec import Result, Spec  # noqa: E402

RELOAD_WITHIN = 8.0  # seconds for a rewrite to show in /health (a loaded machine)
LONG_STREAM_WORDS = 20  # x 0.2 s: a 4 s stream, well inside the drain timeout
LONG_STREAM_DOORS = [("chat", "sdk"), ("chat", "raw"), ("responses", "raw"), ("messages", "sdk")]
STORAGE_GRACE = 2.0  # seconds after Redis is back before a stored response counts as kept
PLANS = {
    "up-a": "flaky",
    "up-b": "slow",
    "up-c": "backup",
    "up-long": "long",
    "up-steady": "steady",
    "up-dead": "dead",
    "up-native": "native",
    "up-claude": "claude",
}
LOAD_UPSTREAMS = ("up-a", "up-b", "up-c", "up-native", "up-claude")  # whose faults are counted


class Chaos:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.workdir = Path(tempfile.mkdtemp(prefix="llm-proxy-chaos-"))
        self.timeouts = Timeouts()
        self.upstreams: dict[str, FaultyUpstream | FaultyAnthropic] = {
            name: (FaultyAnthropic if plan == "claude" else FaultyUpstream)(
                name, plan, self.timeouts, seed=self.rng.randrange(2**32)
            )
            for name, plan in PLANS.items()
        }
        self.redis = RedisServer(self.workdir / "redis")
        self.config = self.workdir / "proxy.yaml"
        self.events: list[Event] = []
        self.checks: dict[str, Any] = {}
        self.t0 = 0.0
        self.proxies: list[Proxy] = []
        self.policy: dict[str, Any] = {}

    # ---- set-up and tear-down

    def start(self) -> None:
        for upstream in self.upstreams.values():
            upstream.reply = "unused"  # every request asks for an echo
            upstream.start()
        self.redis.__enter__()
        urls = {name: up.base_url for name, up in self.upstreams.items()}
        admin_store = f"sqlite:///{self.workdir / 'admin.db'}"
        self.policy = chaos_policy(urls, self.redis.url, self.timeouts, admin_store)
        self.write(self.policy)
        for number in range(1, self.args.replicas + 1):  # all start at once, then all must be up
            self.proxies.append(Proxy(self.workdir, self.config, number))
        for proxy in self.proxies:
            proxy.wait_ready()

    @property
    def urls(self) -> list[str]:
        return [proxy.url for proxy in self.proxies]

    def close(self) -> None:
        for proxy in self.proxies:
            proxy.kill()
        self.redis.stop()
        for upstream in self.upstreams.values():
            with contextlib.suppress(Exception):
                upstream.stop()
        if self.args.keep:
            print(f"work directory kept: {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def write(self, policy: dict[str, Any]) -> None:
        """Replace the file atomically, as a ConfigMap update or an editor's save would."""
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(policy, sort_keys=False))
        tmp.replace(self.config)

    # ---- the timeline

    def now(self) -> float:
        return time.monotonic() - self.t0

    def event(self, what: str, ok: bool = True) -> None:
        self.events.append(Event(self.now(), what, ok))
        print(f"  [{self.now():6.1f} s] {'' if ok else 'FAILED: '}{what}", flush=True)

    async def at(self, fraction: float) -> None:
        await asyncio.sleep(max(0.0, fraction * self.args.duration - self.now()))

    async def health(self, http: httpx.AsyncClient, proxy: Proxy) -> dict[str, Any]:
        resp = await http.get(f"{proxy.url}/health")
        data: dict[str, Any] = resp.json()
        return data

    async def replica_checks(self, http: httpx.AsyncClient) -> None:
        """Limits exact and breakers shared across replicas, before the Redis outage."""
        await self.at(0.08)
        verdict = await limit_burst(http, self.urls)
        self.checks["limit burst"] = verdict.figures
        self.event(verdict.what, verdict.ok)
        if len(self.proxies) > 1:
            verdict = await breaker_shared(http, self.urls)
            self.checks["shared breaker"] = verdict.figures
            self.event(verdict.what, verdict.ok)

    async def redis_outage(self, mix: Mix) -> None:
        await self.at(0.25)
        mix.stored.storage_lost()
        await asyncio.to_thread(self.redis.stop)
        down = min(6.0, max(2.0, 0.08 * self.args.duration))
        self.event(f"Redis stopped (for {down:.0f} s)")
        await asyncio.sleep(down)
        await asyncio.to_thread(self.redis.start)
        self.event("Redis started again, empty, on the same port")
        await asyncio.sleep(STORAGE_GRACE)
        mix.stored.storage_back()

    async def admin_checks(self, http: httpx.AsyncClient) -> None:
        """A runtime key made, used, rotated and revoked through the admin API, under load."""
        await self.at(0.55)
        verdicts = await runtime_key_cycle(http, self.urls)
        self.checks["runtime key"] = [verdict.figures for verdict in verdicts]
        for verdict in verdicts:
            self.event(verdict.what, verdict.ok)

    async def reloads(self, http: httpx.AsyncClient, mix: Mix) -> None:
        await self.at(0.45)
        before = (await self.health(http, self.proxies[0]))["policy"]["version"]
        changed = changed_policy(self.policy)
        self.write(changed)
        versions = await self.wait_for(http, lambda h: h["policy"]["version"] != before)
        version = versions[0] if len(set(versions)) == 1 else None
        self.event(
            f"valid rewrite applied on {self.count(versions)} replicas "
            f"(policy {before} -> {', '.join(map(str, set(versions)))})",
            version is not None,
        )
        if version is not None:
            mix.models.append("chat-new")
        await self.at(0.65)
        self.write(invalid_policy(changed))

        def refused(h: dict[str, Any]) -> bool:
            last = h["policy"].get("last_reload") or {}
            return last.get("result") == "error" and h["policy"]["version"] == version

        seen = await self.wait_for(http, refused)
        self.event(
            f"invalid rewrite refused on {self.count(seen)} replicas, the previous policy "
            "serving on",
            None not in seen,
        )

    def count(self, found: list[Any]) -> str:
        return f"{sum(v is not None for v in found)}/{len(found)}"

    async def wait_for(self, http: httpx.AsyncClient, check: Any) -> list[Any]:
        """Each replica's policy version once its /health passes `check` (None: it did not)."""

        async def one(proxy: Proxy) -> Any:
            deadline = time.monotonic() + RELOAD_WITHIN
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    health = await self.health(http, proxy)
                    if check(health):
                        return health["policy"]["version"]
                await asyncio.sleep(0.1)
            return None

        return list(await asyncio.gather(*(one(proxy) for proxy in self.proxies)))

    def long_streams(self, mix: Mix) -> list[Spec]:
        """Slow streams through the chat, Responses and Messages doors, SDK and raw."""
        specs = []
        for i in range(self.args.long_streams):
            door, client = LONG_STREAM_DOORS[i % len(LONG_STREAM_DOORS)]
            spec = mix.spec("chat-long", door)
            spec.stream, spec.hang_up, spec.client, spec.previous = True, False, client, None
            spec.key_name = "svc"  # not the 4/second key: these test the drain, not the limits
            spec.words = [f"long{spec.rid}"] + [f"w{j}" for j in range(LONG_STREAM_WORDS - 1)]
            specs.append(spec)
        return specs

    async def shutdown(self, load: Load, mix: Mix) -> list[Result]:
        """Long streams (spread over the replicas), then SIGTERM to every replica with them
        (and the last requests) in flight."""
        await self.at(1.0)
        longs = [asyncio.create_task(load.one(spec)) for spec in self.long_streams(mix)]
        await asyncio.sleep(1.0)  # their first chunks are out
        load.stop.set()
        inflight = load.inflight
        for proxy in self.proxies:
            proxy.process.send_signal(signal.SIGTERM)
        self.event(
            f"SIGTERM to {len(self.proxies)} replicas with {inflight} requests in flight "
            f"({len(longs)} long streams)"
        )
        exits = asyncio.gather(
            *(asyncio.to_thread(proxy.wait_exit, DRAIN_TIMEOUT + 10) for proxy in self.proxies)
        )
        results = await asyncio.gather(*longs)
        codes, took = zip(*await exits, strict=True)
        self.event(
            f"replicas exited with {', '.join(map(str, codes))} after "
            f"{', '.join(f'{t:.1f}' for t in took)} s",
            all(code == 0 for code in codes),
        )
        ok = sum(r.outcome == "ok" for r in results)
        others = [
            f"{r.spec.door} {r.outcome} {r.status} {r.error or ''} {r.detail[:80]}"
            for r in results
            if r.outcome != "ok"
        ]
        self.event(
            f"long streams in flight at SIGTERM finished: {ok}/{len(results)}"
            + (f" (others: {others})" if others else ""),
            ok == len(results),
        )
        return results

    async def run(self) -> Ledger:
        mix = Mix(self.rng)
        load = Load(self.urls, KEYS, mix, self.args.workers)
        self.t0 = time.monotonic()
        print(
            f"chaos: load for {self.args.duration:.0f} s, {self.args.workers} workers, "
            f"seed {self.args.seed}; {len(self.proxies)} replicas on {', '.join(self.urls)}",
            flush=True,
        )
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(timeout=5, limits=limits) as http:
            workers = asyncio.create_task(load.run())
            scenario = asyncio.gather(
                self.replica_checks(http),
                self.redis_outage(mix),
                self.reloads(http, mix),
                self.admin_checks(http),
            )
            await scenario
            await self.shutdown(load, mix)
            await asyncio.wait_for(workers, DRAIN_TIMEOUT + 30)
        await load.close()
        return self.ledger(load.results)

    def ledger(self, results: list[Result]) -> Ledger:
        log = "".join(proxy.log() for proxy in self.proxies)
        unhandled = log.count("unhandled error") + log.count("Exception in ASGI application")
        counts = {
            "warnings": log.count("| WARNING |"),
            "errors": log.count("| ERROR   |"),
            "breaker openings": log.count("breaker opened"),
            "breaker closings": log.count("breaker closed"),
            "storage failures": log.count("storage failed") + log.count("backend failed"),
        }
        faults = {name: self.upstreams[name].faults() for name in LOAD_UPSTREAMS}
        return Ledger(
            results=results,
            faults=faults,
            events=self.events,
            duration=self.args.duration,
            workers=self.args.workers,
            seed=self.args.seed,
            replicas=len(self.proxies),
            unhandled_in_log=unhandled,
            log_counts=counts,
            checks=self.checks,
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of load (>= 20)")
    parser.add_argument("--workers", type=int, default=8, help="concurrent clients")
    parser.add_argument("--replicas", type=int, default=2, help="proxies sharing Redis (>= 1)")
    parser.add_argument("--long-streams", type=int, default=4, help="streams open at SIGTERM")
    parser.add_argument("--seed", type=int, default=None, help="fault plan and load (random)")
    parser.add_argument("--json", type=Path, default=None, help="also write the ledger here")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (proxy log)")
    args = parser.parse_args(argv)
    if args.duration < 20:
        parser.error("--duration must be at least 20 seconds")
    if args.replicas < 1:
        parser.error("--replicas must be at least 1")
    if args.seed is None:
        args.seed = random.randrange(1_000_000)
    return args


def run(args: argparse.Namespace) -> Ledger:
    """Set up, run, tear down; the whole thing bounded by duration + 120 s."""
    chaos = Chaos(args)
    try:
        chaos.start()
        return asyncio.run(asyncio.wait_for(chaos.run(), args.duration + 120))
    finally:
        chaos.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # the fakes' own server log: a proxy closing a stream it relays races the fake's writes
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    ledger = run(args)
    print(ledger.render())
    if args.json is not None:
        args.json.write_text(json.dumps(ledger.summary(), indent=2))
    return 0 if ledger.passed else 1


if __name__ == "__main__":
    sys.exit(main())
