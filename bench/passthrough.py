"""Bare pass-through: the smallest Litestar app that forwards a POST to the upstream.

It is the benchmark's reference point: same framework and HTTP client as llm-proxy,
none of its work (no auth, no JSON parsing, no routing, no logging). Any path is
forwarded as is to ``$BENCH_UPSTREAM`` + path with one shared aiohttp session.
The answer is returned whole, or relayed chunk by chunk when it is an event stream.

    BENCH_UPSTREAM=http://127.0.0.1:8081 \\
        uvicorn bench.passthrough:app --loop uvloop --http httptools --no-access-log
    BENCH_UPSTREAM=http://127.0.0.1:8081 \\
        granian --interface asgi --loop uvloop --workers 1 bench.passthrough:app
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from litestar import Litestar, Request, get, post
from litestar.response import Response, Stream

UPSTREAM = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:8081").rstrip("/")
UPSTREAM_KEY = os.environ.get("BENCH_UPSTREAM_KEY", "sk-bench-upstream")
_HEADERS = {"Content-Type": "application/json", "Authorization": f"Bearer {UPSTREAM_KEY}"}


@asynccontextmanager
async def client_session(app: Litestar) -> AsyncIterator[None]:
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None)
    async with aiohttp.ClientSession(connector=connector) as session:
        app.state.session = session
        yield


@get("/health", sync_to_thread=False)
def health() -> str:
    return "ok"


async def _relay(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    try:
        async for chunk in resp.content.iter_any():
            yield chunk
    finally:
        resp.release()


@post("/{path:path}")
async def forward(request: Request[Any, Any, Any], path: str) -> Response[Any]:
    session: aiohttp.ClientSession = request.app.state.session
    body = await request.body()
    resp = await session.post(UPSTREAM + path, data=body, headers=_HEADERS)
    media_type = resp.headers.get("Content-Type", "application/json")
    if media_type.startswith("text/event-stream"):
        return Stream(_relay(resp), status_code=resp.status, media_type=media_type)
    async with resp:
        content = await resp.read()
    return Response(content, status_code=resp.status, media_type=media_type)


app = Litestar(route_handlers=[health, forward], lifespan=[client_session], openapi_config=None)
