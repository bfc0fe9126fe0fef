"""The response cache's cost and benefit, and the bars it must meet, against an upstream that
answers after 20 ms, as a model would (nginx cannot delay an answer).

    python bench/run.py --quick --targets proxy-cache-none,proxy-cache-miss,proxy-cache-hit \\
        --concurrency 1,16
    python bench/cache.py                  # the bars, read from bench/results/latest.json
    python bench/cache.py path/to/other.json
    python bench/cache.py --micro          # in process: the key, the disk backend, a whole hit

Targets (llm-proxy on core 0 as usual; the delayed upstream on core 1 with wrk):

* `proxy-cache-none`: cache backend `none`; every request a new question.
* `proxy-cache-miss`: the default disk cache; every request a new question, so each one is
  a lookup that misses, the upstream call, then the fill. Throughput is shown as a ratio
  to `proxy-cache-none`.
* `proxy-cache-hit`: the disk cache; the same question every time, so after the first
  request every one is a hit (the streaming mode replays the entry as a stream). Shown as
  a ratio to `proxy-cache-miss`.
* `proxy-cache-hit-memory`: the same with the memory backend (what the disk backend's
  thread hops cost), as a ratio to `proxy-cache-hit`.

The bars: a hit's p50 at most a third of a miss's; hits at least 2,000 requests/s on the
proxy's one core (disk backend); `proxy-cache-miss` p50 within 5 % of `proxy-cache-none`.

How it fits run.py, which this module does not change:

* The upstream (`python bench/cache.py upstream`, aiohttp) is started by the first of these
  targets to launch, pinned to core 1, shared by the three, and stopped when the runner
  exits (it also exits by itself when the runner is gone).
* run.py drives every target with bench/post.lua, one fixed body. The all-miss targets need
  a body that changes with each request, so for their model (`cache-vary`) wrk gets this
  module's own script instead: the same request plus a `seed` that never repeats (a seed
  also makes the request cacheable under `deterministic_only`).
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import json
import os
import statistics
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # run as a script, bench/ comes first on sys.path and this file would shadow any top-level
    # module named `cache`: put the repository there instead
    HERE = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
    sys.path.insert(0, str(HERE.parent))

from bench import procs, wrk
from bench.targets import (
    CHAT_PATH,
    CLIENT_KEY,
    UPSTREAM_KEY,
    Call,
    Command,
    Context,
    Target,
    proxy_target,
)
from bench.upstream import json_body, stream_body

UPSTREAM_DELAY = 0.020  # seconds before the upstream answers
UPSTREAM_CORE = 1  # with wrk (run.py's load core): core 0 is the target's alone
SAME_MODEL = "cache-same"  # wrk sends bench/post.lua's fixed body: hits
VARY_MODEL = "cache-vary"  # wrk sends a new seed with every request: misses
HIT_BAR_RATIO = 3.0
HIT_BAR_RPS = 2000.0
MISS_BAR_OVERHEAD = 0.05
# variables that would change what a target measures (proxy.reference.yaml's overrides)
UNSET = ("CACHE_ENABLED", "CACHE_TTL", "CACHE_MAX_SIZE", "REDIS_URL", "LLM_PROXY_CONFIG")
RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"

VARYING_LUA = """\
-- wrk script: bench/post.lua's request plus a "seed" that never repeats, so that every
-- request is a question the proxy has not seen (bench/cache.py writes this file).
-- Arguments after `--`: model, stream (1 adds "stream": true), key.
local head, tail
local counter = 0

function init(args)
  local model = args[1] or "cache-vary"
  local stream = args[2] or "0"
  local key = args[3] or "sk-bench-client"
  head = '{"model":"' .. model .. '","messages":[{"role":"user","content":"Say hello"}]'
  tail = (stream == "1" or stream == "true") and ',"stream":true}' or "}"
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. key
  -- seconds since the epoch times a million: no earlier run (a second or more ago,
  -- under a million requests) used these seeds
  counter = os.time() * 1000000
end

function request()
  counter = counter + 1
  local body = head .. ',"seed":' .. string.format("%.0f", counter) .. tail
  return wrk.format(nil, nil, nil, body)
