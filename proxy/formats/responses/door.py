"""The Responses API door (POST /v1/responses): decoding with the stored conversation a
request continues, OpenAI's error envelope, and streams whose payloads are whole SSE frames."""

from __future__ import annotations

from collections.abc import AsyncIterator

from loguru import logger

from proxy.errors import InternalError, InvalidRequestError, ProxyError
from proxy.formats.base import DecodeContext
from proxy.formats.responses.inputs import check_call_ids, input_items
from proxy.formats.responses.request import ResponsesRequest
from proxy.formats.responses.store import NEW_CONVERSATION, ResponseStore
from proxy.formats.responses.wire import decode_head, frame
from proxy.upstreams.base import Api
from proxy.wire import top_level


class ResponsesDoor:
    api: Api = "responses"
    headers: frozenset[bytes] = frozenset()

    async def decode(self, body: bytes, context: DecodeContext) -> ResponsesRequest:
        fields = top_level(body)
        head = decode_head(body)
        items = input_items(head.input)
        limit = context.policy.config.server.max_messages
        if len(items) > limit:
            raise InvalidRequestError(f"Too many input items (at most {limit}).", param="input")
        store: ResponseStore | None = context.services
        owner = context.caller.name
        conversation = NEW_CONVERSATION
        if head.previous_response_id is not None:
            if store is None:
                raise InvalidRequestError(
                    f"Previous response with id '{head.previous_response_id}' not found.",
                    param="previous_response_id",
                )
            conversation = await store.conversation(head.previous_response_id, owner)
        check_call_ids(items, conversation.items)
        keeper = store if head.store is not False else None
        return ResponsesRequest(body, fields, head, items, conversation, keeper, owner)

    def error_body(self, error: ProxyError) -> bytes:
        return error.body()

    def id_headers(self, request_id: str) -> dict[str, str]:
        return {"x-request-id": request_id}

    async def frames(self, batches: AsyncIterator[list[bytes]]) -> AsyncIterator[bytes]:
        """Each batch in one write. A failure after the first event reaches the client as
        `response.failed` from the request's own stream; what still escapes here is a bug,
        sent as an `error` event numbered after the events already sent."""
        sent = 0
        try:
            async for batch in batches:
                sent += len(batch)
                yield b"".join(batch)
        except ProxyError as exc:
            yield _error_event(exc, sent)
        except Exception:
            logger.exception("stream failed")
            yield _error_event(InternalError("The stream failed inside the proxy."), sent)

    def whole_frames(self, payloads: list[bytes]) -> bytes:
        return b"".join(payloads)


def _error_event(error: ProxyError, sequence: int) -> bytes:
    code = error.code or error.type
    event = {"type": "error", "code": code, "message": error.message, "param": error.param}
    return frame({**event, "sequence_number": sequence})


RESPONSES = ResponsesDoor()
