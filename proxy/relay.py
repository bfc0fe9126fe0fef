"""Upstream replies made into what the client receives.

JSON: `model` becomes the public name, usage is read for accounting. Streams: the same per
chunk, the usage chunk the proxy asked for is removed when the client did not ask, and a
stream that ends without every choice finishing is a failure, never a silent truncation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from proxy.accounting import RequestRecord
from proxy.errors import ProxyError, ServiceUnavailableError, UpstreamError, UpstreamTimeoutError
from proxy.observability.access_log import AccessLog
from proxy.observability.metrics import Metrics

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


class _CompletionView(msgspec.Struct):
    choices: list[Any]
    model: str | None = None
    usage: dict[str, Any] | None = None


_completion_view = msgspec.json.Decoder(_CompletionView)


def rewrite_completion(
    body: bytes, public_model: str, upstream: str, record: RequestRecord | None = None
) -> tuple[bytes, Any]:
    """The client's JSON reply (`model` swapped in place) and the upstream's `usage`."""
    try:
        view = _completion_view.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        _decode_object(body, upstream)  # not JSON, or not an object: say which
        raise UpstreamError(f"The upstream '{upstream}' sent a reply without choices.") from None
    if record is not None:
        record.upstream_model = view.model
        record.finish_reasons = [
            str(c["finish_reason"])
            for c in view.choices
            if isinstance(c, dict) and c.get("finish_reason")
        ]
    if view.model is not None:
        current = b'"model":' + _encode(view.model)
        position = body.find(current)
        if position >= 0:
            replaced = b'"model":' + _encode(public_model)
            return body[:position] + replaced + body[position + len(current) :], view.usage
    data = _decode_object(body, upstream)
    data["model"] = public_model
    return _encode(data), view.usage


def count_usage(record: RequestRecord, usage: Any) -> None:
    if isinstance(usage, dict):
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        record.prompt_tokens = prompt if isinstance(prompt, int) else 0
        record.completion_tokens = completion if isinstance(completion, int) else 0


def _decode_object(body: bytes, upstream: str) -> dict[str, Any]:
    try:
        data = _decode(body)
    except msgspec.DecodeError:
        raise UpstreamError(f"The upstream '{upstream}' sent a reply that is not JSON.") from None
    if not isinstance(data, dict):
        raise UpstreamError(f"The upstream '{upstream}' sent a reply that is not an object.")
    return data


class OpenStreams:
    """The streams being relayed, so that a shutdown can end them in-band."""

    def __init__(self) -> None:
        self._streams: dict[asyncio.Task[Any], StreamContext] = {}

    def add(self, task: asyncio.Task[Any], ctx: StreamContext) -> None:
        self._streams[task] = ctx

    def discard(self, task: asyncio.Task[Any]) -> None:
        self._streams.pop(task, None)

    def end_all(self) -> int:
        """Interrupt every open stream; each then ends with an in-band error and [DONE]."""
        for task, ctx in list(self._streams.items()):
            ctx.ending = True
            task.cancel()
        return len(self._streams)

    def __len__(self) -> int:
        return len(self._streams)


@dataclass(slots=True)
class StreamContext:
    public_model: str
    upstream: str
    client_wants_usage: bool
    choices: int
    max_seconds: float
    record: RequestRecord
    metrics: Metrics
    access_log: AccessLog
    open_streams: OpenStreams = field(default_factory=OpenStreams)
    on_end: Callable[[], None] | None = None  # e.g. the route's in-flight count
    on_complete: Callable[[list[bytes]], None] | None = None  # every chunk, when it finished
    collected: list[bytes] | None = None  # the chunks relayed, kept for on_complete
    ending: bool = False


class _DeltaView(msgspec.Struct):
    content: str | None = None


class _ChoiceView(msgspec.Struct):
    index: int = 0
    finish_reason: str | None = None
    delta: _DeltaView | None = None


class _ChunkView(msgspec.Struct):
    """What the proxy reads from a chunk; everything else is left as bytes."""

    model: str | None = None
    choices: list[_ChoiceView] | None = None
    usage: dict[str, Any] | msgspec.UnsetType | None = msgspec.UNSET
    error: Any = None


_view_decoder = msgspec.json.Decoder(_ChunkView)


class _ChunkRewriter:
    """Chunk bytes for the client: `model` swapped in place (a full decode and encode only
    when the bytes are not in the usual form), finish reasons and usage noted."""

    __slots__ = ("_public", "_upstream_model", "ctx", "finished")

    def __init__(self, ctx: StreamContext) -> None:
        self.ctx = ctx
        self.finished: set[int] = set()
        self._public = b'"model":' + _encode(ctx.public_model)
        self._upstream_model: tuple[str, bytes] | None = None

    def __call__(self, event: bytes) -> bytes | None:
        ctx = self.ctx
        try:
            view = _view_decoder.decode(event)
        except msgspec.DecodeError:
            raise UpstreamError(
                f"The upstream '{ctx.upstream}' sent a chunk that is not JSON."
            ) from None
        except msgspec.ValidationError:
            return self._slow(event)
        if view.error:
            raise UpstreamError(f"The upstream '{ctx.upstream}' failed during the stream.")
        for choice in view.choices or ():
            if choice.finish_reason:
                self.finished.add(choice.index)
                ctx.record.finish_reasons.append(choice.finish_reason)
            if choice.delta is not None and choice.delta.content:
                ctx.record.relayed_bytes += len(choice.delta.content)
        if view.usage is not msgspec.UNSET and view.usage:
            count_usage(ctx.record, view.usage)
            if not ctx.client_wants_usage and not view.choices:
                return None  # the usage chunk the proxy asked for, not the client
        if view.model is None:
            return self._slow(event)
        ctx.record.upstream_model = view.model
        return self._swap_model(event, view.model)

    def _swap_model(self, event: bytes, model: str) -> bytes:
        cached = self._upstream_model
        if cached is None or cached[0] != model:
            cached = self._upstream_model = (model, b'"model":' + _encode(model))
        position = event.find(cached[1])
        if position < 0:
            return self._slow(event)
        return event[:position] + self._public + event[position + len(cached[1]) :]

    def _slow(self, event: bytes) -> bytes:
        chunk = _decode_object(event, self.ctx.upstream)
        chunk["model"] = self.ctx.public_model
        return _encode(chunk)

    def batch(self, events: list[bytes]) -> tuple[list[bytes], ProxyError | None]:
        """The rewritten chunks, and the failure that stopped the batch (the chunks before
        it still reach the client)."""
        out: list[bytes] = []
        failure = None
        for event in events:
            try:
                payload = self(event)
            except ProxyError as exc:
                failure = exc
                break
            if payload is not None:
                out.append(payload)
        if self.ctx.collected is not None:
            self.ctx.collected.extend(out)
        return out, failure

    @property
    def complete(self) -> bool:
        return len(self.finished) >= self.ctx.choices


def open_relay(
    first: list[bytes], events: AsyncIterator[list[bytes]], ctx: StreamContext
) -> AsyncIterator[list[bytes]]:
    """The client's stream, from the upstream's first batch on. Raises (before anything is
    sent) when the first batch is only a failure, so the attempt can fail over."""
    rewrite = _ChunkRewriter(ctx)
    batch, failure = rewrite.batch(first)
    if failure is not None and not batch:
        raise failure
    return relay_stream(batch, failure, rewrite, events, ctx)


async def relay_stream(
    first: list[bytes],
    failure: ProxyError | None,
    rewrite: _ChunkRewriter,
    events: AsyncIterator[list[bytes]],
    ctx: StreamContext,
) -> AsyncIterator[list[bytes]]:
    """Chunk JSON for the client, grouped as it arrived; a ProxyError raised here happened
    after the first byte."""
    task = asyncio.current_task()
    if task is not None:
        ctx.open_streams.add(task, ctx)
    try:
        async for payload in _relay(first, failure, rewrite, events, ctx):
            yield payload
    except ProxyError as exc:
        _count_failure(ctx, exc)
        raise
    except asyncio.CancelledError:
        if ctx.ending and task is not None and task.uncancel() == 0:
            shutdown = ServiceUnavailableError("The proxy is shutting down; the stream was ended.")
            _count_failure(ctx, shutdown)
            raise shutdown from None
        ctx.record.disconnected = True
        raise
    except BaseException:
        ctx.record.disconnected = True
        raise
    finally:
        if task is not None:
            ctx.open_streams.discard(task)
        await events.aclose()  # type: ignore[attr-defined]
        if ctx.on_end is not None:
            ctx.on_end()
        ctx.record.finish(ctx.metrics, ctx.access_log)
        ctx.metrics.inflight.dec()


async def _relay(
    first: list[bytes],
    failure: ProxyError | None,
    rewrite: _ChunkRewriter,
    events: AsyncIterator[list[bytes]],
    ctx: StreamContext,
) -> AsyncIterator[list[bytes]]:
    record = ctx.record
    started = record.started
    clock = time.perf_counter
    record.first_token = clock() - started
    yield first
    if failure is not None:
        raise failure
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.max_seconds - (clock() - started)
    while True:
        waited = clock()
        try:
            async with asyncio.timeout_at(deadline):  # a silent upstream cannot outlast it
                received = await anext(events)
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise UpstreamTimeoutError(
                "The stream was open longer than the proxy allows."
            ) from None
        finally:
            record.upstream_seconds += clock() - waited
        batch, failure = rewrite.batch(received)
        if batch:
            yield batch
        if failure is not None:
            raise failure
        if clock() - started > ctx.max_seconds:
            raise UpstreamTimeoutError("The stream was open longer than the proxy allows.")
    if not rewrite.complete:
        raise UpstreamError(f"The upstream '{ctx.upstream}' ended the stream early.")
    if ctx.on_complete is not None and ctx.collected is not None:
        ctx.on_complete(ctx.collected)


def _count_failure(ctx: StreamContext, exc: ProxyError) -> None:
    ctx.record.error = exc.message
    ctx.metrics.child(ctx.metrics.upstream_errors, ctx.record.route, exc.code or exc.type).inc()
