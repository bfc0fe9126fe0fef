"""The in-process Responses API: `Gateway.responses(...)` answers a typed ResponseObject, or
with `stream=True` an async iterator of typed ResponseEvent."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from proxy.formats.responses.door import RESPONSES
from proxy.formats.responses.wire import ResponseEvent, ResponseObject

if TYPE_CHECKING:
    from proxy.inprocess import InProcess

_response = msgspec.json.Decoder(ResponseObject)
_event = msgspec.json.Decoder(ResponseEvent)
DATA = b"\ndata: "


async def create_response(
    inprocess: InProcess,
    model: str,
    input: str | list[dict[str, Any]],
    *,
    stream: bool = False,
    api_key: str | None = None,
    request_id: str | None = None,
    headers: Mapping[str, str] | None = None,
    **params: Any,
) -> ResponseObject | AsyncIterator[ResponseEvent]:
    request: dict[str, Any] = {"model": model, "input": input, **params}
    if stream:
        request["stream"] = True
    result = await inprocess.send(RESPONSES, request, api_key, request_id, headers)
    if result.whole_stream is not None:
        return _typed_events(_once(result.whole_stream))
    if result.stream is not None:
        return _typed_events(result.stream)
    assert result.body is not None
    return _response.decode(result.body)


async def _typed_events(batches: AsyncIterator[list[bytes]]) -> AsyncIterator[ResponseEvent]:
    async for batch in batches:
        for frame in batch:  # b"event: <type>\ndata: <json>\n\n"
            yield _event.decode(frame[frame.index(DATA) + len(DATA) : -2])


async def _once(batch: list[bytes]) -> AsyncIterator[list[bytes]]:
    yield batch
