"""The Anthropic Messages API door (`POST /v1/messages`): decoding, Anthropic's error envelope
and `request-id` header, and the framing of its streams."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

from loguru import logger

from proxy.errors import InternalError, InvalidRequestError, ProxyError
from proxy.formats.base import KEY_HEADER, DecodeContext
from proxy.formats.messages.events import error_body, error_frame
from proxy.formats.messages.request import MessagesRequest, decode_head
from proxy.upstreams.base import Api
from proxy.wire import top_level

# client headers passed on to a native route (they choose the API's behaviour)
PASSED_HEADERS = ("anthropic-version", "anthropic-beta")


class MessagesDoor:
    api: Api = "messages"
    # x-api-key: Anthropic's clients may send their key there (see `door_credential`)
    headers: frozenset[bytes] = frozenset({KEY_HEADER, *(h.encode() for h in PASSED_HEADERS)})

    async def decode(self, body: bytes, context: DecodeContext) -> MessagesRequest:
        fields = top_level(body)
        head = decode_head(body)
        if head.max_tokens is None:
            raise InvalidRequestError("max_tokens: Field required", param="max_tokens")
        limit = context.policy.config.server.max_messages
        if len(head.messages) > limit:
            raise InvalidRequestError(f"Too many messages (at most {limit}).", param="messages")
        return MessagesRequest(body, fields, head, passed_headers(context.headers))

    def error_body(self, error: ProxyError) -> bytes:
        return error_body(error)

    def id_headers(self, request_id: str) -> dict[str, str]:
        return {"request-id": request_id, "x-request-id": request_id}

    async def frames(self, batches: AsyncIterator[list[bytes]]) -> AsyncIterator[bytes]:
        """One write per batch. A failure after the start already came as an `error` event
        from the request's relay; what still escapes here is a bug, sent the same way."""
        try:
            async for batch in batches:
                yield b"".join(batch)
        except ProxyError as exc:
            yield error_frame(exc)
        except Exception:
            logger.exception("stream failed")
            yield error_frame(InternalError("The stream failed inside the proxy."))

    def whole_frames(self, payloads: list[bytes]) -> bytes:
        return b"".join(payloads)


def passed_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {name: headers[name] for name in PASSED_HEADERS if headers.get(name)}


MESSAGES = MessagesDoor()
