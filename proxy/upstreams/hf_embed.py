"""HuggingFace embeddings: a TEI server's `POST {base_url}/embed` (`api: tei`) and the
Inference API's feature-extraction pipeline, `POST {base_url}/models/{model}/pipeline/
feature-extraction` (`api: text-generation`, the classic task API's base url).

Pure translation: OpenAI's embeddings body to their payload (`{"inputs": [...]}`), and their
reply (bare arrays of floats) to OpenAI's embeddings list; HuggingFaceUpstream.embed sends it.
- inputs: TEI takes texts or token-id arrays; the feature-extraction pipeline takes texts
  only, so a token array is a 400 naming `input` (before any call).
- `dimensions`: neither API takes it; the first N values are kept and the vector normalised
  again, as OpenAI shortens its own embeddings.
- usage: TEI's `x-compute-tokens` header; when an upstream counts none the reply carries no
  usage and the embeddings door estimates it.
- a feature-extraction model without pooling answers one vector per token: mean-pooled.
- TEI's statuses: 413 (validation: too many inputs, an input too long) and 400 (empty) are
  the client's; 424 (the backend failed) and 503 are the upstream's; 429 is overload.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import msgspec

from proxy.errors import InvalidRequestError, ProxyError, UpstreamError, UpstreamRejectedError
from proxy.upstreams.base import UpstreamCall
from proxy.upstreams.hf_errors import hf_error, message_of

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode
# TEI: "Input validation error: `inputs` must have less than 512 tokens. Given: 600"
_TOO_LONG = re.compile(r"must have less than \d+ tokens", re.IGNORECASE)

Vector = list[float]


class _EmbeddingsBody(msgspec.Struct):
    """What the translation reads of OpenAI's embeddings body (the door validated it)."""

    input: str | list[Any]
    dimensions: int | None = None


_body_decoder = msgspec.json.Decoder(_EmbeddingsBody)


@dataclass(frozen=True, slots=True)
class EmbedTranslation:
    """One call's payload, and how its reply becomes OpenAI's embeddings list."""

    url: str
    payload: bytes
    count: int  # inputs sent
    dimensions: int | None
    model: str

    def reply(self, body: bytes, headers: Mapping[str, str], upstream: str) -> bytes:
        vectors = [self._shortened(v) for v in read_vectors(body, self.count, upstream)]
        data = [
            {"object": "embedding", "index": index, "embedding": vector}
            for index, vector in enumerate(vectors)
        ]
        answer: dict[str, Any] = {"object": "list", "data": data, "model": self.model}
        tokens = _counted_tokens(headers)
        if tokens:
            answer["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        return _encode(answer)

    def _shortened(self, vector: Vector) -> Vector:
        if self.dimensions is None or self.dimensions >= len(vector):
            return vector
        return normalised(vector[: self.dimensions])


class TEIEmbed:
    """A TEI server: texts or token-id arrays to {base_url}/embed."""

    def __init__(self, base_url: str) -> None:
        self._url = f"{base_url}/embed"

    def translate(self, call: UpstreamCall) -> EmbedTranslation:
        body = _read_body(call.body)
        inputs = _as_list(body.input)
        payload = _encode({"inputs": inputs})
        return EmbedTranslation(self._url, payload, len(inputs), body.dimensions, call.model)

    @staticmethod
    def error(upstream: str, status: int, body: bytes, headers: Mapping[str, str]) -> ProxyError:
        if status == 413:  # TEI's validation errors: the request's fault
            message = message_of(_json(body), body, headers) or "The input was refused."
            if _TOO_LONG.search(message):
                return UpstreamRejectedError(message, param="input", code="context_length_exceeded")
            return UpstreamRejectedError(message, param="input")
        return hf_error(upstream, status, body, headers)


class FeatureExtraction:
    """The classic task API: texts to {base_url}/models/{model}/pipeline/feature-extraction."""

    def __init__(self, base_url: str) -> None:
        self._base = f"{base_url}/models/"

    def translate(self, call: UpstreamCall) -> EmbedTranslation:
        if any(part in ("", ".", "..") for part in call.model.split("/")):
            # the model id goes into the URL path: no traversal out of /models/
            raise InvalidRequestError(f"Invalid model id '{call.model}'.", param="model")
        body = _read_body(call.body)
        inputs = _as_list(body.input)
        if not all(isinstance(item, str) for item in inputs):
            raise InvalidRequestError(
                "This model's upstream embeds texts only, not token-id arrays.", param="input"
            )
        url = self._base + quote(call.model, safe="/:@") + "/pipeline/feature-extraction"
        payload = _encode({"inputs": inputs})
        return EmbedTranslation(url, payload, len(inputs), body.dimensions, call.model)

    @staticmethod
    def error(upstream: str, status: int, body: bytes, headers: Mapping[str, str]) -> ProxyError:
        return hf_error(upstream, status, body, headers)


def read_vectors(body: bytes, count: int, upstream: str) -> list[Vector]:
    """One vector per input from `[[...], ...]`; a lone `[...]` for a single input; a model
    without pooling (`[[[...], ...], ...]`, one vector per token) mean-pooled."""
    try:
        data = _decode(body)
    except msgspec.DecodeError:
        raise UpstreamError(f"The upstream '{upstream}' sent a reply that is not JSON.") from None
    if count == 1 and _is_vector(data):
        data = [data]
    if not isinstance(data, list) or len(data) != count:
        raise UpstreamError(
            f"The upstream '{upstream}' did not send one embedding per input ({count})."
        )
    vectors = []
    for item in data:
        if _is_vector(item):
            vectors.append([float(value) for value in item])
        elif isinstance(item, list) and item and all(_is_vector(row) for row in item):
            vectors.append(mean_pooled(item))
        else:
            raise UpstreamError(f"The upstream '{upstream}' sent an embedding that is not numbers.")
    return vectors


def mean_pooled(rows: Sequence[Sequence[float]]) -> Vector:
    width = len(rows[0])
    if any(len(row) != width for row in rows):
        raise UpstreamError("The upstream sent token vectors of different sizes.")
    return [sum(column) / len(rows) for column in zip(*rows, strict=True)]


def normalised(vector: Vector) -> Vector:
    norm = math.sqrt(sum(value * value for value in vector))
    return [value / norm for value in vector] if norm > 0 else vector


def _is_vector(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    )


def _read_body(body: bytes) -> _EmbeddingsBody:
    try:
        return _body_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise InvalidRequestError(
            "The embeddings request has no valid `input`.", param="input"
        ) from None


def _as_list(value: str | list[Any]) -> list[Any]:
    """The inputs one by one: a string or one token-id array is a single input."""
    if isinstance(value, str) or (value and isinstance(value[0], int)):
        return [value]
    return list(value)


def _counted_tokens(headers: Mapping[str, str]) -> int:
    text = headers.get("x-compute-tokens", "")
    return int(text) if text.isdigit() else 0


def _json(body: bytes) -> Any:
    try:
        return _decode(body)
    except msgspec.DecodeError:
        return None


Embedder = TEIEmbed | FeatureExtraction
EMBEDDERS: dict[str, Callable[[str], Embedder]] = {
    "tei": TEIEmbed,
    "text-generation": FeatureExtraction,
}
