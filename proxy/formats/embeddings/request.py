"""One embeddings request through the pipeline.

Every embedding upstream takes OpenAI's embeddings body (the HF adapter translates it), so a
call is the client's body with `model` rewritten and, when some inputs were cached, `input`
holding only the others. The answer is assembled in input order from the cached vectors and
the upstream's, each in the form the client asked for.

A call to a route of another model (a fallback) sends every input and keeps nothing: vectors
of two models must never meet in one answer or under one model's cache keys.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from proxy.cache.cache import Entry
from proxy.cache.flow import Lookup
from proxy.cache.keys import decide
from proxy.config import ParamBounds
from proxy.errors import UpstreamError
from proxy.formats.base import FrontRequest
from proxy.formats.embeddings.cache import StoredInputs, input_keys
from proxy.formats.embeddings.inputs import estimate_all, floats_as_ids, read_inputs
from proxy.formats.embeddings.reply import merge, read_reply, with_model
from proxy.formats.embeddings.vectors import Vector, VectorError, as_form
from proxy.formats.embeddings.wire import (
    EmbeddingAnswer,
    EmbeddingItem,
    EmbeddingsHead,
    EmbeddingUsage,
    decode_head,
)
from proxy.formats.params import apply_params
from proxy.upstreams.base import Api, UpstreamCall

if TYPE_CHECKING:
    from proxy.accounting import RequestRecord
    from proxy.cache.flow import CacheFlow
    from proxy.config import ModelCacheConfig
    from proxy.policy import Policy, Route

_encode = msgspec.json.Encoder().encode
PARAMS = frozenset({"dimensions"})  # the model `params` an embeddings body can take


@dataclass(frozen=True, slots=True)
class _Sent:
    """What one call carries: the positions of its inputs, and whether cached vectors may
    join its answer (a route of the model the cache was read for)."""

    call: UpstreamCall
    positions: list[int]
    own_model: bool


class EmbeddingsRequest(FrontRequest):
    api: Api = "embeddings"
    deterministic = True  # the same input always embeds the same: `deterministic_only` holds

    def __init__(
        self, body: bytes, fields: dict[str, msgspec.Raw], head: EmbeddingsHead, policy: Policy
    ) -> None:
        self.key_body = body
        self.fields = fields
        self.head = head
        self.model = head.model
        self.inputs = read_inputs(head.input)
        self._input_rewritten = floats_as_ids(head.input)  # sent as the ints they were read as
        self.policy = policy
        self.pending = list(range(len(self.inputs)))  # the inputs no cache entry holds
        self.stored: StoredInputs | None = None
        self._own_routes: frozenset[tuple[str, str]] = frozenset()
        self._calls: list[_Sent] = []
        self._answered: tuple[_Sent, list[Vector]] | None = None

    @property
    def estimate(self) -> int:
        """Input tokens of the inputs that go upstream (all of them until the cache is read)."""
        return estimate_all(self.inputs[position] for position in self.pending)

    def apply_params(self, params: Mapping[str, ParamBounds]) -> None:
        wanted = {name: bounds for name, bounds in params.items() if name in PARAMS}
        if wanted and apply_params(self.fields, wanted):
            self.key_body = _encode(self.fields)
            self.head = decode_head(self.key_body)

    def serves(self, formats: frozenset[str]) -> bool:
        return "embeddings" in formats

    # -- the cache, per input ---------------------------------------------------------------

    async def look_up(
        self,
        flow: CacheFlow,
        model_cache: ModelCacheConfig | bool | None,
        namespace: str,
        model: str,
        cache_control: str | None,
    ) -> Lookup:
        if not flow.cache.enabled:
            return Lookup(None)
        decision = decide(flow.config, model_cache, self, namespace, model, cache_control)
        if decision is None:
            return Lookup(None)
        shared = "*" if flow.config.shared_across_keys else namespace
        keys = input_keys(shared, model, self.fields, self.inputs)
        stored = self.stored = StoredInputs(flow.cache, decision, keys)
        self._own_routes = self._routes_of(model)
        if not decision.read:
            return Lookup(decision)
        await stored.read()
        self.pending = stored.missing
        if not self.pending:
            entry = self._whole_hit(model, stored)
            if entry is not None:
                return Lookup(decision, entry=entry)
        flight = flow.cache.lead(decision.key)  # single flight per whole request
        if flight is None:
            return Lookup(decision, leader=True)
        return Lookup(decision, entry=await flow.cache.follow(flight))

    def _routes_of(self, model: str) -> frozenset[tuple[str, str]]:
        resolved = self.policy.resolve(model)
        if resolved is None:
            return frozenset()
        routes = resolved.policy.routes
        return frozenset((route.ident, resolved.upstream_model(route)) for route in routes)

    def _whole_hit(self, model: str, stored: StoredInputs) -> Entry | None:
        """Every input was cached: the answer, with no usage (nothing went upstream)."""
        first = stored.found[0]
        assert first is not None
        try:
            body = self._assemble(model, [entry.body for entry in stored.found if entry], 0)
        except VectorError:  # an entry that cannot be converted: embed everything again
            self.pending = list(range(len(self.inputs)))
            stored.found = [None] * len(self.inputs)
            return None
        return Entry(time.time(), body, first.route, first.target)

    def keep(self, flow: CacheFlow, lookup: Lookup, answer: bytes, route: str, target: str) -> None:
        """Each vector the upstream gave is stored under its input's key; the followers of
        the single flight get the whole answer."""
        answered, stored = self._answered, self.stored
        if answered is not None and stored is not None and answered[0].own_model:
            stored.fill(answered[0].positions, answered[1], route, target)
        if lookup.decision is not None:
            flow.land(lookup, Entry(time.time(), answer, route, target))

    # -- the exchange -----------------------------------------------------------------------

    def call(self, route: Route, upstream_model: str, request_id: str) -> UpstreamCall:
        own_model = (route.ident, upstream_model) in self._own_routes
        positions = self.pending if own_model else list(range(len(self.inputs)))
        fields = dict(self.fields)
        fields["model"] = msgspec.Raw(_encode(upstream_model))
        if len(positions) < len(self.inputs) or self._input_rewritten:
            fields["input"] = msgspec.Raw(_encode([self.inputs[p] for p in positions]))
        for name in route.drop_params:
            fields.pop(name, None)
        call = UpstreamCall(
            _encode(fields),
            upstream_model,
            route.timeouts,
            request_id,
            route.drop_params,
            api="embeddings",
        )
        self._calls.append(_Sent(call, positions, own_model))
        return call

    def answer(
        self, reply: bytes, call: UpstreamCall, public: str, upstream: str, record: RequestRecord
    ) -> bytes:
        sent = next(s for s in self._calls if s.call is call)
        read = read_reply(reply, len(sent.positions), upstream)
        tokens = read.tokens or estimate_all(self.inputs[p] for p in sent.positions)
        record.upstream_model = read.model
        record.prompt_tokens, record.completion_tokens = tokens, 0
        cached = self._cached_vectors() if sent.own_model else []
        passable = read.tokens and read.in_order and read.forms == {self.head.encoding_format}
        answer = None
        if passable and all(vector is None for vector in cached):
            answer = with_model(reply, read.model, public)  # nothing else to change
        if answer is None:
            try:
                answer = self._assemble(public, merge(cached, sent.positions, read.vectors), tokens)
            except VectorError as exc:
                message = f"The upstream '{upstream}' sent an invalid embedding: {exc}."
                raise UpstreamError(message) from None
        self._answered = (sent, read.vectors)
        return answer

    def _cached_vectors(self) -> list[Vector | None]:
        if self.stored is None:
            return []
        return [entry.body if entry is not None else None for entry in self.stored.found]

    def _assemble(self, model: str, vectors: list[Vector], tokens: int) -> bytes:
        """The client's answer: vectors in input order, in the form it asked for."""
        wanted = self.head.encoding_format
        data = [
            EmbeddingItem("embedding", index, as_form(vector, wanted))
            for index, vector in enumerate(vectors)
        ]
        usage = EmbeddingUsage(tokens, tokens)
        return _encode(EmbeddingAnswer("list", data, model, usage))
