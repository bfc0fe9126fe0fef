"""Soak: llm-proxy under steady mixed load for a long time, sampled for leaks.

    . .venv/bin/activate
    python bench/soak.py                                     # 30 min, a sample a minute
    python bench/soak.py --duration 3 --sample-every 20 --warmup 1 --json /tmp/soak.json

The proxy (`python -m proxy serve`, pinned to core 0) runs the `proxy` target's policy plus a
never-refusing key and model limit (so the limiter runs) and a model whose every request after
the first is a cache hit (disk cache). The upstream is nginx (bench/upstream.py) when it is on
PATH, else bench/cache.py's python upstream (20 ms per answer); the load is wrk (bench/post.lua)
when it is on PATH, else an httpx client in this process: closed loop, `--connections` each
for non-streaming and streaming requests, one for cached ones (hits are cheap: more would make
them most of the load). Upstream, load and this runner use core 1; the live samples go to
stderr, the report to stdout.

Every `--sample-every` seconds: the `process` section of /health (RSS, open FDs, asyncio tasks,
threads), VmRSS from /proc/<pid>/status and the requests the proxy counted (/metrics). At the
end: a table of the samples; over the samples after `--warmup` minutes, the least-squares RSS
slope (KiB/min and % of the RSS per hour) and the FD and task ranges; the requests served and
the errors. Exit 1 when the slope is above `--max-slope-kib-min`, when the last FD or task count
is more than `--margin` above its warm-up maximum, on any error, or if the proxy died.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    # run as a script, bench/ comes first on sys.path and bench/limits.py would shadow the
    # `limits` library the proxy imports: put the repository there instead
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
    sys.path.insert(0, str(REPO))

from bench import cache, procs, wrk  # noqa: E402
from bench.limits import limited  # noqa: E402
from bench.run import LOAD_CORE, MARKERS, check, exclusive, launch, request_body  # noqa: E402
from bench.run import start_upstream as start_nginx  # noqa: E402
from bench.targets import (  # noqa: E402
    CHAT_PATH,
    CLIENT_KEY,
    Call,
    Context,
    default_policy,
    proxy_target,
)

CACHED_MODEL = "soak-cached"
# (kind, model, stream): the load's three streams of requests
KINDS = (
    ("json", "gpt-4o-mini", False),
    ("stream", "gpt-4o-mini-stream", True),
    ("cached", CACHED_MODEL, False),
)


# ---- the analysis ------------------------------------------------------------------------------


@dataclass
class Sample:
    seconds: float  # since the load started
    rss_kib: int  # VmRSS from /proc/<pid>/status
    health_rss_kib: int | None  # /health's process.rss_bytes
    fds: int | None
    tasks: int | None
    threads: int | None
    served: int | None  # chat requests the proxy has answered (/metrics)


@dataclass
class Verdict:
    warmup_s: float
    samples_after: int
    slope_kib_min: float | None = None
    slope_pct_hour: float | None = None
    ranges: dict[str, tuple[int, int]] = field(default_factory=dict)  # after warm-up
    warmup_max: dict[str, int] = field(default_factory=dict)
    last: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def analyse(samples: list[Sample], warmup_s: float, max_slope: float, margin: int) -> Verdict:
    """The RSS slope and FD/task ranges after warm-up, and what failed."""
    warm = [s for s in samples if s.seconds <= warmup_s]
    after = [s for s in samples if s.seconds >= warmup_s]
    verdict = Verdict(warmup_s, len(after))
    if len(after) < 3:
        verdict.failures.append(f"only {len(after)} samples after warm-up (3 at least)")
        return verdict
    fit = statistics.linear_regression([s.seconds / 60 for s in after], [s.rss_kib for s in after])
    verdict.slope_kib_min = fit.slope
    verdict.slope_pct_hour = 100 * fit.slope * 60 / statistics.fmean(s.rss_kib for s in after)
    if fit.slope > max_slope:
        verdict.failures.append(f"RSS grows {fit.slope:.1f} KiB/min (> {max_slope:g})")
    for name in ("fds", "tasks"):
        values = [v for s in after if (v := getattr(s, name)) is not None]
        before = [v for s in warm if (v := getattr(s, name)) is not None]
        if not values or not before:
            continue
        verdict.ranges[name] = (min(values), max(values))
        verdict.warmup_max[name], verdict.last[name] = max(before), values[-1]
        if values[-1] > max(before) + margin:
            verdict.failures.append(
                f"{name} grew: {values[-1]} at the end, {max(before)} at most during warm-up"
            )
    return verdict


# ---- the load ----------------------------------------------------------------------------------


def connections_for(kind: str, per_kind: int) -> int:
    return 1 if kind == "cached" else per_kind


@dataclass
class Tally:
    requests: Counter[str] = field(default_factory=Counter)  # by kind
    errors: Counter[str] = field(default_factory=Counter)


class WrkLoad:
    """One wrk per kind (bench/post.lua), all at once, each a pinned process of its own."""

    def __init__(self, url: str, seconds: float, connections: int, tmp: Path) -> None:
        self.procs: dict[str, procs.Proc] = {}
        for kind, model, stream in KINDS:
            argv = [
                "wrk", "-t1", f"-c{connections_for(kind, connections)}", f"-d{seconds:g}s",
                "--timeout", "10s", "-s", str(wrk.LUA), url + CHAT_PATH,
                "--", model, "1" if stream else "0", CLIENT_KEY,
            ]  # fmt: skip
            self.procs[kind] = procs.Proc(
                f"wrk-{kind}", argv, core=LOAD_CORE, log_path=tmp / f"wrk-{kind}.log"
            )

    async def wait(self) -> Tally:
        tally = Tally()
        for kind, proc in self.procs.items():
            while proc.popen.poll() is None:
                await asyncio.sleep(0.5)
            proc.stop()  # closes its log
            result = wrk.parse(proc.log_path.read_text())
            tally.requests[kind], tally.errors[kind] = result.requests, result.errors
            if proc.popen.returncode != 0 or not result.requests:
                tally.errors[kind] += 1  # wrk itself failed: its log says why
        return tally

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()


async def httpx_load(url: str, seconds: float, connections: int) -> Tally:
    """The same load without wrk: `connections` closed-loop clients per kind, in this process."""
    tally = Tally()
    deadline = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"}

    async def client(http: httpx.AsyncClient, kind: str, model: str, stream: bool) -> None:
        body = request_body(model, stream)
        while time.monotonic() < deadline:
            tally.requests[kind] += 1
            try:
                resp = await http.post(CHAT_PATH, content=body, headers=headers)
                good = resp.status_code == 200 and MARKERS[stream] in resp.content
            except httpx.HTTPError:
                good = False
            tally.errors[kind] += not good

    limits = httpx.Limits(max_connections=connections * len(KINDS))
    async with httpx.AsyncClient(base_url=url, timeout=10, limits=limits) as http:
        await asyncio.gather(
            *(
                client(http, *kind)
                for kind in KINDS
                for _ in range(connections_for(kind[0], connections))
            )
        )
    return tally


# ---- the run -----------------------------------------------------------------------------------


def soak_policy(ctx: Context, port: int, json_base: str, stream_base: str, level: str) -> str:
    """The `proxy` target's policy, limited (never refusing), with a cached model."""
    policy: dict[str, Any] = yaml.safe_load(limited(default_policy(ctx, port), "memory://"))
    policy["upstreams"]["fake"]["base_url"] = json_base
    policy["upstreams"]["fakestream"]["base_url"] = stream_base
    policy["models"][CACHED_MODEL] = {
        "routes": [{"upstream": "fake", "model": "gpt-4o-mini"}],
        "cache": {"deterministic_only": False},  # post.lua's one body: a hit after the first
    }
    policy["cache"] = {"backend": "disk", "path": str(ctx.tmp / "cache")}
    policy["logging"] = {"level": level}
    return yaml.safe_dump(policy, sort_keys=False)


