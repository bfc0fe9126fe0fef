"""Embeddings through llm-proxy: what the door costs beside the bare pass-through, and what
the per-input cache saves when a corpus is indexed again.

    python bench/embeddings.py                 # both parts (~2 min)
    python bench/embeddings.py --quick         # 1 run of 3 s, a smaller corpus
    python bench/embeddings.py throughput --runs 3 --duration 5 --concurrency 16
    python bench/embeddings.py reindex --docs 200 --changed 0.1 --backend disk

**throughput**: wrk POSTs one `/v1/embeddings` body of 16 inputs (about 40 words each,
`encoding_format: base64` as the official SDKs send it) to each target; nginx on core 1
answers a fixed list of 16 base64 vectors of 1536 dimensions (text-embedding-3-small's
size, 131 KB). Targets, each on core 0: `bare` (bench/passthrough.py under uvicorn),
`proxy` (llm-proxy, client key, cache `none`: the door's validation, routing, the reply
passed on with the public model, one log line), `proxy-miss` (the default disk cache, every
input of every request new: 16 lookups that miss and 16 fills a request) and `proxy-hit`
(the memory cache, the same body every time: every request a whole hit). Each run measures
every target once, the order reversed every other run so that drift cancels; the ratio to
`bare` is taken inside each run, then the median, beside each process's CPU time per request
(from /proc; its ratio holds when something else competes for the core). Bar:
`proxy / bare >= 0.7`.

**reindex** (bench/embeddings_reindex.py): a corpus of `--docs` documents of `--chunks`
chunks is embedded in requests of 16 chunks (`--clients` at once) through llm-proxy with its
cache on (`--backend`); then `--changed` of the documents get new text and the whole corpus
is embedded again. The upstream (aiohttp on core 1) costs `--fixed-ms` per call plus
`--per-input-ms` per input (2 + 2 ms by default: a self-hosted embedding model's time grows
with its batch; an API that costs the same per call whatever the batch caps the gain near
the share of requests that become whole hits, 80% here, so about 5x). Bars: the second pass
sends the upstream only the changed chunks (their share of the inputs), and it is at least
5x faster than the first, uncached pass.

Needs nginx, wrk and taskset (like bench/run.py) and holds the same machine-wide lock.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import statistics
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    # run as a script, bench/ comes first on sys.path and its modules would shadow libraries
    # (bench/limits.py, bench/cache.py): put the repository there instead
    HERE = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
    sys.path.insert(0, str(HERE.parent))

from bench import procs, wrk
from bench.interleaved import cpu_seconds
from bench.run import exclusive
from bench.targets import CLIENT_KEY, UPSTREAM_KEY, Context, passthrough_command

REPO = Path(__file__).resolve().parent.parent
TARGET_CORE, LOAD_CORE = 0, 1
PATH = "/v1/embeddings"
MODEL = "text-embedding-3-small"
DIMENSIONS = 1536
BATCH = 16
THROUGHPUT_BAR = 0.7
WORDS = [
    "the", "proxy", "keeps", "each", "input's", "vector", "on", "its", "own", "so", "a",
    "corpus", "indexed", "again", "sends", "only", "what", "changed", "upstream", "while",
    "every", "other", "chunk", "comes", "from", "the", "cache", "in", "input", "order",
]  # fmt: skip

WRK_LUA = """\
-- wrk script: POST one embeddings body (bench/embeddings.py writes this file); with a third
-- argument "vary", every "#" in the body becomes a number no request used before, so that
-- every input of every request is new (all cache misses)
local body, vary, counter
function init(args)
  local f = io.open(args[1], "rb")
  body = f:read("*a")
  f:close()
  vary = args[3] == "vary"
  counter = os.time() * 1000000
  wrk.method = "POST"
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. args[2]
end

function request()
  if not vary then
    return wrk.format()
  end
  counter = counter + 1
  local tag = "#" .. string.format("%.0f", counter) .. "-"
  return wrk.format(nil, nil, nil, (body:gsub("#", tag)))
end
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def text(seed: int, words: int = 40) -> str:
    return " ".join(WORDS[(seed * 7 + i) % len(WORDS)] for i in range(words)) + f" #{seed}"


def vector_b64(seed: int) -> str:
    values = [((seed * 31 + i) % 97 - 48) / 97 for i in range(DIMENSIONS)]
    return base64.b64encode(struct.pack(f"<{DIMENSIONS}f", *values)).decode()


def reply_body(count: int, model: str = MODEL) -> bytes:
    """OpenAI's embeddings list: `count` base64 vectors."""
    data = [{"object": "embedding", "index": i, "embedding": vector_b64(i)} for i in range(count)]
    usage = {"prompt_tokens": 40 * count, "total_tokens": 40 * count}
    answer = {"object": "list", "data": data, "model": model, "usage": usage}
    return json.dumps(answer, separators=(",", ":")).encode()


