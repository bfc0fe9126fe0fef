"""Streams relayed to the client as they arrive, whatever their format.

A rewriter (one per format: chat chunks, or a front door's native events) turns each upstream
event into what the client receives and says when the stream is complete. The relay adds what
every stream needs: the time limit, registration for an in-band ending at shutdown, a
failure after the first byte sent on (never a silent truncation), the events kept for the
cache when asked, and the end of the request settled once, however the stream ended.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from proxy.accounting import RequestRecord
from proxy.errors import (
    ProxyError,
    ServiceUnavailableError,
    UpstreamError,
    UpstreamTimeoutError,
    reason_label,
)
from proxy.observability.metrics import Metrics


class Rewriter(Protocol):
    def batch(self, events: list[bytes]) -> tuple[list[bytes], ProxyError | None]:
        """The client's payloads for one network read, and the failure that stopped it (the
        payloads before it still reach the client)."""
        ...

    @property
    def complete(self) -> bool:
        """Has the upstream finished the answer properly?"""
        ...


class OpenStreams:
    """The streams being relayed, so that a shutdown can end them in-band."""

    def __init__(self) -> None:
        self._streams: dict[asyncio.Task[Any], StreamContext] = {}

    def add(self, task: asyncio.Task[Any], context: StreamContext) -> None:
        self._streams[task] = context

    def discard(self, task: asyncio.Task[Any]) -> None:
        self._streams.pop(task, None)

    def end_all(self) -> int:
        """Interrupt every open stream; each then ends with an in-band error."""
        for task, context in list(self._streams.items()):
            context.ending = True
            task.cancel()
        return len(self._streams)

    def __len__(self) -> int:
        return len(self._streams)


@dataclass(slots=True)
class StreamContext:
    public_model: str
    upstream: str
    max_seconds: float
    record: RequestRecord
    metrics: Metrics
    open_streams: OpenStreams
    on_end: Callable[[StreamContext], None]  # settles the request, once
    collected: list[bytes] | None = None  # the payloads relayed, kept when the end needs them
    completed: bool = False  # the upstream finished the answer properly
    ending: bool = False  # the proxy is ending it (shutdown)
    expired: bool = False  # it was open longer than `max_seconds`
    extra: dict[str, Any] = field(default_factory=dict)  # what a format's relay keeps


def open_relay(
    first: list[bytes],
    events: AsyncIterator[list[bytes]],
    context: StreamContext,
    rewriter: Rewriter,
) -> AsyncIterator[list[bytes]]:
    """The client's stream from the upstream's first batch on. Raises (before anything is
    sent) when the first batch is only a failure, so the attempt can fail over."""
    batch, failure = rewriter.batch(first)
    if failure is not None and not batch:
        raise failure
    return relay_stream(batch, failure, rewriter, events, context)


async def relay_stream(
    first: list[bytes],
    failure: ProxyError | None,
    rewriter: Rewriter,
    events: AsyncIterator[list[bytes]],
    context: StreamContext,
) -> AsyncIterator[list[bytes]]:
    """Payloads for the client, grouped as they arrived; a ProxyError raised here happened
    after the first byte."""
    task = asyncio.current_task()
    limit = None
    if task is not None:
        context.open_streams.add(task, context)
        left = context.max_seconds - (time.perf_counter() - context.record.started)
        limit = asyncio.get_running_loop().call_later(max(left, 0.0), _expire, task, context)
    try:
        async for payload in _relay(first, failure, rewriter, events, context):
            yield payload
    except ProxyError as exc:
        count_failure(context, exc)
        raise
    except asyncio.CancelledError:
        ended = _ended_by_proxy(context, task)
        if ended is None:
            context.record.disconnected = True
            raise
        count_failure(context, ended)
        raise ended from None
    except BaseException:
        context.record.disconnected = True
        raise
    finally:
        if limit is not None:
            limit.cancel()
        if task is not None:
            context.open_streams.discard(task)
        try:
            await events.aclose()  # type: ignore[attr-defined]
        finally:
            context.on_end(context)


async def _relay(
    first: list[bytes],
    failure: ProxyError | None,
    rewriter: Rewriter,
    events: AsyncIterator[list[bytes]],
    context: StreamContext,
) -> AsyncIterator[list[bytes]]:
    record = context.record
    collected = context.collected
    started = record.started
    record.first_token = time.perf_counter() - started
    if collected is not None:
        collected.extend(first)
    yield first
    if failure is not None:
        raise failure
    while True:
        received = await _next(events, record)
        if received is None:
            break
        batch, failure = rewriter.batch(received)
        if batch:
            if collected is not None:
                collected.extend(batch)
            yield batch
        if failure is not None:
            raise failure
    if not rewriter.complete:
        raise UpstreamError(f"The upstream '{context.upstream}' ended the stream early.")
    context.completed = True


async def _next(events: AsyncIterator[list[bytes]], record: RequestRecord) -> list[bytes] | None:
    """The upstream's next batch (None at its end), the wait counted as upstream time."""
    waited = time.perf_counter()
    try:
        return await anext(events)
    except StopAsyncIteration:
        return None
    finally:
        record.upstream_seconds += time.perf_counter() - waited


def _expire(task: asyncio.Task[Any], context: StreamContext) -> None:
    """The stream's time limit (one timer per stream, not a timeout per read)."""
    context.expired = True
    task.cancel()


def _ended_by_proxy(context: StreamContext, task: asyncio.Task[Any] | None) -> ProxyError | None:
    """The error a stream the proxy cancelled itself ends with (None: the client left)."""
    if task is None or not (context.ending or context.expired) or task.uncancel() > 0:
        return None
    if context.ending:
        return ServiceUnavailableError("The proxy is shutting down; the stream was ended.")
    return UpstreamTimeoutError("The stream was open longer than the proxy allows.")


def count_failure(context: StreamContext, exc: ProxyError) -> None:
    context.record.error = exc.message
    metrics = context.metrics
    metrics.child(metrics.upstream_errors, context.record.route, reason_label(exc)).inc()
