"""The embeddings door (`POST /v1/embeddings`): OpenAI's body validated, the request made, and
errors in OpenAI's envelope. Embeddings never stream."""

from __future__ import annotations

from collections.abc import AsyncIterator

from proxy.errors import ProxyError
from proxy.formats.base import DecodeContext
from proxy.formats.embeddings.request import EmbeddingsRequest
from proxy.formats.embeddings.wire import decode_head
from proxy.upstreams.base import Api
from proxy.wire import top_level


class EmbeddingsDoor:
    api: Api = "embeddings"
    headers: frozenset[bytes] = frozenset()

    async def decode(self, body: bytes, context: DecodeContext) -> EmbeddingsRequest:
        fields = top_level(body)
        return EmbeddingsRequest(body, fields, decode_head(body), context.policy)

    def error_body(self, error: ProxyError) -> bytes:
        return error.body()

    def id_headers(self, request_id: str) -> dict[str, str]:
        return {"x-request-id": request_id}

    async def frames(self, batches: AsyncIterator[list[bytes]]) -> AsyncIterator[bytes]:
        async for batch in batches:  # never reached: an embeddings request does not stream
            yield b"".join(batch)

    def whole_frames(self, payloads: list[bytes]) -> bytes:
        return b"".join(payloads)


EMBEDDINGS = EmbeddingsDoor()