def request_body(inputs: list[str], model: str = "embed") -> bytes:
    body = {"model": model, "input": inputs, "encoding_format": "base64"}
    return json.dumps(body, separators=(",", ":")).encode()


# -- processes --------------------------------------------------------------------------------


def nginx(tmp: Path) -> tuple[procs.Proc, int]:
    """nginx on core 1 answering POST /v1/embeddings with a fixed list of BATCH vectors."""
    port = procs.free_port()
    www = tmp / "www" / PATH.lstrip("/")
    www.parent.mkdir(parents=True, exist_ok=True)
    www.write_bytes(reply_body(BATCH))
    conf = tmp / "nginx.conf"
    temp = "\n".join(f"    {k}_temp_path {tmp}/{k}_temp;" for k in ("client_body", "proxy"))
    conf.write_text(f"""\
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
{temp}
    client_body_buffer_size 64k;
    keepalive_requests 1000000;
    sendfile on;
    tcp_nodelay on;
    types {{ }}
    root {tmp}/www;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /health {{ default_type text/plain; return 200 'ok'; }}
        location = {PATH} {{ default_type application/json; error_page 405 =200 $uri; }}
    }}
}}
""")
    argv = ["nginx", "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "nginx-error.log")]
    proc = procs.Proc("nginx", argv, core=LOAD_CORE, log_path=tmp / "nginx.log")
    if proc.wait_ready(port, "/health", 10) is None:
        raise RuntimeError(f"nginx did not start:\n{proc.log_tail()}")
    return proc, port


def policy(upstream: str, port: int, backend: str, name: str) -> str:
    return f"""\
server: {{host: 127.0.0.1, port: {port}}}
upstreams:
  up: {{type: openai, base_url: "{upstream}/v1", api_key: {UPSTREAM_KEY}}}
models:
  embed: {{routes: [{{upstream: up, model: {MODEL}}}]}}
keys:
  - {{name: bench, key: {CLIENT_KEY}}}
cache: {{backend: {backend}, path: cache-{name}}}
logging: {{level: INFO}}
"""


def start_proxy(name: str, tmp: Path, upstream: str, backend: str) -> tuple[procs.Proc, int]:
    port = procs.free_port()
    config = tmp / f"{name}.yaml"
    config.write_text(policy(upstream, port, backend, name))
    argv = [sys.executable, "-m", "proxy", "serve", "--config", str(config)]
    ctx = Context(REPO, tmp, 0)
    proc = procs.Proc(name, argv, core=TARGET_CORE, env=ctx.env(), cwd=tmp,
                      log_path=tmp / f"{name}.log")  # fmt: skip
    if proc.wait_ready(port, "/health/readiness", 15) is None:
        raise RuntimeError(f"{name} did not start:\n{proc.log_tail()}")
    return proc, port


def start_bare(tmp: Path, upstream_port: int) -> tuple[procs.Proc, int]:
    port = procs.free_port()
    command = passthrough_command("uvicorn", Context(REPO, tmp, upstream_port), port)
    proc = procs.Proc("bare", command.argv, core=TARGET_CORE, env=command.env, cwd=REPO,
                      log_path=tmp / "bare.log")  # fmt: skip
    if proc.wait_ready(port, "/health", 15) is None:
        raise RuntimeError(f"the pass-through did not start:\n{proc.log_tail()}")
    return proc, port


# -- throughput -------------------------------------------------------------------------------


def check(port: int, body: bytes) -> None:
    status, data = procs.http_request(port, "POST", PATH, body, CLIENT_KEY)
    answer = json.loads(data) if status == 200 else {}
    if status != 200 or len(answer.get("data", ())) != BATCH:
        raise RuntimeError(f"port {port} answered {status}: {data[:300]!r}")


def load(
    port: int, files: tuple[Path, Path], connections: int, duration: float, vary: bool
) -> wrk.WrkResult:
    body_file, lua = files
    argv = [
        "taskset", "-c", str(LOAD_CORE), "wrk", "-t1", f"-c{connections}", f"-d{duration:g}s",
        "--timeout", "10s", "--latency", "-s", str(lua), f"http://127.0.0.1:{port}{PATH}",
        "--", str(body_file), CLIENT_KEY, "vary" if vary else "same",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0 or "Requests/sec" not in done.stdout:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return wrk.parse(done.stdout)


VARIED = {"proxy-miss"}  # targets whose every input is new in every request


def throughput(args: argparse.Namespace, tmp: Path, stack: contextlib.ExitStack) -> bool:
    server, upstream_port = nginx(tmp)
    stack.callback(server.stop)
    upstream = f"http://127.0.0.1:{upstream_port}"
    ports: dict[str, int] = {}
    started = [
        ("bare", start_bare(tmp, upstream_port)),
        ("proxy", start_proxy("proxy", tmp, upstream, "none")),
        ("proxy-miss", start_proxy("proxy-miss", tmp, upstream, "disk")),
        ("proxy-hit", start_proxy("proxy-hit", tmp, upstream, "memory")),
    ]
    for name, (proc, port) in started:
        stack.callback(proc.stop)
        ports[name] = port
    files = (tmp / "body.json", tmp / "embeddings.lua")
    body = request_body([text(i) for i in range(BATCH)])
    files[0].write_bytes(body)
    files[1].write_text(WRK_LUA)
    for port in ports.values():
        check(port, body)
    pids = {name: proc.popen.pid for name, (proc, _) in started}
    runs: list[dict[str, tuple[wrk.WrkResult, float]]] = []
    for number in range(args.runs):
        names = list(ports) if number % 2 == 0 else list(reversed(ports))  # drift cancels
        run = {}
        for name in names:
            before = cpu_seconds(pids[name])
            result = load(ports[name], files, args.concurrency, args.duration, name in VARIED)
            run[name] = result, (cpu_seconds(pids[name]) - before) * 1e6 / max(result.requests, 1)
        runs.append(run)
        log(f"run {number + 1}: " + ", ".join(
            f"{n} {run[n][0].rps:.0f} req/s ({run[n][1]:.0f} us CPU/req)" for n in ports
        ))  # fmt: skip
    return report_throughput(runs, args.concurrency)


def report_throughput(runs: list[dict[str, tuple[wrk.WrkResult, float]]], concurrency: int) -> bool:
    print(f"\n## Embeddings, {BATCH} inputs a request, c={concurrency} (median of {len(runs)} "
          "runs, the order reversed every other run)\n")  # fmt: skip
    print(
        "| target | req/s | p50 ms | p99 ms | CPU us/req | errors | / bare | CPU, bare / target |"
    )
    print("|---|---|---|---|---|---|---|---|")
    ratios: dict[str, float] = {}
    for name in runs[0]:
        results = [run[name][0] for run in runs]
        ratios[name] = statistics.median(run[name][0].rps / run["bare"][0].rps for run in runs)
        cpu = statistics.median(run["bare"][1] / max(run[name][1], 1e-9) for run in runs)
        print(
            f"| {name} | {statistics.median(r.rps for r in results):.0f} "
            f"| {statistics.median(r.p50_ms for r in results):.2f} "
            f"| {statistics.median(r.p99_ms for r in results):.2f} "
            f"| {statistics.median(run[name][1] for run in runs):.0f} "
            f"| {sum(r.errors for r in results)} | {ratios[name]:.2f}x | {cpu:.2f}x |"
        )
    ok = ratios["proxy"] >= THROUGHPUT_BAR
    print(f"\nproxy / bare = {ratios['proxy']:.2f}x (bar >= {THROUGHPUT_BAR}x): "
          f"{'met' if ok else 'NOT met'}")  # fmt: skip
    return ok


# -- command line -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("part", nargs="?", default="all",
                   choices=["all", "throughput", "reindex", "upstream"])  # fmt: skip
    p.add_argument("--quick", action="store_true", help="1 run of 3 s, 80 documents")
    p.add_argument("--runs", type=int, default=6)
    p.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    p.add_argument("--concurrency", type=int, default=16, help="wrk connections")
    p.add_argument("--docs", type=int, default=200)
    p.add_argument("--chunks", type=int, default=8, help="chunks per document")
    p.add_argument("--changed", type=float, default=0.1, help="share of documents edited")
    p.add_argument("--clients", type=int, default=4, help="requests at once when re-indexing")
    p.add_argument("--backend", default="disk", choices=["disk", "memory", "redis"])
    p.add_argument("--fixed-ms", type=float, default=2.0, help="upstream time a call")
    p.add_argument("--per-input-ms", type=float, default=2.0, help="upstream time an input")
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--parent", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.runs, args.duration, args.docs = 1, 3.0, 80
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from bench.embeddings_reindex import reindex, serve_upstream

    if args.part == "upstream":
        serve_upstream(args.port, args.fixed_ms / 1000, args.per_input_ms / 1000, args.parent)
        return 0
    ok = True
    with exclusive(), tempfile.TemporaryDirectory(prefix="bench-embeddings-") as name:
        tmp = Path(name)
        if args.part in ("all", "throughput"):
            with contextlib.ExitStack() as stack:
                ok = throughput(args, tmp, stack) and ok
        if args.part in ("all", "reindex"):
            with contextlib.ExitStack() as stack:
                ok = reindex(args, tmp, stack) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
