"""The worker's side of OpenAI's embeddings wire: what a request may ask for, checked once, and
the reply's shape.

`input` is a string, a list of strings, an array of token ids or a list of such arrays (ids
of this model's own tokenizer). `encoding_format` is `float` (the default) or `base64`
(little-endian float32, base64-encoded, as OpenAI sends it). `dimensions` keeps the first N
values of each vector, then normalises again. Unknown fields are ignored, as for chat.
"""

from __future__ import annotations

import base64
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from proxy.errors import InvalidRequestError

MAX_INPUTS = 2048  # OpenAI's own bound on the inputs of one request


class EmbeddingParams(msgspec.Struct):
    input: Any
    model: str = ""
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Meta(ge=1)] | None = None
    user: str | None = None


@dataclass(frozen=True, slots=True)
class EmbeddingInputs:
    """Either texts to tokenize or rows of token ids, never both."""

    texts: list[str] | None = None
    token_rows: list[list[int]] | None = None

    def __len__(self) -> int:
        return len(self.texts if self.texts is not None else self.token_rows or ())


class EmbeddingItem(msgspec.Struct):
    index: int
    embedding: list[float] | str
    object: str = "embedding"


class EmbeddingUsage(msgspec.Struct):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(msgspec.Struct):
    data: list[EmbeddingItem]
    model: str
    usage: EmbeddingUsage
    object: str = "list"


_decoder = msgspec.json.Decoder(EmbeddingParams)
_NAMED_FIELD = re.compile(r"`(?:\$\.)?(input|model|encoding_format|dimensions|user)`")
_encode = msgspec.json.Encoder().encode


def decode_embedding_params(body: bytes) -> tuple[EmbeddingParams, EmbeddingInputs]:
    try:
        params = _decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise InvalidRequestError(f"Invalid request: {exc}", param=_param_of(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequestError(f"The request body is not valid JSON: {exc}") from None
    return params, inputs_of(params.input)


def _param_of(message: str) -> str | None:
    """The field a msgspec message names: "... - at `$.dimensions`", "missing required field
    `input`"."""
    named = _NAMED_FIELD.search(message)
    return named.group(1) if named else None


def inputs_of(value: Any) -> EmbeddingInputs:
    """The request's inputs, or a 400 naming `input` when they are none of the four shapes."""
    if isinstance(value, str):
        return EmbeddingInputs(texts=[_text(value, "input")])
    if not isinstance(value, list) or not value:
        raise _bad_input("`input` must be a non-empty string, array of strings, array of token "
                         "ids or array of token-id arrays.", "input")  # fmt: skip
    if len(value) > MAX_INPUTS:
        raise _bad_input(f"`input` may hold at most {MAX_INPUTS} items.", "input")
    if all(isinstance(item, str) for item in value):
        return EmbeddingInputs(texts=[_text(t, f"input[{i}]") for i, t in enumerate(value)])
    if all(_is_token(item) for item in value):
        return EmbeddingInputs(token_rows=[list(value)])
    if all(isinstance(item, list) for item in value):
        return EmbeddingInputs(token_rows=[_tokens(r, f"input[{i}]") for i, r in enumerate(value)])
    raise _bad_input("`input` mixes strings, token ids and arrays; use one kind.", "input")


def _is_token(item: Any) -> bool:
    return isinstance(item, int) and not isinstance(item, bool)


def _text(value: str, param: str) -> str:
    if not value:
        raise _bad_input("An input string must not be empty.", param)
    return value


def _tokens(row: list[Any], param: str) -> list[int]:
    if not row or not all(_is_token(t) for t in row):
        raise _bad_input("A token-id array must be non-empty and hold only integers.", param)
    return row


def _bad_input(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code="invalid_input")


def check_token_rows(rows: Sequence[Sequence[int]], vocab_size: int, max_tokens: int) -> None:
    """Every row fits the model: known token ids, at most `max_tokens` long."""
    for index, row in enumerate(rows):
        if len(row) > max_tokens:
            raise InvalidRequestError(
                f"This model's maximum input length is {max_tokens} tokens; input {index} "
                f"has {len(row)}.",
                param="input",
                code="context_length_exceeded",
            )
        if min(row) < 0 or max(row) >= vocab_size:
            raise _bad_input(f"Token ids must lie in [0, {vocab_size}).", f"input[{index}]")


def check_dimensions(dimensions: int | None, model_dimensions: int) -> None:
    if dimensions is not None and dimensions > model_dimensions:
        raise InvalidRequestError(
            f"`dimensions` may be at most {model_dimensions} for this model (got {dimensions}).",
            param="dimensions",
        )


def to_base64(values: Sequence[float]) -> str:
    """Little-endian float32, base64: what OpenAI sends for `encoding_format: base64`."""
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")


def from_base64(text: str) -> list[float]:
    raw = base64.b64decode(text)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def embedding_body(model: str, vectors: Sequence[list[float] | str], prompt_tokens: int) -> bytes:
    data = [EmbeddingItem(index, vector) for index, vector in enumerate(vectors)]
    return _encode(EmbeddingList(data, model, EmbeddingUsage(prompt_tokens, prompt_tokens)))