end
"""


# ---------------------------------------------------------------------------------------------
# The delayed upstream


def serve_upstream(port: int, delay: float, parent: int) -> None:
    """A chat-completions upstream that answers bench/upstream.py's bodies after `delay`
    seconds (SSE when the request says `"stream":true`); exits when `parent` is gone."""
    import asyncio

    from aiohttp import web

    answer_json = json_body().encode()
    answer_stream = stream_body().encode()

    async def chat(request: web.Request) -> web.Response:
        body = await request.read()
        await asyncio.sleep(delay)
        if b'"stream":true' in body:
            return web.Response(body=answer_stream, content_type="text/event-stream")
        return web.Response(body=answer_json, content_type="application/json")

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        app.router.add_get("/health", health)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
        try:
            while os.getppid() == parent:
                await asyncio.sleep(1.0)
        finally:
            await runner.cleanup()

    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())


_upstreams: dict[Path, str] = {}
_lock = threading.Lock()


def upstream_url(ctx: Context) -> str:
    """The delayed upstream of this benchmark run, started on first use."""
    with _lock:
        if ctx.tmp not in _upstreams:
            port = procs.free_port()
            argv = [
                sys.executable, str(Path(__file__).resolve()), "upstream",
                "--port", str(port), "--delay", str(UPSTREAM_DELAY), "--parent", str(os.getpid()),
            ]  # fmt: skip
            proc = procs.Proc(
                "cache-upstream", argv, core=UPSTREAM_CORE, env=ctx.env(), cwd=ctx.repo,
                log_path=ctx.tmp / "cache-upstream.log",
            )  # fmt: skip
            atexit.register(proc.stop)
            if proc.wait_ready(port, "/health", 10.0) is None:
                proc.stop()
                raise RuntimeError(f"the delayed upstream did not start:\n{proc.log_tail()}")
            _upstreams[ctx.tmp] = f"http://127.0.0.1:{port}"
        return _upstreams[ctx.tmp]


# ---------------------------------------------------------------------------------------------
# The varying load


_varying_lua: Path | None = None


def use_varying_load(ctx: Context) -> None:
    """From now on, wrk runs for VARY_MODEL use VARYING_LUA instead of bench/post.lua."""
    global _varying_lua
    if _varying_lua is None:
        _varying_lua = ctx.tmp / "cache-vary.lua"
        _varying_lua.write_text(VARYING_LUA)
    if getattr(wrk.run, "varies_seed", False):
        return
    fixed = wrk.run

    def run(url: str, *, model: str, **kwargs: Any) -> wrk.WrkResult:
        if model != VARY_MODEL or _varying_lua is None:
            return fixed(url, model=model, **kwargs)
        wrk.LUA, saved = _varying_lua, wrk.LUA
        try:
            return fixed(url, model=model, **kwargs)
        finally:
            wrk.LUA = saved

    run.varies_seed = True  # type: ignore[attr-defined]
    wrk.run = run


# ---------------------------------------------------------------------------------------------
# Targets


def cache_policy_text(
    upstream: str, port: int, path: str, backend: str, log_level: str = "INFO"
) -> str:
    return f"""\
server: {{host: 127.0.0.1, port: {port}}}
upstreams:
  slow: {{type: openai, base_url: "{upstream}/v1", api_key: {UPSTREAM_KEY}}}
models:
  {SAME_MODEL}: {{routes: [{{upstream: slow, model: gpt-4o-mini}}]}}
  {VARY_MODEL}: {{routes: [{{upstream: slow, model: gpt-4o-mini}}]}}
keys:
  - {{name: bench, key: {CLIENT_KEY}}}
cache:
  backend: {backend}
  path: "{path}"
  deterministic_only: false
