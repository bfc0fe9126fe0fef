"""Limits on the hot path: the bench key and both bench models limited, never refusing.

    python bench/run.py --quick --targets proxy,proxy-limits,proxy-limits-redis --concurrency 16
    python bench/limits.py             # the micro-benchmark: limits cost per request

Targets (throughput shown as a ratio to `proxy`, the same policy without limits):

* `proxy-limits`: a key limit and a model limit (``requests: "1000000/minute"`` each) with
  `memory://` storage. Bar: at least 0.85x.
* `proxy-limits-redis`: the same limits in a `redis-server` on loopback, started for the run
  with the proxy (pinned to core 1 like nginx; `on_storage_error: deny`, so a Redis that
  fails shows as errors, never as a fast fail-open). Bar: at least 0.60x. Its RSS includes
  the redis-server (a child of the target, so that stopping the target stops it too).
* `proxy-limits-all`: memory storage, every kind on the key (requests, tokens, concurrency,
  a budget with prices) and requests + tokens on the models: the cost of a full setup.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

if __package__ in (None, ""):
    # run as a script, bench/ comes first on sys.path and this file would shadow the `limits`
    # library the proxy imports: put the repository there instead
    HERE = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
    sys.path.insert(0, str(HERE.parent))

from bench.targets import (
    CHAT_PATH,
    CLIENT_KEY,
    Call,
    Command,
    Context,
    Target,
    default_policy,
    proxy_target,
)

NEVER = "1000000/minute"  # high enough never to refuse under the bench load
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CORE = 1  # with nginx and wrk: core 0 is the target's alone
MODELS = ("gpt-4o-mini", "gpt-4o-mini-stream")
CALLS = {False: Call(CHAT_PATH, "gpt-4o-mini"), True: Call(CHAT_PATH, "gpt-4o-mini-stream")}
# variables that would change what a target measures (REDIS_URL would move `memory://` away)
UNSET = ("REDIS_URL", "DEFAULT_RATE_LIMIT", "DEFAULT_BURST_LIMIT", "LLM_PROXY_CONFIG")


def limited(policy_text: str, storage: str, everything: bool = False, **extra: Any) -> str:
    """`policy_text` (the `proxy` target's) with limits on its key and models."""
    policy: dict[str, Any] = yaml.safe_load(policy_text)
    key_limits: dict[str, Any] = {"requests": NEVER}
    model_limits: dict[str, Any] = {"requests": NEVER}
    if everything:
        key_limits |= {"tokens": "1000000000/minute", "concurrency": 10_000}
        model_limits |= {"tokens": "1000000000/minute"}
    for entry in policy["keys"]:
        entry["limits"] = dict(key_limits)
        if everything:
            entry["budget"] = {"usd": 1_000_000_000, "period": "month"}
    for name in MODELS:
        policy["models"][name]["limits"] = dict(model_limits)  # no YAML anchors
    if everything:
        policy["prices"] = {"gpt-4o-mini": {"input": 0.15, "output": 0.60}}
    policy["limits"] = {"storage": storage, **extra}
    return yaml.safe_dump(policy, sort_keys=False)


def _clean_env(command: Command) -> Command:
    return Command(command.argv, {k: v for k, v in command.env.items() if k not in UNSET})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_argv(port: int, workdir: Path) -> list[str]:
    return [
        "taskset", "-c", str(REDIS_CORE), REDIS_SERVER,
        "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--daemonize", "no", "--dir", str(workdir),
    ]  # fmt: skip


def memory_target() -> Target:
    target = proxy_target(
        "proxy-limits",
        f'llm-proxy + a key limit and a model limit ("{NEVER}"), memory storage',
        lambda ctx, port: limited(default_policy(ctx, port), "memory://"),
        calls=CALLS,
        baseline="proxy",
    )
    return _without_overrides(target)


def everything_target() -> Target:
    def policy(ctx: Context, port: int) -> str:
        text = limited(default_policy(ctx, port), "memory://", everything=True)
        data = yaml.safe_load(text)
        data["cache"] = {"path": str(ctx.tmp / "proxy-limits-all-cache")}  # spend.json lands here
        return yaml.safe_dump(data, sort_keys=False)

    target = proxy_target(
        "proxy-limits-all",
        "llm-proxy + key requests/tokens/concurrency/budget, model requests/tokens, memory",
        policy,
        calls=CALLS,
        baseline="proxy",
    )
    return _without_overrides(target)


def redis_target() -> Target:
    """The proxy's command becomes `sh -c 'redis-server ... & exec python -m proxy ...'`: the
    redis-server is a child of the target, in its process group, so it stops with it."""
    ports: dict[int, int] = {}  # proxy port -> its redis port

    def policy(ctx: Context, port: int) -> str:
        storage = f"redis://127.0.0.1:{ports[port]}/0"
        return limited(default_policy(ctx, port), storage, on_storage_error="deny")

    target = proxy_target(
        "proxy-limits-redis",
        f'llm-proxy + a key limit and a model limit ("{NEVER}"), redis-server on loopback '
        f"(core {REDIS_CORE})",
        policy,
        calls=CALLS,
        baseline="proxy",
    )
    launch = target.launch
    assert launch is not None

    def launch_with_redis(ctx: Context, port: int) -> Command:
        ports[port] = free_port()
        workdir = ctx.tmp / f"redis-{ports[port]}"
        workdir.mkdir(parents=True, exist_ok=True)
        proxy = launch(ctx, port)
        script = (
            f"{shlex.join(redis_argv(ports[port], workdir))} >{shlex.quote(str(workdir))}/log 2>&1"
            f" & exec {shlex.join(proxy.argv)}"
        )
        return _clean_env(Command(["sh", "-c", script], proxy.env))

    return dataclasses.replace(target, launch=launch_with_redis, tags=target.tags | {"redis"})


def _without_overrides(target: Target) -> Target:
    launch = target.launch
    assert launch is not None

    def clean_launch(ctx: Context, port: int) -> Command:
        return _clean_env(launch(ctx, port))

    return dataclasses.replace(target, launch=clean_launch)


def limits_targets() -> list[Target]:
    return [memory_target(), redis_target(), everything_target()]


# ---------------------------------------------------------------------------------------------
# Micro-benchmark: what admission and the final charge cost per request, in process


@contextlib.contextmanager
def redis_server() -> Iterator[int]:
    """A throwaway redis-server on a free port (never the system one); yields the port."""
    workdir = Path(tempfile.mkdtemp(prefix="llm-proxy-bench-redis-"))
    port = free_port()
    argv = redis_argv(port, workdir)
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    break
            time.sleep(0.02)
        else:
            raise RuntimeError("redis-server did not start")
        yield port
    finally:
        process.terminate()
        process.wait(5)
        shutil.rmtree(workdir, ignore_errors=True)


class Monitor:
    """Redis MONITOR on its own connection: the commands clients send (not those a Lua script
    runs), to count round trips per request. A MULTI ... EXEC block counts as one."""

    def __init__(self, port: int) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port))
        self._sock.sendall(b"MONITOR\r\n")
        self._data = b""
        while b"\r\n" not in self._data:
            self._data += self._sock.recv(4096)
        self._data = self._data.split(b"\r\n", 1)[1]  # +OK
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(OSError):
            while chunk := self._sock.recv(65536):
                self._data += chunk

    def round_trips(self) -> int:
        time.sleep(0.2)  # let the last lines arrive
        self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(5)
        trips, in_multi = 0, False
        for line in self._data.decode(errors="replace").splitlines():
            if " lua]" in line or '"' not in line:
                continue
            command = line.split('"', 2)[1].lower()
            if command == "multi":
                in_multi, trips = True, trips + 1
            elif command == "exec":
                in_multi = False
            elif not in_multi:
                trips += 1
        return trips


