"""`Gateway.embeddings`: the embeddings pipeline without HTTP, with a typed result."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from proxy.formats.embeddings.door import EMBEDDINGS
from proxy.formats.embeddings.wire import EmbeddingList, EncodingFormat

if TYPE_CHECKING:
    from proxy.inprocess import InProcess

EmbeddingInput = str | list[str] | list[int] | list[list[int]]
_decoder = msgspec.json.Decoder(EmbeddingList)


async def embeddings(
    inprocess: InProcess,
    model: str,
    input: EmbeddingInput,
    *,
    encoding_format: EncodingFormat = "float",
    dimensions: int | None = None,
    api_key: str | None = None,
    request_id: str | None = None,
    headers: Mapping[str, str] | None = None,
    **params: Any,
) -> EmbeddingList:
    """Vectors as lists of floats (or base64 strings with encoding_format="base64")."""
    request: dict[str, Any] = {"model": model, "input": input, **params}
    request["encoding_format"] = encoding_format
    if dimensions is not None:
        request["dimensions"] = dimensions
    result = await inprocess.send(EMBEDDINGS, request, api_key, request_id, headers)
    assert result.body is not None  # embeddings never stream
    return _decoder.decode(result.body)