logging: {{level: {log_level}}}
"""


def cache_policy(ctx: Context, port: int, name: str, backend: str) -> str:
    return cache_policy_text(upstream_url(ctx), port, str(ctx.tmp / f"{name}.cache"), backend)


def cache_target(name: str, about: str, backend: str, model: str, baseline: str) -> Target:
    def policy(ctx: Context, port: int) -> str:
        return cache_policy(ctx, port, name, backend)

    target = proxy_target(
        name, about, policy, calls={False: Call(CHAT_PATH, model), True: Call(CHAT_PATH, model)},
        baseline=baseline,
    )  # fmt: skip
    launch = target.launch
    assert launch is not None

    def launch_cache_target(ctx: Context, port: int) -> Command:
        try:
            command = launch(ctx, port)
        except RuntimeError as exc:  # no upstream: the target is skipped, saying why
            why = f"{exc}"[-1500:]
            return Command([sys.executable, "-c", f"raise SystemExit({why!r})"], ctx.env())
        if model == VARY_MODEL:
            use_varying_load(ctx)
        env = {k: v for k, v in command.env.items() if k not in UNSET}
        return Command(command.argv, env)

    return dataclasses.replace(target, launch=launch_cache_target, tags=target.tags | {"cache"})


def cache_targets() -> list[Target]:
    delay = f"{UPSTREAM_DELAY * 1000:g} ms upstream"
    return [
        cache_target(
            "proxy-cache-none",
            f"llm-proxy, cache backend none, a new question each request ({delay})",
            "none",
            VARY_MODEL,
            baseline="proxy",
        ),
        cache_target(
            "proxy-cache-miss",
            f"llm-proxy, disk cache, a new question each request: all misses ({delay})",
            "disk",
            VARY_MODEL,
            baseline="proxy-cache-none",
        ),
        cache_target(
            "proxy-cache-hit",
            f"llm-proxy, disk cache, the same question each request: all hits ({delay})",
            "disk",
            SAME_MODEL,
            baseline="proxy-cache-miss",
        ),
        cache_target(
            "proxy-cache-hit-memory",
            f"llm-proxy, memory cache, the same question each request: all hits ({delay})",
            "memory",
            SAME_MODEL,
            baseline="proxy-cache-hit",
        ),
    ]


# ---------------------------------------------------------------------------------------------
# Micro-benchmark: what the cache costs per request, in process (no HTTP, no upstream)


def micro_benchmark(rounds: int = 2000) -> dict[str, float]:
    """Microseconds per operation (median of 5 rounds): the key and decision, the disk
    backend's get and set as the proxy calls them (in a thread) and directly, and a whole
    hit through `Gateway.handle_chat` on the disk and memory backends."""
    import asyncio
    import functools
    import tempfile
    import time

    from proxy.cache.backends import WRITE_BATCH, DiskBackend
    from proxy.cache.keys import decide
    from proxy.config import CacheConfig
    from proxy.formats.base import DecodeContext
    from proxy.formats.chat import CHAT
    from proxy.gateway import Gateway
    from proxy.loader import load_text

    request = b'{"model":"cache-same","messages":[{"role":"user","content":"Say hello"}],"seed":7}'
    answer = json_body().encode()
    figures: dict[str, float] = {}

    async def timed(name: str, operation: Callable[[], Any], n: int = rounds) -> None:
        samples = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(n):
                result = operation()
                if asyncio.iscoroutine(result):
                    await result
            samples.append((time.perf_counter() - started) / n * 1e6)
        figures[name] = statistics.median(samples)

    async def run(tmp: Path) -> None:
        config = CacheConfig(backend="disk")
        probe = Gateway(load_text(cache_policy_text("http://127.0.0.1:9", 0, str(tmp / "p"),
                                                    "memory", "WARNING"), env={}))  # fmt: skip
        caller = probe.policy.authenticate(f"Bearer {CLIENT_KEY}")
        head = await CHAT.decode(request, DecodeContext(probe.policy, caller, {}))
        await timed("key + decision", lambda: decide(config, None, head, "b", "m", None))
        disk = DiskBackend(tmp / "direct", 2**30)
        await disk.set("k", answer, 3600)
        await timed("disk get (on the loop, as the proxy does)", lambda: disk.get("k"))
        await timed("disk get, direct", lambda: disk._cache.get("k"))
        counter = iter(range(10**9))
        await timed("disk set, in a thread", lambda: disk.set(f"k{next(counter)}", answer, 3600))
        await timed("disk set, direct", lambda: disk._cache.set(f"k{next(counter)}", answer, 3600))
        await timed("disk put, queued", lambda: disk.put(f"k{next(counter)}", answer, 3600))

        def batch_written() -> None:  # what the loop spends per batch of fills
            for _ in range(WRITE_BATCH):
                disk.put(f"k{next(counter)}", answer, 3600)
            disk._flush()

        await timed(f"disk flush of {WRITE_BATCH} fills (on the loop)", batch_written, 50)
        await disk.close()
        for backend in ("disk", "memory"):
            path = str(tmp / backend)
            text = cache_policy_text("http://127.0.0.1:9", 0, path, backend, "WARNING")
            gateway = Gateway(load_text(text, env={}))
            await gateway.start()
            auth = f"Bearer {CLIENT_KEY}"
            policy = gateway.policy
            resolved = policy.resolve(SAME_MODEL)
            assert resolved is not None
            decision = decide(policy.config.cache, None, head, caller.name, resolved.public, None)
            assert decision is not None
            gateway.cache.fill(decision.key, answer, "slow/gpt-4o-mini", 3600)
            while gateway.cache._fills:
                await asyncio.sleep(0.01)
            hit = await gateway.handle_chat(request, auth, "req", {})
            assert hit.headers["x-llm-proxy-cache"] == "hit", hit.headers
            await timed(
                f"a whole hit, handle_chat, {backend}",
                functools.partial(gateway.handle_chat, request, auth, "req", {}),
                n=rounds // 2,
            )
            await gateway.close()

    with tempfile.TemporaryDirectory(prefix="llm-proxy-cache-micro-") as tmp:
        asyncio.run(run(Path(tmp)))
    return figures


# ---------------------------------------------------------------------------------------------
# The bars, from a run's raw results


def _runs(points: list[dict[str, Any]], target: str, stream: bool, c: int) -> list[dict[str, Any]]:
    for point in points:
        if (point["target"], point["stream"], point["c"]) == (target, stream, c):
            runs: list[dict[str, Any]] = point["runs"]
            return runs
    return []


def _paired(
    a: list[dict[str, Any]], b: list[dict[str, Any]], figure: Callable[[Any, Any], float]
) -> float | None:
    """The median over runs of figure(a's run i, b's run i)."""
    values = [figure(x, y) for x, y in zip(a, b, strict=False)]
    return statistics.median(values) if values else None


def bars(results: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(what, figures, passed) for each bar, mode and concurrency measured."""
    points = results["points"]
    lines: list[tuple[str, str, bool | None]] = []
    combos = sorted(
        {(p["stream"], p["c"]) for p in points if p["target"].startswith("proxy-cache")}
    )
    for stream, c in combos:
        mode = "stream" if stream else "json"
        none = _runs(points, "proxy-cache-none", stream, c)
        miss = _runs(points, "proxy-cache-miss", stream, c)
        hit = _runs(points, "proxy-cache-hit", stream, c)
        if miss and hit:
            ratio = _paired(miss, hit, lambda m, h: m["p50_ms"] / h["p50_ms"])
            p50s = f"miss {_median(miss, 'p50_ms'):.2f} ms, hit {_median(hit, 'p50_ms'):.2f} ms"
            assert ratio is not None
            lines.append(
                (f"{mode} c={c}: hit p50 >= {HIT_BAR_RATIO:g}x lower than a miss's",
                 f"{ratio:.1f}x ({p50s})", ratio >= HIT_BAR_RATIO)
            )  # fmt: skip
        if hit:
            rps = _median(hit, "rps")
            passed = rps >= HIT_BAR_RPS if c >= 16 else None  # c=1 measures latency, not capacity
            lines.append(
                (f"{mode} c={c}: hits >= {HIT_BAR_RPS:,.0f} req/s on one core (disk)",
                 f"{rps:,.0f} req/s", passed)
            )  # fmt: skip
        if none and miss:
            added = _paired(miss, none, lambda m, n: m["p50_ms"] / n["p50_ms"] - 1)
            assert added is not None
            p50s = f"none {_median(none, 'p50_ms'):.2f} ms, disk {_median(miss, 'p50_ms'):.2f} ms"
            lines.append(
                (f"{mode} c={c}: the cache adds < {MISS_BAR_OVERHEAD:.0%} to a miss's p50",
                 f"{added:+.1%} ({p50s})", added < MISS_BAR_OVERHEAD)
            )  # fmt: skip
        errors = sum(r["non_2xx"] + r["socket_errors"] for r in none + miss + hit)
        if errors:
            lines.append((f"{mode} c={c}: errors during the runs", f"{errors}", False))
    return lines


