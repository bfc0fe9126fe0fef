"""llm-proxy benchmark: wrk -> {nginx | bare pass-through | llm-proxy} -> nginx.

    python bench/run.py                  # 3 runs x 5 s per point, markdown to stdout
    python bench/run.py --quick          # 1 run x 3 s
    python bench/run.py --asgi uvicorn,granian --targets direct,bare,bare:granian

The target under test runs on core 0; nginx (the fake upstream) and wrk run on core 1.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import fcntl
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(REPO))

from bench import procs, wrk  # noqa: E402
from bench.report import MODE_NAMES, Outcome, median, render  # noqa: E402
from bench.targets import ASGI_SERVERS, Context, Target, registry  # noqa: E402
from bench.upstream import HEALTH_PATH, nginx_argv  # noqa: E402

TARGET_CORE, LOAD_CORE = 0, 1
RESULTS = REPO / "bench" / "results"
MARKERS = {  # what a good answer holds, by (body format, stream?)
    ("chat", False): b'"chat.completion"',
    ("chat", True): b"data: [DONE]",
    ("messages", False): b'"type":"message"',
    ("messages", True): b"event: message_stop",
    ("responses", False): b'"object":"response"',
    ("responses", True): b"event: response.completed",
    ("responses-stored", False): b'"object":"response"',
    ("responses-stored", True): b"event: response.completed",
}
IMPORTS = "bench.passthrough,proxy,proxy.api.server"  # the first one is the baseline


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=float, help="seconds per point (default 5, --quick 3)")
    p.add_argument("--runs", type=int, help="runs per point, median shown (default 3, --quick 1)")
    p.add_argument("--quick", action="store_true", help="1 run of 3 s per point")
    p.add_argument("--concurrency", default="1,16,64", help="wrk connections (default 1,16,64)")
    p.add_argument("--modes", default="json,stream", help="json, stream or both (default)")
    p.add_argument("--asgi", default="uvicorn", help="server of `bare` (uvicorn or granian); "
                   "more after a comma become targets `bare:<server>`")  # fmt: skip
    p.add_argument("--targets", default="", help="comma list (default: all known targets)")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per target and mode")
    p.add_argument("--imports", default=IMPORTS, help=f"modules to time, first = baseline "
                   f"(default {IMPORTS}; proxy.api.server is what `serve` loads)")  # fmt: skip
    p.add_argument("--output", type=Path, default=RESULTS / "latest.md")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    args = p.parse_args(argv)
    args.runs = args.runs or (1 if args.quick else 3)
    args.duration = args.duration or (3.0 if args.quick else 5.0)
    args.asgi = args.asgi.split(",")
    if bad := [s for s in args.asgi if s not in ASGI_SERVERS]:
        p.error(f"unknown ASGI server(s) {bad}; expected {ASGI_SERVERS}")
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    modes = {"json": False, "stream": True}
    args.modes = [modes[m] for m in args.modes.split(",")]
    return args


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def request_body(model: str, stream: bool, api: str = "chat") -> bytes:
    body: dict[str, object] = {"model": model, "messages": [{"role": "user", "content": "Hi"}]}
    if api == "messages":
        body["max_tokens"] = 256  # required by the Messages API
    if api.startswith("responses"):
        body = {"model": model, "input": "Hi", **({"store": False} if api == "responses" else {})}
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


def check(target: Target, port: int, modes: list[bool]) -> str | None:
    """None when every mode answers 200 with the expected body, else why not."""
    for stream in modes:
        call = target.calls[stream]
        try:
            status, data = procs.http_request(
                port, "POST", call.path, request_body(call.model, stream, call.api), key=target.key
            )
        except OSError as exc:
            return f"{MODE_NAMES[stream]} request failed: {exc}"
        if status != 200 or MARKERS[(call.api, stream)] not in data:
            return f"{MODE_NAMES[stream]} request answered {status}: {data[:300]!r}"
    return None


def launch(
    target: Target, ctx: Context, stack: contextlib.ExitStack, runs: int
) -> tuple[procs.Proc | None, int, list[float]] | str:
    """Start ``target`` ``runs`` times (start-up samples) and keep the last one running.

    Returns (process, port, start-up seconds) or the reason it could not start.
    """
    if target.launch is None:
        return None, ctx.upstream_port, []
    startup: list[float] = []
    for i in range(runs):
        port = procs.free_port()
        command = target.launch(ctx, port)
        proc = procs.Proc(
            target.name, command.argv, core=TARGET_CORE, env=command.env, cwd=ctx.repo,
            log_path=ctx.tmp / f"{target.name}.{i}.log",
        )  # fmt: skip
        stack.callback(proc.stop)
        ready = proc.wait_ready(port, target.ready_path, target.ready_timeout)
        if ready is None:
            code = proc.popen.poll()
            state = f"exited with code {code}" if code is not None else "still running"
            shown = shlex.join(["python", *command.argv[1:]])
            why = (
                f"no 200 on GET {target.ready_path} within {target.ready_timeout:g} s ({state}); "
                f"`{shown}`; log tail:\n\n```\n{proc.log_tail()}\n```"
            )
            proc.stop()
            return why
        startup.append(ready)
        if i < runs - 1:
            proc.stop()
    return proc, port, startup


def measure(
    url: str, target: Target, stream: bool, connections: int, duration: float
) -> wrk.WrkResult:
    call = target.calls[stream]
    return wrk.run(
        url + call.path, connections=connections, duration=duration, model=call.model,
        stream=stream, key=target.key, core=LOAD_CORE, api=call.api,
    )  # fmt: skip


def time_imports(modules: list[str], repeats: int) -> dict[str, float | str]:
    """Median wall time of `python -c "import X"` minus the bare interpreter's, pinned to core 0."""

    def once(code: str) -> tuple[float, subprocess.CompletedProcess[str]]:
        argv = ["taskset", "-c", str(TARGET_CORE), sys.executable, "-c", code]
        start = time.perf_counter()
        done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)
        return time.perf_counter() - start, done

    samples: dict[str, list[float]] = {"": [], **{m: [] for m in modules}}
    errors: dict[str, str] = {}
    for _ in range(repeats):
        for module in samples:
            seconds, done = once(f"import {module}" if module else "pass")
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["?"])[-1]
                errors[module] = f"failed: {last}"
            samples[module].append(seconds)
    bare = median(samples.pop(""))
    return {m: errors.get(m) or max(0.0, median(s) - bare) for m, s in samples.items()}


