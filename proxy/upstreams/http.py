"""HTTP plumbing every adapter shares: sessions, the one place foreign exceptions are
translated, upstream statuses turned into our errors, and timed stream reads."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import time
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any

import aiohttp
import msgspec
from loguru import logger

from proxy.config import Timeouts
from proxy.errors import (
    ProxyError,
    RateLimitError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
)
from proxy.upstreams.sse import SSEDecoder


def new_session(max_connections: int, connect: float | None = None) -> aiohttp.ClientSession:
    """A pooled session; `connect` (seconds) bounds each new connection unless a call says
    otherwise (the other deadlines are the caller's)."""
    connector = aiohttp.TCPConnector(
        limit=max_connections, limit_per_host=max_connections, keepalive_timeout=30
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect),
        auto_decompress=True,
        skip_auto_headers=("User-Agent",),
    )


class translated_errors:
    """Translate aiohttp/timeout exceptions into the proxy's error tree (nothing else). A
    class, not a generator: it wraps every upstream call, and costs a fifth as much."""

    __slots__ = ("upstream",)

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None or isinstance(exc, ProxyError):
            return
        error = _translated(self.upstream, exc)
        if error is not None:
            raise error from None


def _translated(upstream: str, exc: BaseException) -> ProxyError | None:
    if isinstance(exc, TimeoutError):
        return UpstreamTimeoutError(f"The upstream '{upstream}' timed out.", cause="timeout")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamError(f"Could not connect to the upstream '{upstream}'.", cause="connect")
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        message = f"The upstream '{upstream}' closed the connection before the reply ended."
        return UpstreamError(message, cause="connect")
    if isinstance(exc, aiohttp.ClientError):
        return UpstreamError(f"The upstream '{upstream}' failed: {type(exc).__name__}.")
    return None


@functools.lru_cache(maxsize=256)
def client_timeout(timeouts: Timeouts) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from retry-after-ms, else retry-after (seconds or an HTTP date)."""
    millis = headers.get("retry-after-ms")
    if millis:
        with contextlib.suppress(ValueError):
            return max(float(millis) / 1000, 0.0)
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value)
        return max(when.timestamp() - time.time(), 0.0)
    return None


def error_from_status(
    upstream: str, status: int, body: bytes, headers: Mapping[str, str]
) -> ProxyError:
    """Turn an upstream's non-200 reply into the error the client should get."""
    wait = retry_after(headers)
    if status in (400, 422):
        message, param, code = _openai_error_fields(body)
        return UpstreamRejectedError(
            message or f"The upstream rejected the request (HTTP {status}).",
            param=param,
            code=code,
        )
    if status in (401, 403):
        logger.error(
            "upstream {} refused the proxy's credentials (HTTP {}): check its api_key",
            upstream,
            status,
        )
        return UpstreamAuthError(f"The upstream '{upstream}' refused the proxy's credentials.")
    if status == 404:
        message = f"The upstream '{upstream}' does not serve the requested model."
        return UpstreamError(message, code="upstream_model_not_found", cause="404")
    if status == 429:
        message = f"The upstream '{upstream}' is rate limited; try again later."
        return RateLimitError(message, retry_after=wait, cause="429")
    message = f"The upstream '{upstream}' failed with HTTP {status}."
    return UpstreamError(message, retry_after=wait, cause=str(status))


def _openai_error_fields(body: bytes) -> tuple[str | None, str | None, str | None]:
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        text = body.decode("utf-8", "replace").strip()
        return (text[:2000] or None), None, None
    error: Any = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(error, str):
        return error, None, None
    if not isinstance(error, dict):
        return None, None, None
    message = error.get("message") or error.get("detail")
    param, code = error.get("param"), error.get("code")
    return (
        str(message) if message is not None else None,
        str(param) if param is not None else None,
        str(code) if code is not None else None,
    )


async def read_events(
    response: aiohttp.ClientResponse, timeouts: Timeouts, started: float
) -> AsyncIterator[list[bytes]]:
    """Event payloads from an SSE body, a list per network read, with first-token, idle and
    total deadlines."""
    loop = asyncio.get_running_loop()
    total_deadline = started + timeouts.total
    deadline = min(total_deadline, started + timeouts.first_token)
    decoder = SSEDecoder()
    content = response.content
    while True:
        async with asyncio.timeout_at(deadline):
            chunk = await content.readany()
        if not chunk:
            break
        events = decoder.feed(chunk)
        if events:
            deadline = min(total_deadline, loop.time() + timeouts.idle)
            yield events
    events = decoder.flush()
    if events:
        yield events
