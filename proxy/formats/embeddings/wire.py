"""OpenAI's embeddings wire: what the proxy reads of a request, the answer it gives, what it
reads of an upstream's reply, and the typed result of the in-process API.

Vectors travel as raw JSON (a list of floats, or a base64 string of little-endian float32):
the proxy splices them into the answer and decodes one only to convert it to the form the
client asked for.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from proxy.errors import InvalidRequestError
from proxy.wire import ModelName

EncodingFormat = Literal["float", "base64"]
Dimensions = Annotated[int, Meta(ge=1)]


class EmbeddingsHead(msgspec.Struct):
    """The fields the proxy acts on; every other field passes through to the upstream."""

    model: ModelName
    input: Any  # judged by proxy.formats.embeddings.inputs
    encoding_format: EncodingFormat = "float"
    dimensions: Dimensions | None = None
    user: str | None = None


class EmbeddingItem(msgspec.Struct):
    object: str
    index: int
    embedding: msgspec.Raw


class EmbeddingUsage(msgspec.Struct):
    prompt_tokens: int
    total_tokens: int


class EmbeddingAnswer(msgspec.Struct):
    """The answer the client receives, in OpenAI's field order."""

    object: str
    data: list[EmbeddingItem]
    model: str
    usage: EmbeddingUsage


class ItemView(msgspec.Struct):
    embedding: msgspec.Raw
    index: int | None = None


class _UsageView(msgspec.Struct):
    prompt_tokens: int | None = None


class ReplyView(msgspec.Struct):
    """What the proxy reads of an upstream's embeddings list."""

    data: list[ItemView]
    model: str | None = None
    usage: _UsageView | None = None


# -- the in-process API's typed result ------------------------------------------------------


class Embedding(msgspec.Struct):
    index: int
    embedding: list[float] | str
    object: str = "embedding"


class EmbeddingList(msgspec.Struct):
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
    object: str = "list"


# -- decoding -------------------------------------------------------------------------------

_head_decoder = msgspec.json.Decoder(EmbeddingsHead, strict=False)  # as the chat door: 8.0 is 8
_reply_decoder = msgspec.json.Decoder(ReplyView)
_MISSING_FIELD = re.compile(r"missing required field `([^`]+)`")
_AT_PATH = re.compile(r" - at `\$\.?([^`]*)`$")


def decode_head(body: bytes) -> EmbeddingsHead:
    """Validate the fields the proxy reads; a failure is a 400 whose `param` names the field."""
    try:
        return _head_decoder.decode(body)
    except msgspec.ValidationError as exc:
        message = str(exc)
        param = _param_of(message)
        reason = _AT_PATH.sub("", message)
        raise InvalidRequestError(f"Invalid request: {reason}", param=param) from None
    except (msgspec.DecodeError, UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidRequestError("The request body is not valid JSON.") from None


def _param_of(message: str) -> str | None:
    missing = _MISSING_FIELD.search(message)
    if missing:
        return missing.group(1)
    at = _AT_PATH.search(message)
    return at.group(1) if at else None


def decode_reply(body: bytes) -> ReplyView:
    """An upstream's reply; raises msgspec errors for the caller to turn into its own."""
    return _reply_decoder.decode(body)
