"""The re-indexing half of bench/embeddings.py (run it from there): a corpus embedded twice
through llm-proxy with its cache on, the second time after some documents changed, against an
upstream whose time grows with its batch."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import procs
from bench.embeddings import (
    BATCH,
    LOAD_CORE,
    PATH,
    REPO,
    request_body,
    start_proxy,
    text,
    vector_b64,
)
from bench.targets import CLIENT_KEY, Context

REINDEX_BAR = 5.0
SCRIPT = Path(__file__).resolve().with_name("embeddings.py")


def serve_upstream(port: int, fixed: float, per_input: float, parent: int) -> None:
    """An embeddings upstream whose time grows with the batch; GET /stats counts its work."""
    from aiohttp import web

    stats = {"calls": 0, "inputs": 0}
    vector = vector_b64(1)

    async def embed(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        count = len(body["input"]) if isinstance(body["input"], list) else 1
        stats["calls"] += 1
        stats["inputs"] += count
        await asyncio.sleep(fixed + per_input * count)
        data = [{"object": "embedding", "index": i, "embedding": vector} for i in range(count)]
        usage = {"prompt_tokens": 40 * count, "total_tokens": 40 * count}
        return web.json_response({"object": "list", "data": data, "model": body["model"],
                                  "usage": usage})  # fmt: skip

    async def counts(request: web.Request) -> web.Response:
        return web.json_response(stats)

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def main() -> None:
        app = web.Application()
        app.router.add_post(PATH, embed)
        app.router.add_get("/stats", counts)
        app.router.add_get("/health", health)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
        while os.getppid() == parent:
            await asyncio.sleep(0.5)
        await runner.cleanup()

    asyncio.run(main())


@dataclass
class Pass:
    seconds: float
    calls: int
    inputs: int


async def embed_corpus(port: int, chunks: list[str], concurrency: int) -> float:
    import aiohttp

    batches = [chunks[i : i + BATCH] for i in range(0, len(chunks), BATCH)]
    queue: asyncio.Queue[list[str]] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)
    headers = {"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"}

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            batch = queue.get_nowait()
            url = f"http://127.0.0.1:{port}{PATH}"
            async with session.post(url, data=request_body(batch), headers=headers) as response:
                answer = await response.json()
                if response.status != 200 or len(answer["data"]) != len(batch):
                    raise RuntimeError(f"the proxy answered {response.status}: {answer}")

    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return time.perf_counter() - started


def corpus(docs: int, chunks: int, changed: set[int]) -> list[str]:
    return [
        text(doc * chunks + i) + (" (edited)" if doc in changed else "")
        for doc in range(docs)
        for i in range(chunks)
    ]


def reindex(args: argparse.Namespace, tmp: Path, stack: contextlib.ExitStack) -> bool:
    port = procs.free_port()
    argv = [sys.executable, str(SCRIPT), "upstream", "--port", str(port),
            "--fixed-ms", str(args.fixed_ms), "--per-input-ms", str(args.per_input_ms),
            "--parent", str(os.getpid())]  # fmt: skip
    upstream = procs.Proc("upstream", argv, core=LOAD_CORE, cwd=REPO, env=Context(REPO, tmp, 0)
                          .env(), log_path=tmp / "upstream.log")  # fmt: skip
    stack.callback(upstream.stop)
    if upstream.wait_ready(port, "/health", 10) is None:
        raise RuntimeError(f"the upstream did not start:\n{upstream.log_tail()}")
    proxy, proxy_port = start_proxy("proxy-reindex", tmp, f"http://127.0.0.1:{port}", args.backend)
    stack.callback(proxy.stop)
    every = max(1, round(1 / args.changed)) if args.changed > 0 else 0
    edited = {doc for doc in range(args.docs) if every and doc % every == every - 1}
    passes = []
    for chunks in (corpus(args.docs, args.chunks, set()), corpus(args.docs, args.chunks, edited)):
        before = json.loads(procs.http_request(port, "GET", "/stats")[1])
        seconds = asyncio.run(embed_corpus(proxy_port, chunks, args.clients))
        after = json.loads(procs.http_request(port, "GET", "/stats")[1])
        passes.append(Pass(seconds, after["calls"] - before["calls"],
                           after["inputs"] - before["inputs"]))  # fmt: skip
    return report_reindex(args, passes, len(edited) * args.chunks)


def report_reindex(args: argparse.Namespace, passes: list[Pass], changed: int) -> bool:
    total = args.docs * args.chunks
    first, second = passes
    print(f"\n## Re-indexing {total} chunks ({args.docs} documents of {args.chunks}), "
          f"{BATCH} a request, {args.clients} at once, cache {args.backend}; upstream "
          f"{args.fixed_ms} ms a call + {args.per_input_ms} ms an input\n")  # fmt: skip
    print("| pass | seconds | upstream calls | inputs sent upstream | share |")
    print("|---|---|---|---|---|")
    for name, result in (("first (uncached)", first), ("again, changed ones new", second)):
        share = result.inputs / total
        print(f"| {name} | {result.seconds:.2f} | {result.calls} | {result.inputs} | "
              f"{share:.1%} |")  # fmt: skip
    speedup = first.seconds / second.seconds
    only_changed = second.inputs == changed
    fast = speedup >= REINDEX_BAR
    print(f"\nsecond pass sent {second.inputs} inputs for {changed} changed chunks: "
          f"{'met' if only_changed else 'NOT met'}; {speedup:.1f}x faster than the first "
          f"(bar >= {REINDEX_BAR}x): {'met' if fast else 'NOT met'}")  # fmt: skip
    return only_changed and fast