def micro_benchmark(
    storage: str, everything: bool, rounds: int, port: int | None = None
) -> dict[str, float]:
    """Per request: Limiter.admit (key + model), admit_route (the route's and upstream's
    limits: none here) and Limiter.finish (charge, spend, release), as the gateway calls them."""
    from proxy.gateway import Gateway
    from proxy.loader import load_text

    ctx = Context(Path.cwd(), Path(tempfile.mkdtemp(prefix="llm-proxy-bench-limits-")), 9)
    text = limited(default_policy(ctx, 0), storage, everything)
    data = yaml.safe_load(text)
    data["cache"] = {"backend": "none", "path": str(ctx.tmp / "cache")}
    gateway = Gateway(load_text(yaml.safe_dump(data), env={}))
    caller = gateway.policy.authenticate(f"Bearer {CLIENT_KEY}")
    limiter = gateway.limiter

    async def once() -> None:
        admission = await limiter.admit(caller, "gpt-4o-mini", 5)
        await limiter.admit_route(admission, "fake/gpt-4o-mini", "fake")
        await limiter.finish(admission, "fake/gpt-4o-mini", "gpt-4o-mini", "gpt-4o-mini", 9, 17)

    async def run() -> dict[str, float]:
        await gateway.start()
        try:
            for _ in range(min(rounds, 500)):
                await once()
            figures: dict[str, float] = {}
            if port:
                monitor, counted = Monitor(port), 50
                for _ in range(counted):
                    await once()
                figures["redis_round_trips"] = monitor.round_trips() / counted
            samples = []
            for _ in range(5):
                started = time.perf_counter()
                for _ in range(rounds):
                    await once()
                samples.append((time.perf_counter() - started) / rounds * 1e6)
            return {"median_us": statistics.median(samples), "min_us": min(samples), **figures}
        finally:
            await gateway.close()
            shutil.rmtree(ctx.tmp, ignore_errors=True)

    return asyncio.run(run())


def _report(name: str, figures: dict[str, float], bar: str) -> None:
    line = f"{name:44} median {figures['median_us']:7.1f} us, best {figures['min_us']:7.1f} us"
    if "redis_round_trips" in figures:
        line += f", {figures['redis_round_trips']:.1f} Redis round trips"
    print(f"{line}  {bar}")


def main() -> None:
    os.environ.pop("REDIS_URL", None)
    cases: list[tuple[str, Callable[[], dict[str, float]], str]] = [
        ("memory: key + model requests", lambda: micro_benchmark("memory://", False, 5000),
         "(bar: < 100 us)"),
        ("memory: every kind (key) + model req/tokens", lambda: micro_benchmark(
            "memory://", True, 5000), "(bar: < 100 us)"),
    ]  # fmt: skip
    for name, measure, bar in cases:
        _report(name, measure(), bar)
    if not os.access(REDIS_SERVER, os.X_OK):
        print("redis-server not found: Redis figures skipped")
        return
    with redis_server() as port:
        url = f"redis://127.0.0.1:{port}/0"
        _report("redis: key + model requests", micro_benchmark(url, False, 500, port), "")
        everything = micro_benchmark(url, True, 500, port)
        _report("redis: every kind (key) + model req/tokens", everything, "")


if __name__ == "__main__":
    main()
