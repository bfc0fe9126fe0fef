"""The embeddings cache works per input: each input's vector is an entry of its own in the
response cache (so the disk, memory and Redis backends all hold it), and a request sends
upstream only the inputs no entry holds.

An input's key is sha256 over the caller's namespace, the resolved public model, the door,
the canonical JSON of every other field of the body that can change a vector (`dimensions`,
and any field the proxy does not know) and the input itself. `encoding_format` is left out:
an entry holds the vector as the upstream gave it and is converted on the way out; `user`
is left out as for every cache key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import msgspec

from proxy.cache.cache import Entry, ResponseCache
from proxy.cache.keys import CacheDecision
from proxy.formats.embeddings.inputs import Input
from proxy.formats.embeddings.vectors import Vector

# fields that never change a vector (the model stands in as the resolved public name)
IGNORED_FIELDS = frozenset(
    {"input", "model", "encoding_format", "user", "stream", "stream_options", "metadata"}
)

_decode = msgspec.json.Decoder().decode
_canonical = msgspec.json.Encoder(order="sorted").encode


def input_keys(
    namespace: str, model: str, fields: Mapping[str, msgspec.Raw], inputs: Iterable[Input]
) -> list[str]:
    """One cache key per input, in order."""
    others = {name: _decode(raw) for name, raw in fields.items() if name not in IGNORED_FIELDS}
    prefix = hashlib.sha256()
    for part in (namespace.encode(), model.encode(), b"embeddings-input", _canonical(others)):
        prefix.update(part)
        prefix.update(b"\x00")
    keys = []
    for item in inputs:
        digest = prefix.copy()
        digest.update(_canonical(item))
        keys.append(digest.hexdigest())
    return keys


@dataclass(slots=True)
class StoredInputs:
    """One request's inputs in the cache: what was found, and the fills after the answer."""

    cache: ResponseCache
    decision: CacheDecision
    keys: list[str]
    found: list[Entry | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.found = [None] * len(self.keys)

    async def read(self) -> None:
        self.found = await self.cache.get_many(self.keys, self.decision.max_age)

    @property
    def missing(self) -> list[int]:
        """The positions of the inputs no entry holds."""
        return [position for position, entry in enumerate(self.found) if entry is None]

    def fill(self, positions: list[int], vectors: list[Vector], route: str, target: str) -> None:
        for position, vector in zip(positions, vectors, strict=True):
            self.cache.fill(self.keys[position], bytes(vector), route, self.decision.ttl, target)
