"""The client's Responses stream around the relay: the relay's batches (chat chunks of a
translated route, or a native route's framed events) made into events, the response kept
before the client sees its last event, and a failure after the first event sent as
`response.failed` (the relay has counted it). Cancellation passes through untouched."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

import msgspec

from proxy.errors import ProxyError
from proxy.formats.responses.encoder import StreamEncoder
from proxy.formats.responses.native import NativeEvents

if TYPE_CHECKING:
    from proxy.accounting import RequestRecord

_encode = msgspec.json.Encoder().encode


class StreamCodec(Protocol):
    @property
    def finished(self) -> bool:
        """Has a batch carried the response's final event (so it is whole already)?"""
        ...

    def start(self) -> list[bytes]: ...

    def add(self, batch: list[bytes]) -> list[bytes]: ...

    def close(self) -> list[bytes]:
        """The events after the relay ended properly."""
        ...

    def failed(self, error: ProxyError) -> list[bytes]: ...

    def whole(self) -> bytes | None:
        """The whole response, once the upstream has finished it."""
        ...


class TranslatedCodec:
    def __init__(self, encoder: StreamEncoder, record: RequestRecord, opening: list[bytes]) -> None:
        self.encoder = encoder
        self.record = record
        self.opening = opening  # the encoder's first events, made before the relay started
        self._whole: bytes | None = None

    @property
    def finished(self) -> bool:
        return False  # the chat stream ends before its response's final event is made

    def start(self) -> list[bytes]:
        return self.opening

    def add(self, batch: list[bytes]) -> list[bytes]:
        return batch  # the relay's rewriter made the events already (ChatChunksAsEvents)

    def close(self) -> list[bytes]:
        return self.encoder.close(self.record)

    def failed(self, error: ProxyError) -> list[bytes]:
        return self.encoder.failed(error)

    def whole(self) -> bytes | None:
        """Asked by the settlement (as the relay ends) and before the last event."""
        if self._whole is None:
            self._whole = _encode(self.encoder.response(self.record))
        return self._whole


class NativeCodec:
    def __init__(self, events: NativeEvents) -> None:
        self.events = events

    @property
    def finished(self) -> bool:
        return self.events.final is not None

    def start(self) -> list[bytes]:
        return []

    def add(self, batch: list[bytes]) -> list[bytes]:
        return batch  # framed by the relay's rewriter

    def close(self) -> list[bytes]:
        return []

    def failed(self, error: ProxyError) -> list[bytes]:
        return self.events.failed(error)

    def whole(self) -> bytes | None:
        final = self.events.final
        return _encode(final) if final is not None else None


async def encoded(
    inner: AsyncIterator[list[bytes]],
    codec: StreamCodec,
    keep: Callable[[], Awaitable[None]],
) -> AsyncIterator[list[bytes]]:
    try:
        pending = codec.start()
        async for batch in inner:
            frames = pending + codec.add(batch)
            pending = []
            if codec.finished:
                await keep()  # the batch holds the final event: keep first
            if frames:
                yield frames
        tail = codec.close()
        await keep()
        if tail:
            yield tail
    except ProxyError as exc:
        yield codec.failed(exc)
    finally:
        await inner.aclose()  # type: ignore[attr-defined]