def start_upstream(tmp: Path, stack: contextlib.ExitStack) -> tuple[Context, str, str, str]:
    """nginx when there is one, else bench/cache.py's python upstream: (context, JSON base URL,
    stream base URL, what it is)."""
    if shutil.which("nginx"):
        ctx = Context(REPO, tmp, start_nginx(tmp, stack))
        return ctx, f"{ctx.upstream_url}/json/v1", f"{ctx.upstream_url}/stream/v1", "nginx"
    url = cache.upstream_url(Context(REPO, tmp, 0))  # stopped at exit
    ctx = Context(REPO, tmp, int(url.rsplit(":", 1)[1]))
    about = f"python (bench/cache.py, {cache.UPSTREAM_DELAY * 1000:.0f} ms an answer)"
    return ctx, f"{url}/v1", f"{url}/v1", about


def start_proxy(
    args: argparse.Namespace, tmp: Path, stack: contextlib.ExitStack
) -> tuple[procs.Proc, str, str]:
    ctx, json_base, stream_base, upstream = start_upstream(tmp, stack)
    target = proxy_target(
        "soak",
        "llm-proxy under the soak",
        lambda c, port: soak_policy(c, port, json_base, stream_base, args.log_level),
        calls={stream: Call(CHAT_PATH, model) for _, model, stream in KINDS[:2]},
    )
    started = launch(target, ctx, stack, 1)
    if isinstance(started, str):
        raise SystemExit(f"the proxy did not start: {started}")
    proc, port, _ = started
    assert proc is not None
    if why := check(target, port, [False, True]):
        raise SystemExit(f"the proxy does not answer: {why}")
    return proc, f"http://127.0.0.1:{port}", upstream