def _median(runs: list[dict[str, Any]], figure: str) -> float:
    return float(statistics.median(r[figure] for r in runs))


def print_bars(path: Path) -> int:
    results = json.loads(path.read_text())
    lines = bars(results)
    if not lines:
        print(f"no proxy-cache-* points in {path}: run bench/run.py with those targets first")
        return 1
    print(f"Response cache bars, from {path}:\n")
    print("| bar | measured | |\n|:---|:---|:---|")
    for what, figures, passed in lines:
        verdict = "n/a" if passed is None else ("pass" if passed else "FAIL")
        print(f"| {what} | {figures} | {verdict} |")
    failed = [what for what, _, passed in lines if passed is False]
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["upstream"]:  # what the targets start
        up = argparse.ArgumentParser(prog="bench/cache.py upstream")
        up.add_argument("--port", type=int, required=True)
        up.add_argument("--delay", type=float, default=UPSTREAM_DELAY)
        up.add_argument("--parent", type=int, default=os.getppid())
        args = up.parse_args(argv[1:])
        serve_upstream(args.port, args.delay, args.parent)
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("results", nargs="?", type=Path, default=RESULTS)
    parser.add_argument("--micro", action="store_true", help="the in-process micro-benchmark")
    args = parser.parse_args(argv)
    if args.micro:
        for name, micros in micro_benchmark().items():
            print(f"{name:45} {micros:8.1f} us")
        return 0
    return print_bars(args.results)


if __name__ == "__main__":
    sys.exit(main())
