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

- six fake OpenAI upstreams (tests/fakes/openai_upstream.py, each in a thread): `up-a` flaky
  (500, 503, 429 with Retry-After, hangs past the timeout, resets before the answer and after
  the first stream chunk, stalls, error events), `up-b` slow (slow streams, hangs), `up-c` a
  mostly healthy backup, `up-long` slow streams for the shutdown; `up-steady` (always answers)
  and `up-dead` (always 500) for the replica checks only;
- a redis-server of its own (never the system one), for limits, breakers and the cache;
- `--replicas` proxies (`python -m proxy serve`, subprocesses; 2 by default) on the same
  bench/chaos_policy.py policy file and the same Redis: weighted and priority routes,
  fallbacks, breakers, key limits, a Redis cache;
- the load: `--workers` concurrent clients, the `openai` SDK and raw HTTP (SSE read byte by
  byte), streaming and not, through three keys (one with a tight rate limit), a few clients
  hanging up mid-stream on purpose; request i goes to replica i mod N.

Timeline (D = --duration): at 0.08 D the replica checks (bench/chaos_replicas.py): a burst on
a key limited to 30 requests a minute, spread over the replicas, must see exactly 30 pass; then
a breaker opened on replica 1 must show open on the others; at 0.25 D Redis is stopped, and
started again (empty) a few seconds later; at 0.45 D proxy.yaml is rewritten with a valid change
(a new model, which the load then uses); at 0.65 D with an invalid one (every replica must
refuse it, the old policy serving on); a second before D long streams start; at D the load stops
and every replica gets SIGTERM with those streams and the last requests in flight: they must all
finish, and every replica exit 0 within its drain.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import shutil
import signal
import subprocess
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

from fakes.proxy_harness import PROXY_ENV_OVERRIDES, free_port  # noqa: E402
from fakes.redis_server import RedisServer  # noqa: E402

from bench.chaos_faults import FaultyUpstream, Timeouts  # noqa: E402
from bench.chaos_ledger import Event, Ledger  # noqa: E402
from bench.chaos_load import Load, Mix, Result  # noqa: E402
from bench.chaos_policy import (  # noqa: E402
    DRAIN_TIMEOUT,
    KEYS,
    changed_policy,
    chaos_policy,
    invalid_policy,
)
from bench.chaos_replicas import breaker_shared, limit_burst  # noqa: E402

START_TIMEOUT = 30.0
RELOAD_WITHIN = 8.0  # seconds for a rewrite to show in /health (a loaded machine)
LONG_STREAM_WORDS = 20  # x 0.2 s: a 4 s stream, well inside the drain timeout
PLANS = {
    "up-a": "flaky",
    "up-b": "slow",
    "up-c": "backup",
    "up-long": "long",
    "up-steady": "steady",
    "up-dead": "dead",
}
LOAD_UPSTREAMS = ("up-a", "up-b", "up-c")  # whose faults the ledger counts


class Proxy:
    """One proxy subprocess (replica `number`), in its own process group, output to a file."""

    def __init__(self, workdir: Path, config: Path, number: int) -> None:
        self.number = number
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"proxy-{number}.log"
        env = {k: v for k, v in os.environ.items() if k not in PROXY_ENV_OVERRIDES}
        env.update(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        argv = [
            sys.executable,
            "-m",
            "proxy",
            "serve",
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                argv,
                cwd=workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        with httpx.Client(timeout=2) as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"proxy {self.number} exited early:\n{self.log()[-3000:]}")
                with contextlib.suppress(httpx.TransportError):
                    if http.get(f"{self.url}/health/readiness").status_code == 200:
                        return
                time.sleep(0.1)
        raise RuntimeError(
            f"proxy {self.number} not ready in {START_TIMEOUT}s:\n{self.log()[-3000:]}"
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_exit(self, timeout: float) -> tuple[int | None, float]:
        """Its exit code (None: still running after `timeout`) and the seconds it took."""
        started = time.monotonic()
        try:
            code: int | None = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


class Chaos:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.workdir = Path(tempfile.mkdtemp(prefix="llm-proxy-chaos-"))
        self.timeouts = Timeouts()
        self.upstreams = {
            name: FaultyUpstream(name, plan, self.timeouts, seed=self.rng.randrange(2**32))
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
        self.policy = chaos_policy(urls, self.redis.url, self.timeouts)
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

    async def redis_outage(self) -> None:
        await self.at(0.25)
        await asyncio.to_thread(self.redis.stop)
        down = min(6.0, max(2.0, 0.08 * self.args.duration))
        self.event(f"Redis stopped (for {down:.0f} s)")
        await asyncio.sleep(down)
        await asyncio.to_thread(self.redis.start)
        self.event("Redis started again, empty, on the same port")

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

    async def shutdown(self, load: Load, mix: Mix) -> list[Result]:
        """Long streams (spread over the replicas), then SIGTERM to every replica with them
        (and the last requests) in flight."""
        await self.at(1.0)
        longs = []
        for i in range(self.args.long_streams):
            spec = mix.spec("chat-long")
            spec.stream, spec.hang_up, spec.client = True, False, ("sdk", "raw")[i % 2]
            spec.key_name = "svc"  # not the 4/second key: these test the drain, not the limits
            spec.words = [f"long{spec.rid}"] + [f"w{j}" for j in range(LONG_STREAM_WORDS - 1)]
            longs.append(asyncio.create_task(load.one(spec)))
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
            f"{r.outcome} {r.status} {r.error or ''} {r.detail[:80]}"
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
                self.replica_checks(http), self.redis_outage(), self.reloads(http, mix)
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
