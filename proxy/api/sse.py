"""Server-sent events for the client, in OpenAI's framing.

A failure after the first byte cannot change the status any more: it is sent in-band as
`data: {"error": {...}}` followed by `data: [DONE]`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from loguru import logger

from proxy.errors import InternalError, ProxyError

DONE = b"data: [DONE]\n\n"
EVENT_STREAM = "text/event-stream"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def sse_body(payloads: list[bytes]) -> bytes:
    """A whole stream known in advance, as one body: one write, no chunked framing."""
    return b"".join([b"data: " + payload + b"\n\n" for payload in payloads]) + DONE


async def sse_frames(batches: AsyncIterator[list[bytes]]) -> AsyncIterator[bytes]:
    """One write per batch: events that arrived together leave together."""
    try:
        async for batch in batches:
            yield b"".join([b"data: " + payload + b"\n\n" for payload in batch])
    except ProxyError as exc:
        yield b"data: " + exc.body() + b"\n\n"
    except Exception:
        logger.exception("stream failed")
        yield b"data: " + InternalError("The stream failed inside the proxy.").body() + b"\n\n"
    yield DONE
