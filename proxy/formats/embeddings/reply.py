"""An upstream's embeddings list as the proxy reads it: its vectors in input order (checked
one per input sent), the tokens it counted and its model; and the two ways it becomes the
client's answer: passed on with only `model` swapped when nothing needs changing, else
rebuilt (proxy.formats.embeddings.request) with cached vectors merged in."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from proxy.errors import UpstreamError
from proxy.formats.embeddings.vectors import Vector, VectorError, form_of
from proxy.formats.embeddings.wire import ItemView, decode_reply

_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    vectors: list[Vector]  # in input order
    forms: frozenset[str]  # "float", "base64": what the vectors are written as
    tokens: int  # 0: the upstream counted none
    model: str | None
    in_order: bool  # the items came in input order: the bytes can be passed on as they are


def read_reply(reply: bytes, count: int, upstream: str) -> UpstreamReply:
    """The reply for `count` inputs; a malformed one is an UpstreamError (retried, failed
    over)."""
    try:
        view = decode_reply(reply)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise UpstreamError(
            f"The upstream '{upstream}' sent a reply that is not an embeddings list."
        ) from None
    if len(view.data) != count:
        raise UpstreamError(
            f"The upstream '{upstream}' sent {len(view.data)} embeddings for {count} inputs."
        )
    items = _in_order(view.data, upstream)
    vectors: list[Vector] = [item.embedding for item in items]
    try:
        forms = frozenset(form_of(vector) for vector in vectors)
    except VectorError as exc:
        message = f"The upstream '{upstream}' sent an invalid embedding: {exc}."
        raise UpstreamError(message) from None
    usage = view.usage
    tokens = usage.prompt_tokens if usage is not None and usage.prompt_tokens else 0
    return UpstreamReply(vectors, forms, tokens, view.model, items is view.data)


def _in_order(items: list[ItemView], upstream: str) -> list[ItemView]:
    """Items sorted by `index` (when the upstream numbered them, every index once); the same
    list when they already were in order."""
    if all(item.index == position for position, item in enumerate(items)):
        return items
    if all(item.index is None for item in items):
        return items
    ordered = sorted(items, key=lambda item: item.index if item.index is not None else -1)
    if [item.index for item in ordered] != list(range(len(items))):
        raise UpstreamError(f"The upstream '{upstream}' sent embeddings with wrong indices.")
    return ordered


def merge(cached: list[Vector | None], positions: list[int], fresh: list[Vector]) -> list[Vector]:
    """Every input's vector: the cached ones where the upstream was not asked."""
    if not cached:
        return fresh
    answered = dict(zip(positions, fresh, strict=True))
    merged: list[Vector] = []
    for position, vector in enumerate(cached):
        chosen = answered.get(position, vector)
        assert chosen is not None  # every position is either cached or was sent
        merged.append(chosen)
    return merged


def with_model(reply: bytes, model: str | None, public: str) -> bytes | None:
    """The reply with its `model` swapped for the public name, in place (None: not found in
    the usual form). Searched from the end: OpenAI writes `model` after the vectors."""
    if model is None:
        return None
    current = b'"model":' + _encode(model)
    position = reply.rfind(current)
    if position < 0:
        return None
    swapped = b'"model":' + _encode(public)
    return b"".join((reply[:position], swapped, reply[position + len(current) :]))
