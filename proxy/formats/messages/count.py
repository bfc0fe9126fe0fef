"""`POST /v1/messages/count_tokens`: `{"input_tokens": N}` for a Messages body.

The caller's key, its allow-list, the rules and model resolution apply as to /v1/messages (an
unknown model is a 404). The count is the upstream's own when the model has an Anthropic
route (routes tried in their configured order; one that fails other than on the client's
request is passed over), else the proxy's estimate of the request, the figure its token
limits admit it on. Counting generates nothing, so limits, budgets, the cache and the
request metrics leave it alone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import msgspec
from loguru import logger

from proxy.errors import InvalidRequestError, ProxyError, RequestTooLargeError
from proxy.formats.messages.door import passed_headers
from proxy.formats.messages.request import MessagesRequest, decode_head
from proxy.policy import ResolvedModel
from proxy.upstreams.base import UpstreamCall
from proxy.wire import top_level

if TYPE_CHECKING:
    from proxy.gateway import Gateway

_encode = msgspec.json.Encoder().encode


@runtime_checkable
class TokenCounter(Protocol):
    async def count_tokens(self, call: UpstreamCall) -> bytes: ...


class TokenCount(msgspec.Struct):
    input_tokens: int


_count_decoder = msgspec.json.Decoder(TokenCount)


@dataclass(frozen=True, slots=True)
class Counted:
    body: bytes  # {"input_tokens": N}
    target: str | None  # `<upstream>/<model>` that counted; None: the proxy's estimate


async def count_tokens(
    gateway: Gateway,
    authorization: str | None,
    request_id: str,
    headers: Mapping[str, str],
    read_body: Callable[[], Awaitable[bytes]],
) -> Counted:
    """The key is checked from the headers before the body is read."""
    policy = gateway.policy
    caller = gateway.authenticate(authorization)
    body = await read_body()
    if len(body) > policy.max_body_bytes:
        limit = policy.max_body_bytes
        raise RequestTooLargeError(f"The request body is larger than {limit} bytes.")
    request = MessagesRequest(body, top_level(body), decode_head(body), passed_headers(headers))
    resolved = gateway.resolve(caller, request, headers)
    counted = await upstream_count(gateway, resolved, request, request_id)
    if counted is not None:
        return counted
    return Counted(_encode(TokenCount(request.estimate)), None)


async def upstream_count(
    gateway: Gateway, resolved: ResolvedModel, request: MessagesRequest, request_id: str
) -> Counted | None:
    """The first Anthropic route's count (None: the model has none that answered)."""
    for route in resolved.policy.routes:
        upstream = gateway.upstreams.get(route.upstream)
        if request.api not in route.serves or not isinstance(upstream, TokenCounter):
            continue
        model = resolved.upstream_model(route)
        body = request.native_body(model, route.drop_params)
        call = UpstreamCall(
            body, model, route.timeouts, request_id, route.drop_params, "messages",
            request.passed_headers,
        )  # fmt: skip
        try:
            reply = await upstream.count_tokens(call)
            _count_decoder.decode(reply)
        except InvalidRequestError as exc:  # the client's request: no route will like it more
            exc.message = gateway.redactor(exc.message)  # the upstream's words
            raise
        except ProxyError as exc:
            logger.warning("count_tokens on {} failed: {}", route.label, exc.message)
            continue
        except (msgspec.DecodeError, msgspec.ValidationError):
            logger.warning("count_tokens on {}: the reply holds no input_tokens", route.label)
            continue
        return Counted(reply, f"{route.upstream}/{model}")
    return None
