"""What the gateway needs from an upstream: one call for JSON, one for a stream, one for
embeddings, and close.

Every call carries its body in one wire format (`UpstreamCall.api`):
- `chat`: the canonical form, an OpenAI chat-completions body. Every generating upstream
  takes it (translating adapters turn it into their own format and back); replies are
  chat.completion JSON, streams chat.completion.chunk JSON.
- `responses` / `messages`: a front door's own body passed through to an upstream that speaks
  that format natively (`native_apis`); replies and stream events come back in that format.
- `embeddings`: an OpenAI embeddings body; the reply is OpenAI's embeddings list.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from proxy.config import Timeouts

Api = Literal["chat", "responses", "messages", "embeddings"]
NO_HEADERS: Mapping[str, str] = {}


@dataclass(slots=True)
class UpstreamCall:
    body: bytes  # in the wire format `api`, with `model` set to `model`
    model: str  # the upstream's model id for this route
    timeouts: Timeouts
    request_id: str
    drop_params: frozenset[str] = frozenset()  # fields this route ignores instead of a 400
    api: Api = "chat"
    # client headers an upstream passes on natively (anthropic-beta, anthropic-version)
    headers: Mapping[str, str] = field(default_factory=lambda: NO_HEADERS)


class Upstream(Protocol):
    name: str
    # the formats other than chat this upstream takes as they are ("responses", "messages"),
    # and "embeddings" when it can embed; chat is implied for every generating upstream
    native_apis: frozenset[str]
    generates: bool  # False for an embedding-only upstream (TEI, a worker with task: embed)

    async def start(self) -> None:
        """Called once in the server's lifespan, before the first request (e.g. to spawn and
        supervise a worker process); most adapters do nothing."""
        ...

    async def complete(self, call: UpstreamCall) -> bytes:
        """The reply JSON in the call's format; raise a ProxyError on any failure."""
        ...

    def stream(self, call: UpstreamCall) -> AsyncIterator[list[bytes]]:
        """Event payloads (the JSON after `data:`) in the call's format, grouped as they
        arrived (one network read each), up to but not including [DONE]; raise a ProxyError
        on any failure."""
        ...

    async def embed(self, call: UpstreamCall) -> bytes:
        """OpenAI's embeddings list JSON for an embeddings body; only called when
        "embeddings" is in `native_apis`."""
        ...

    async def close(self) -> None: ...
