"""GET and DELETE /v1/responses/{id} and GET /v1/responses/{id}/input_items: stored
responses read back by the key that made them (for any other caller they do not exist)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from proxy.errors import InvalidRequestError, NotFoundError
from proxy.formats.responses.store import ResponseStore, StoredResponse

if TYPE_CHECKING:
    from proxy.gateway import Gateway

_encode = msgspec.json.Encoder().encode
DEFAULT_LIMIT, MAX_LIMIT = 20, 100


async def _stored(gateway: Gateway, authorization: str | None, ident: str) -> StoredResponse:
    caller = gateway.authenticate(authorization)
    store: ResponseStore | None = gateway.door_services.get("responses")
    stored = await store.load(ident, caller.name) if store is not None else None
    if stored is None:
        raise NotFoundError(f"Response with id '{ident}' not found.")
    return stored


async def retrieve(gateway: Gateway, authorization: str | None, ident: str) -> bytes:
    return bytes((await _stored(gateway, authorization, ident)).response)


async def delete(gateway: Gateway, authorization: str | None, ident: str) -> bytes:
    caller = gateway.authenticate(authorization)
    store: ResponseStore | None = gateway.door_services.get("responses")
    if store is None or not await store.delete(ident, caller.name):
        raise NotFoundError(f"Response with id '{ident}' not found.")
    return _encode({"id": ident, "object": "response", "deleted": True})


async def input_items(
    gateway: Gateway,
    authorization: str | None,
    ident: str,
    query: dict[str, str],
) -> bytes:
    """The input items of a stored response as a list page (`order` desc by default,
    `after` an item id, `limit` 1-100)."""
    order, after, limit = _page(query)
    items = (await _stored(gateway, authorization, ident)).input
    if order == "desc":
        items = items[::-1]
    if after is not None:
        ids = [item.get("id") for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    page = items[:limit]
    return _encode(
        {
            "object": "list",
            "data": page,
            "first_id": page[0].get("id") if page else None,
            "last_id": page[-1].get("id") if page else None,
            "has_more": len(items) > limit,
        }
    )


def _page(query: dict[str, str]) -> tuple[str, str | None, int]:
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequestError("order is asc or desc.", param="order")
    text = query.get("limit")
    limit = DEFAULT_LIMIT
    if text is not None:
        number = text.isascii() and text.isdigit() and len(text) <= len(str(MAX_LIMIT))
        limit = int(text) if number else 0
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidRequestError(f"limit is an integer from 1 to {MAX_LIMIT}.", param="limit")
    return order, query.get("after"), limit