def served(metrics_text: str) -> int:
    """Chat requests the proxy has answered, whatever the status."""
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(metrics_text)
            if family.name == "llm_proxy_requests"
            for sample in family.samples
            if sample.name == "llm_proxy_requests_total"
        )
    )


async def take_sample(http: httpx.AsyncClient, proc: procs.Proc, t0: float) -> Sample:
    seconds = time.monotonic() - t0
    process = (await http.get("/health")).json()["process"]
    count = served((await http.get("/metrics")).text)
    rss = process.get("rss_bytes")
    return Sample(
        seconds=round(seconds, 1),
        rss_kib=proc.rss_kib(),
        health_rss_kib=None if rss is None else rss // 1024,
        fds=process.get("open_fds"),
        tasks=process.get("asyncio_tasks"),
        threads=process.get("threads"),
        served=count,
    )


async def sample_loop(
    args: argparse.Namespace, proc: procs.Proc, url: str
) -> tuple[list[Sample], str | None]:
    """A sample every `--sample-every` seconds while the load runs, printed as it comes; stops
    early, saying why, when the proxy exits or /health does not answer."""
    samples: list[Sample] = []
    t0 = time.monotonic()
    count = int(args.duration * 60 // args.sample_every)
    print(header(), file=sys.stderr, flush=True)
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        for k in range(count + 1):
            await asyncio.sleep(max(0.0, k * args.sample_every - (time.monotonic() - t0)))
            if proc.popen.poll() is not None:
                return samples, f"the proxy exited ({proc.popen.returncode}): {proc.log_tail(5)}"
            try:
                samples.append(await take_sample(http, proc, t0))
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                return samples, f"no sample at {time.monotonic() - t0:.0f} s: {exc!r}"
            print(row(samples[-1], samples[-2] if k else None), file=sys.stderr, flush=True)
    return samples, None


async def soak(
    args: argparse.Namespace, proc: procs.Proc, url: str, tmp: Path
) -> tuple[list[Sample], Tally, str | None]:
    seconds = args.duration * 60 + 3  # the last sample is taken under load
    wrk_load = WrkLoad(url, seconds, args.connections, tmp) if shutil.which("wrk") else None
    if wrk_load is not None:
        load = asyncio.create_task(wrk_load.wait())
    else:
        load = asyncio.create_task(httpx_load(url, seconds, args.connections))

    def stop() -> None:
        if wrk_load is not None:
            wrk_load.stop()
        load.cancel()

    try:
        samples, problem = await sample_loop(args, proc, url)
        if problem is not None:
            stop()
    except BaseException:
        stop()
        raise
    with contextlib.suppress(asyncio.CancelledError):
        return samples, await load, problem
    return samples, Tally(), problem


# ---- the report --------------------------------------------------------------------------------


def _mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"


def header() -> str:
    return (
        f"{'min':>7} {'RSS MiB':>8} {'/health':>8} {'FDs':>5} {'tasks':>6} {'threads':>7} "
        f"{'req/s':>7}"
    )


def row(sample: Sample, previous: Sample | None) -> str:
    rate = "-"
    if previous is not None and sample.served is not None and previous.served is not None:
        rate = f"{(sample.served - previous.served) / (sample.seconds - previous.seconds):.0f}"
    return (
        f"{sample.seconds / 60:7.2f} {_mib(sample.rss_kib):>8} {_mib(sample.health_rss_kib):>8} "
        f"{sample.fds if sample.fds is not None else '-':>5} "
        f"{sample.tasks if sample.tasks is not None else '-':>6} "
        f"{sample.threads if sample.threads is not None else '-':>7} {rate:>7}"
    )


def render(samples: list[Sample], verdict: Verdict, tally: Tally, args: argparse.Namespace) -> str:
    lines = [
        f"soak: {args.duration:g} min of load, a sample every {args.sample_every:g} s",
        header(),
    ]
    lines += [row(s, samples[i - 1] if i else None) for i, s in enumerate(samples)]
    lines.append(f"after the {args.warmup:g} min warm-up ({verdict.samples_after} samples):")
    if verdict.slope_kib_min is not None:
        lines.append(
            f"  RSS slope      {verdict.slope_kib_min:+.1f} KiB/min "
            f"({verdict.slope_pct_hour:+.2f} % of the RSS per hour; "
            f"limit {args.max_slope_kib_min:g} KiB/min)"
        )
    for name, (low, high) in verdict.ranges.items():
        lines.append(
            f"  {name:<14} min {low} max {high}; last {verdict.last[name]}, "
            f"warm-up max {verdict.warmup_max[name]} (margin {args.margin})"
        )
    by_kind = ", ".join(f"{kind} {n}" for kind, n in tally.requests.items())
    lines.append(f"  requests       {sum(tally.requests.values())} ({by_kind})")
    lines.append(f"  errors         {sum(tally.errors.values())} ({dict(tally.errors)})")
    lines += [f"FAILED: {why}" for why in verdict.failures] or ["PASSED"]
    return "\n".join(lines)


# ---- the command line --------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=float, default=30.0, help="minutes of load (default 30)")
    p.add_argument("--sample-every", type=float, default=60.0, help="seconds (default 60)")
    p.add_argument("--warmup", type=float, default=5.0, help="minutes left out (default 5)")
    p.add_argument(
        "--max-slope-kib-min", type=float, default=64.0,
        help="RSS growth allowed after warm-up (default 64 KiB/min: 3.75 MiB/h)",
    )  # fmt: skip
    p.add_argument(
        "--margin", type=int, default=16,
        help="FDs or tasks the end may have above the warm-up max (default 16)",
    )  # fmt: skip
    p.add_argument("--connections", type=int, default=2, help="per kind of request (default 2)")
    p.add_argument("--log-level", default="INFO", help="the proxy's (INFO: a line a request)")
    p.add_argument("--json", type=Path, help="also write the samples and the verdict here")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (proxy log)")
    args = p.parse_args(argv)
    if args.warmup * 60 + 2 * args.sample_every > args.duration * 60:
        p.error("--duration must leave at least 3 samples after --warmup")
    return args


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs 2 cores: the proxy on core 0, upstream and load on core 1")
    os.sched_setaffinity(0, {LOAD_CORE})  # keep this runner off the proxy's core
    with exclusive(), contextlib.ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="llm-proxy-soak-"))
        if not args.keep_tmp:
            stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        proc, url, upstream = start_proxy(args, tmp, stack)
        load = "wrk" if shutil.which("wrk") else "httpx"
        kinds = ", ".join(f"{k} x{connections_for(k, args.connections)}" for k, _, _ in KINDS)
        print(
            f"soak: {args.duration:g} min; load {load} (connections: {kinds}); upstream "
            f"{upstream}; proxy pid {proc.pid} on {url}; temp dir {tmp}",
            file=sys.stderr,
            flush=True,
        )
        samples, tally, problem = asyncio.run(soak(args, proc, url, tmp))
    verdict = analyse(samples, args.warmup * 60, args.max_slope_kib_min, args.margin)
    if problem is not None:
        verdict.failures.insert(0, problem)
    if errors := sum(tally.errors.values()):
        verdict.failures.append(f"{errors} requests failed")
    print(render(samples, verdict, tally, args))
    if args.json is not None:
        report = {
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "samples": [asdict(s) for s in samples],
            "verdict": asdict(verdict),
            "requests": dict(tally.requests),
            "errors": dict(tally.errors),
        }
        args.json.write_text(json.dumps(report, indent=2))
    return 1 if verdict.failures else 0


if __name__ == "__main__":
    sys.exit(main())
