"""What the gateway needs from an upstream: one call for JSON, one for a stream, and close."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from proxy.config import Timeouts


@dataclass(slots=True)
class UpstreamCall:
    body: bytes  # the client's OpenAI body with `model` set to `model`
    model: str  # the upstream's model id for this route
    timeouts: Timeouts
    request_id: str
    drop_params: frozenset[str] = frozenset()  # fields this route ignores instead of a 400


class Upstream(Protocol):
    name: str

    async def start(self) -> None:
        """Called once in the server's lifespan, before the first request (e.g. to spawn and
        supervise a worker process); most adapters do nothing."""
        ...

    async def complete(self, call: UpstreamCall) -> bytes:
        """The upstream's chat.completion JSON; raise a ProxyError on any failure."""
        ...

    def stream(self, call: UpstreamCall) -> AsyncIterator[list[bytes]]:
        """chat.completion.chunk JSON payloads, grouped as they arrived (one network read
        each), up to but not including [DONE]; raise a ProxyError on any failure."""
        ...

    async def close(self) -> None: ...