def setup_lines(args: argparse.Namespace) -> list[tuple[str, str]]:
    def first_line(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=REPO)
        except OSError:
            return "?"
        return (done.stdout + done.stderr).strip().splitlines()[0] if done.returncode < 2 else "?"

    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor() or "?",
    )  # fmt: skip

    def version(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "not installed"

    versions = ", ".join(
        f"{pkg} {version(pkg)}"
        for pkg in ("litestar", "aiohttp", "msgspec", "uvicorn", "uvloop", "httptools", "granian")
    )
    commit = first_line(["git", "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, cwd=REPO).stdout
    return [
        ("date", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("host", f"{cpu}, {os.cpu_count()} CPUs, Linux {platform.release()}"),
        ("commit", f"{commit}{' (dirty)' if dirty else ''}" if commit != "?" else "none yet"),
        ("python", platform.python_version()),
        ("packages", versions),
        ("tools", f"{first_line(['nginx', '-v'])}; {first_line(['wrk', '-v'])}"),
        ("load average at start", " ".join(f"{x:.2f}" for x in os.getloadavg())),
        ("pinning", f"target on core {TARGET_CORE}; nginx and wrk on core {LOAD_CORE}"),
        ("load", "wrk -t1 -c<c>, keep-alive, POST bench/post.lua"),
        ("bare server", args.asgi[0]),
    ]


def start_upstream(tmp: Path, stack: contextlib.ExitStack) -> int:
    """nginx on core 1; returns its port."""
    port = procs.free_port()
    nginx = procs.Proc("nginx", nginx_argv(tmp, port), core=LOAD_CORE, log_path=tmp / "nginx.log")
    stack.callback(nginx.stop)
    if nginx.wait_ready(port, HEALTH_PATH, 5.0) is None:
        raise SystemExit(f"nginx did not start:\n{nginx.log_tail()}")
    return port


def start_targets(
    targets: list[Target], ctx: Context, stack: contextlib.ExitStack, outcome: Outcome
) -> dict[str, tuple[procs.Proc | None, str]]:
    """Start and check each target; the ones that fail are recorded as skipped.

    Returns name -> (process or None, base URL) for the targets that answer correctly.
    """
    live: dict[str, tuple[procs.Proc | None, str]] = {}
    for target in targets:
        log(f"starting {target.name} ...")
        started = launch(target, ctx, stack, outcome.runs)
        if isinstance(started, str):
            why = started
        else:
            proc, port, startup = started
            why = check(target, port, outcome.modes) or ""
            if why and proc:
                proc.stop()
        if why:
            log(f"SKIP {target.name}: {why}")
            outcome.skipped[target.name] = why
            continue
        if startup:
            outcome.startup_s[target.name] = startup
            log(f"  ready in {median(startup):.2f} s (median of {len(startup)})")
        outcome.targets.append(target)
        live[target.name] = (proc, f"http://127.0.0.1:{port}")
    return live


def measure_all(outcome: Outcome, urls: dict[str, str], warmup: float) -> None:
    """Warm each target up, then the runs, interleaved: every point of a run is
    measured within seconds of its baseline."""
    for target in outcome.targets:
        for stream in outcome.modes:
            if warmup > 0:
                measure(urls[target.name], target, stream, 16, warmup)
    for i in range(outcome.runs):
        for stream in outcome.modes:
            for c in outcome.concurrencies:
                for target in outcome.targets:
                    r = measure(urls[target.name], target, stream, c, outcome.duration)
                    outcome.points.setdefault((target.name, stream, c), []).append(r)
                    flag = f"  ERRORS: {r.non_2xx} non-2xx, {r.socket_errors} socket" * (
                        r.errors > 0
                    )
                    log(
                        f"[run {i + 1}/{outcome.runs}] {MODE_NAMES[stream]:13} c={c:<3} "
                        f"{target.name:14} {r.rps:9.0f} req/s  p50 {r.p50_ms:7.2f} ms  "
                        f"p99 {r.p99_ms:7.2f} ms{flag}"
                    )


def run(args: argparse.Namespace, tmp: Path, stack: contextlib.ExitStack) -> Outcome:
    known = registry(args.asgi)
    names = args.targets.split(",") if args.targets else list(known)
    if unknown := [n for n in names if n not in known]:
        raise SystemExit(f"unknown target(s) {unknown}; known: {', '.join(known)}")
    outcome = Outcome(args.runs, args.duration, args.concurrency, args.modes, targets=[])
    outcome.setup = setup_lines(args)
    ctx = Context(REPO, tmp, start_upstream(tmp, stack))
    live = start_targets([known[n] for n in names], ctx, stack, outcome)
    measure_all(outcome, {name: url for name, (_, url) in live.items()}, args.warmup)
    for name, (proc, _) in live.items():
        if proc is not None:
            outcome.rss_kib[name] = proc.rss_kib()
    return outcome


def exclusive() -> contextlib.AbstractContextManager[object]:
    """Hold a machine-wide lock: two benchmarks at once would measure each other."""
    lock = Path(tempfile.gettempdir()) / "llm-proxy-bench.lock"
    handle = lock.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        log(f"waiting for another benchmark to finish (pid {handle.read().strip() or '?'}) ...")
        fcntl.flock(handle, fcntl.LOCK_EX)
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    return handle  # closing it releases the lock


def benchmark(args: argparse.Namespace) -> Outcome:
    with contextlib.ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="llm-proxy-bench-"))
        if args.keep_tmp:
            log(f"temp dir (kept): {tmp}")
        else:
            stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        outcome = run(args, tmp, stack)
    log("timing imports ...")  # every server is stopped by now: core 0 is idle
    outcome.import_repeats = max(5, args.runs)
    outcome.imports_s = time_imports(args.imports.split(","), outcome.import_repeats)
    return outcome


def write(outcome: Outcome, output: Path) -> None:
    """The markdown report, plus every raw run as JSON next to it."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render(outcome))
    raw = {
        "points": [
            {"target": t, "stream": s, "c": c, "runs": [dataclasses.asdict(r) for r in rs]}
            for (t, s, c), rs in outcome.points.items()
        ],
        "startup_s": outcome.startup_s,
        "rss_kib": outcome.rss_kib,
        "imports_s": outcome.imports_s,
        "skipped": outcome.skipped,
    }
    output.with_suffix(".json").write_text(json.dumps(raw, indent=1))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs 2 cores: the target on core 0, nginx and wrk on core 1")
    os.sched_setaffinity(0, {LOAD_CORE})  # keep this runner off the target's core
    started = time.perf_counter()
    try:
        with exclusive():
            outcome = benchmark(args)
    except KeyboardInterrupt:
        log("interrupted; every process started was stopped")
        return 130
    print(render(outcome))
    write(outcome, args.output)
    log(f"wrote {args.output} (+ .json) in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
