"""Stored responses: each kept under its id with the name of the key that made it, its input
items, the response it answered with, the response it continued and, when an upstream made
it natively, that upstream's name. For any other caller a stored response does not exist."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

import msgspec
from loguru import logger
from redis.exceptions import RedisError

from proxy.errors import InvalidRequestError, ServiceUnavailableError
from proxy.formats.responses.store.backends import StoreBackend

MAX_CHAIN = 1000  # responses a conversation is rebuilt from, at most
_FAULTS = (RedisError, OSError, sqlite3.Error, TimeoutError)


class StoredResponse(msgspec.Struct):
    owner: str  # the key name that made it
    response: msgspec.Raw  # the response object as its caller received it
    input: list[dict[str, Any]]  # its input items as the API lists them
    previous: str | None = None  # the previous_response_id it continued
    upstream: str | None = None  # the upstream that made it natively (None: translated)


class _Output(msgspec.Struct):
    output: list[dict[str, Any]] = []


_encode = msgspec.json.Encoder().encode
_decode_stored = msgspec.json.Decoder(StoredResponse).decode
_decode_output = msgspec.json.Decoder(_Output).decode


@dataclass(frozen=True, slots=True)
class Conversation:
    """What a continued response comes after: every earlier item in order (inputs and
    outputs), and the upstream that made the previous response natively."""

    items: list[dict[str, Any]]
    upstream: str | None = None


NEW_CONVERSATION = Conversation([])


class ResponseStore:
    def __init__(self, backend: StoreBackend, ttl: float) -> None:
        self.backend = backend
        self.ttl = ttl

    async def save(self, response_id: str, stored: StoredResponse) -> None:
        """Keep a response; a storage failure is logged (the caller has its answer)."""
        try:
            await self.backend.put(response_id, _encode(stored), self.ttl)
        except _FAULTS as exc:
            logger.warning("a response could not be stored ({}): {}", type(exc).__name__, exc)

    async def load(self, response_id: str, owner: str) -> StoredResponse | None:
        """The stored response, or None: unknown, expired, or another caller's."""
        try:
            raw = await self.backend.get(response_id)
        except _FAULTS as exc:
            raise ServiceUnavailableError(f"Stored responses are unavailable: {exc}") from None
        if raw is None:
            return None
        try:
            stored = _decode_stored(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        return stored if stored.owner == owner else None

    async def delete(self, response_id: str, owner: str) -> bool:
        if await self.load(response_id, owner) is None:
            return False
        try:
            return await self.backend.delete(response_id)
        except _FAULTS as exc:
            raise ServiceUnavailableError(f"Stored responses are unavailable: {exc}") from None

    async def conversation(self, response_id: str, owner: str) -> Conversation:
        """The conversation a new response continues: the chain of stored responses ending
        with `response_id`, oldest first (a chain whose older part has expired starts where
        it still exists). Unknown or foreign: a 400 naming previous_response_id."""
        chain: list[StoredResponse] = []
        seen: set[str] = set()
        ident: str | None = response_id
        while ident is not None and ident not in seen and len(chain) < MAX_CHAIN:
            seen.add(ident)
            stored = await self.load(ident, owner)
            if stored is None:
                break
            chain.append(stored)
            ident = stored.previous
        if not chain:
            raise InvalidRequestError(
                f"Previous response with id '{response_id}' not found.",
                param="previous_response_id",
            )
        items: list[dict[str, Any]] = []
        for stored in reversed(chain):
            items += stored.input
            items += _decode_output(stored.response).output
        return Conversation(items, chain[0].upstream)

    async def close(self) -> None:
        await self.backend.close()
