"""Front doors: the wire formats clients speak to the proxy (chat completions, the Responses
API, Anthropic's Messages API, embeddings), all served by one pipeline.

A door decodes its body into a `FrontRequest`: the original body kept beside a canonical view
(the chat-completions shape the gateway understands) that rules, allow-lists, params, limits
and routing read. At dispatch a route whose upstream speaks the door's format natively gets
the original body with only `model` rewritten; every other route gets the canonical form
through its adapter. The answer (JSON or each stream event) comes back through the request,
which encodes it in the caller's format. Nothing in the pipeline is copied per format.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from proxy.config import ParamBounds
from proxy.errors import ProxyError, UnsupportedEndpointError
from proxy.upstreams.base import Api, UpstreamCall

if TYPE_CHECKING:
    from proxy.accounting import RequestRecord
    from proxy.cache.flow import CacheFlow, Lookup
    from proxy.config import ModelCacheConfig
    from proxy.keys import Caller
    from proxy.policy import Policy, Route
    from proxy.relay import StreamContext


@dataclass(frozen=True, slots=True)
class DecodeContext:
    """What a door may need to decode a request besides its body."""

    policy: Policy
    caller: Caller
    headers: Mapping[str, str]  # the request headers a door asked for (lower-case names)
    services: Any = None  # door-specific services (e.g. the stored responses)


class FrontRequest:
    """One decoded request. The pipeline reads the attributes; the methods are the door's
    say at each step. Defaults suit a door whose answer is one JSON object."""

    api: Api = "chat"
    model: str  # the name the client sent
    stream: bool = False
    tools: bool = False  # rules may match on it
    wants_usage: bool = False  # a stream's usage chunk reaches the client
    deterministic: bool = False  # cacheable under `deterministic_only`
    cacheable: bool = True  # e.g. false for a continued conversation
    key_body: bytes  # what the cache key is computed over: the client's body, params applied
    preferred_upstream: str | None = None  # its routes are tried first (e.g. a continuation)

    @property
    def estimate(self) -> int:
        """Prompt tokens as the proxy estimates them (admission, rules)."""
        raise NotImplementedError

    def apply_params(self, params: Mapping[str, ParamBounds]) -> None:
        """A model's `params`: defaults for absent numeric fields, values clamped into
        [min, max]. Names are chat-completions field names; a door maps them to its own."""

    def serves(self, formats: frozenset[str]) -> bool:
        """Can an upstream taking `formats` answer this request (natively or translated)?"""
        return self.api in formats or "chat" in formats

    def unsupported(self, model: str) -> ProxyError:
        """The error when no route of `model` serves this request (e.g. a door's feature
        that only a native route can carry names its field)."""
        return UnsupportedEndpointError(
            f"The model `{model}` cannot serve {self.api} requests.", param="model"
        )

    def call(self, route: Route, upstream_model: str, request_id: str) -> UpstreamCall:
        """The call for one route, in the format that route takes (`route.serves`). Built
        before the attempt starts, so a request a route cannot take fails before any
        accounting."""
        raise NotImplementedError

    async def look_up(
        self,
        flow: CacheFlow,
        model_cache: ModelCacheConfig | bool | None,
        namespace: str,
        model: str,
        cache_control: str | None,
    ) -> Lookup:
        """The cache step: by default one entry per whole answer."""
        return await flow.lookup(model_cache, self, namespace, model, cache_control)

    def keep(self, flow: CacheFlow, lookup: Lookup, answer: bytes, route: str, target: str) -> None:
        """The cache fill after a successful answer (and the single flight's followers let
        go); by default the whole answer under the key `look_up` read."""
        flow.store(lookup, answer, route, target)

    def answer(
        self, reply: bytes, call: UpstreamCall, public: str, upstream: str, record: RequestRecord
    ) -> bytes:
        """An upstream's JSON reply as the client's JSON answer; notes usage, finish reasons
        and the upstream's model on `record`. A malformed reply raises UpstreamError."""
        raise NotImplementedError

    def relay(
        self,
        first: list[bytes],
        events: AsyncIterator[list[bytes]],
        context: StreamContext,
        call: UpstreamCall,
    ) -> AsyncIterator[list[bytes]]:
        """The client's stream (event payloads in its format) from the upstream's first
        batch on. Raises, before anything is sent, when the first batch is only a failure."""
        raise NotImplementedError

    def whole(self, collected: list[bytes], record: RequestRecord) -> bytes | None:
        """A finished stream's payloads (as relayed) as one JSON answer in the client's
        format, for the cache and for stored state (usage from `record` when the stream's
        own usage was not relayed); None when it must not be kept."""
        raise NotImplementedError

    def keepable(self, answer: bytes) -> bool:
        """May this JSON answer be cached (every choice finished normally)?"""
        return True

    def from_cache(self, answer: bytes) -> bytes:
        """A cached JSON answer for this request (e.g. with fresh ids)."""
        return answer

    def replay(self, answer: bytes) -> list[bytes]:
        """A cached JSON answer as this request's stream payloads."""
        raise NotImplementedError

    @property
    def keeps_answer(self) -> bool:
        """Does `finish` need the whole answer even when nothing is cached?"""
        return False

    async def finish(self, answer: bytes) -> None:
        """After a successful answer, once (e.g. keep a stored response)."""


class FrontDoor(Protocol):
    """One wire format on the client's side: decoding, and the framing of answers."""

    api: Api
    headers: frozenset[bytes]  # request headers decode() reads (lower-case)

    async def decode(self, body: bytes, context: DecodeContext) -> FrontRequest: ...

    def error_body(self, error: ProxyError) -> bytes:
        """An error in this format's envelope."""
        ...

    def id_headers(self, request_id: str) -> dict[str, str]:
        """The response headers that carry the request id in this format."""
        ...

    def frames(self, batches: AsyncIterator[list[bytes]]) -> AsyncIterator[bytes]:
        """Stream payloads framed as SSE for the client; what escapes the relay (a failure
        after the first byte) is sent in-band, and the stream's proper ending follows."""
        ...

    def whole_frames(self, payloads: list[bytes]) -> bytes:
        """A whole stream known at once (a cache hit), as one body."""
        ...


KEY_HEADER = b"x-api-key"


def door_credential(
    door: FrontDoor, authorization: str | None, headers: dict[str, str]
) -> str | None:
    """The credential the gateway checks. A door whose clients may send their key in
    `x-api-key` (Anthropic's) lists that header among its `headers`: the key is then checked
    as the bearer token it stands for (and taken out of the headers the pipeline reads), and
    wins over an Authorization header."""
    if KEY_HEADER not in door.headers:
        return authorization
    key = headers.pop(KEY_HEADER.decode(), None)
    return f"Bearer {key}" if key else authorization
