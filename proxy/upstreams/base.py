"""What the gateway needs from an upstream: one call for JSON, one for a stream, and close."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from proxy.config import Timeouts


@dataclass(slots=True)
class UpstreamCall:
    body: bytes  # the request body as the upstream should receive it
    timeouts: Timeouts
    request_id: str


class Upstream(Protocol):
    name: str

    async def complete(self, call: UpstreamCall) -> bytes:
        """The upstream's chat.completion JSON; raise a ProxyError on any failure."""
        ...

    def stream(self, call: UpstreamCall) -> AsyncIterator[bytes]:
        """The `data:` payloads of the upstream's event stream, up to (not incl.) [DONE]."""
        ...

    async def close(self) -> None: ...
