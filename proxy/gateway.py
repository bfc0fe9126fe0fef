"""The request pipeline and the gateway's life (start, policy swaps, close).

auth -> validate -> allow-list (the name the client sent) -> rules -> resolve model ->
cache -> key/model limits -> the exchange with upstreams (proxy/exchange.py: dispatch over
routes and fallbacks, relay, settle) -> account. The HTTP layer is a thin shell over
`Gateway.handle_chat`; `Gateway.chat` (proxy/inprocess.py) is the same pipeline with typed
results, and proxy/status.py what the gateway reports about itself.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import (
    Coroutine,
    Mapping,
)
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import msgspec

from proxy.accounting import RequestRecord
from proxy.cache.cache import Entry, ResponseCache
from proxy.cache.flow import CacheFlow, Lookup
from proxy.cache.replay import replay
from proxy.errors import (
    InvalidRequestError,
    ModelNotFoundError,
    PermissionDeniedError,
    ProxyError,
    RequestTooLargeError,
    UpstreamRejectedError,
)
from proxy.exchange import ChatResult, UpstreamExchange
from proxy.inprocess import InProcessChat
from proxy.limits.limiter import Admission, Limiter
from proxy.loader import LoadedConfig, load_dict, load_file
from proxy.observability.access_log import AccessLog
from proxy.observability.logging import Redactor
from proxy.observability.metrics import Metrics
from proxy.observability.tracing import Tracing
from proxy.planning import PlannedRequest
from proxy.planning import plans as make_plans
from proxy.policy import Caller, Policy, ResolvedModel, compile_policy
from proxy.relay import OpenStreams
from proxy.routing.dispatch import Dispatcher
from proxy.routing.health import HealthBoard, RouteHealth
from proxy.routing.rules import apply_rules, estimate_prompt_tokens
from proxy.routing.shared import SharedHealth
from proxy.status import GatewayStatus
from proxy.upstreams.pool import UpstreamPool
from proxy.wire import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequestHead,
    decode_chat_head,
)

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
_completion_decoder = msgspec.json.Decoder(ChatCompletion)
_chunk_decoder = msgspec.json.Decoder(ChatCompletionChunk)
_NO_HEADERS: Mapping[str, str] = {}
_SAFE = "/:@-._~+"  # what x-llm-proxy-route shows unescaped (model ids are client text)


@dataclass(slots=True)
class InFlight:
    """One request on its way through the pipeline."""

    record: RequestRecord
    lookup: Lookup = field(default_factory=lambda: Lookup(None))
    admission: Admission | None = None
    streaming: bool = False  # the relay owns the end from here


class Gateway(UpstreamExchange, GatewayStatus, InProcessChat):
    def __init__(self, loaded: LoadedConfig) -> None:
        self._policy = compile_policy(loaded)
        config = self._policy.config
        self.metrics = Metrics(config.metrics.enabled)
        self.redactor = Redactor(self._policy.secrets)
        self.access_log = AccessLog(config.logging, self.redactor)
        self.board = HealthBoard(config.circuit_breaker)
        self.board.watcher = self._route_changed
        for label in self._labels(self._policy):
            self.metrics.set_route_up(label, True)
        self._rng = random.Random()
        self.tracing = Tracing(config)
        self.dispatcher = Dispatcher(
            config.retry, self.board, self.metrics, self._rng, tracing=self.tracing
        )
        self.limiter = Limiter(config, self.metrics, Path(config.cache.path))
        self.shared: SharedHealth | None = None
        self.cache = ResponseCache(config.cache, self.metrics)
        self.cache_flow = CacheFlow(self.cache, config.cache)
        self._background: set[asyncio.Task[None]] = set()
        self.upstreams = UpstreamPool()
        self.open_streams = OpenStreams()
        self.started = False
        self.draining = False
        self.last_reload: dict[str, Any] | None = None

    @classmethod
    def from_file(cls, path: str | Path, env: Mapping[str, str] | None = None) -> Gateway:
        return cls(load_file(path, env))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Gateway:
        return cls(load_dict(data, env))

    @property
    def policy(self) -> Policy:
        return self._policy

    async def start(self) -> None:
        """Build one pooled client per configured upstream (needs the running loop)."""
        policy = self._policy
        await self.upstreams.update(policy.config.upstreams, policy.unconfigured)
        storage = policy.config.limits.storage
        if storage.startswith(("redis://", "rediss://")):
            self.shared = SharedHealth(storage, self.board)
            await self.shared.start(self._labels(policy))
            self.dispatcher.claim_trial = self.shared.claim_trial
        self.started = True

    @staticmethod
    def _labels(policy: Policy) -> set[str]:
        return {route.label for model in policy.models.values() for route in model.routes}

    async def apply(self, loaded: LoadedConfig) -> None:
        """Swap in a new policy: requests in flight finish on the one they started with;
        unchanged upstream clients and the health of surviving routes carry over."""
        policy = compile_policy(loaded)
        config = policy.config
        if self.started:
            await self.upstreams.update(config.upstreams, policy.unconfigured)
        labels = self._labels(policy)
        self.board.reconfigure(config.circuit_breaker, labels)
        for label in labels:
            self.metrics.set_route_up(label, self.board[label].state() != "open")
        claim = self.shared.claim_trial if self.shared is not None else None
        self.tracing = Tracing(config)
        self.dispatcher = Dispatcher(
            config.retry,
            self.board,
            self.metrics,
            self._rng,
            claim_trial=claim,
            tracing=self.tracing,
        )
        if self.shared is not None:
            self.shared.track(labels)
        if config.cache != self._policy.config.cache:
            old_cache, self.cache = self.cache, ResponseCache(config.cache, self.metrics)
            self.cache_flow = CacheFlow(self.cache, config.cache)
            self._spawn(old_cache.close())
        if config.limits == self._policy.config.limits:
            self.limiter.configure(config)
        else:
            old, self.limiter = self.limiter, Limiter(config, self.metrics, Path(config.cache.path))
            self._spawn(old.close())
        self.redactor.update(policy.secrets)
        self.access_log = AccessLog(config.logging, self.redactor)
        self._policy = policy

    def end_streams(self) -> int:
        """End every stream still open with an in-band error (the drain time is over)."""
        return self.open_streams.end_all()

    async def close(self) -> None:
        self.started = False
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.upstreams.close()
        await self.limiter.close()
        await self.cache.close()
        if self.shared is not None:
            await self.shared.close()
            self.shared = None

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Work that must finish even if the request that started it is cancelled."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- the pipeline ---------------------------------------------------------------------

    async def handle_chat(
        self,
        body: bytes,
        authorization: str | None,
        request_id: str,
        headers: Mapping[str, str] = _NO_HEADERS,
    ) -> ChatResult:
        request = InFlight(RequestRecord(request_id, time.perf_counter()))
        if self.access_log.log_bodies:
            request.record.body = body
        self.metrics.inflight.inc()
        try:
            return await self._answer(request, body, authorization, headers)
        except Exception as exc:
            self._failed(request, exc)
            raise
        finally:
            if not request.streaming:  # a stream settles when it ends (proxy/exchange.py)
                await self._settle(request)

    async def _answer(
        self, request: InFlight, body: bytes, authorization: str | None, headers: Mapping[str, str]
    ) -> ChatResult:
        record, policy = request.record, self._policy
        caller = policy.authenticate(authorization)
        record.caller = caller.name
        head = self._validate(policy, body)
        record.stream = bool(head.stream)
        resolved = self._resolve(policy, caller, head, headers)
        record.model = resolved.policy.name
        lookup = request.lookup = await self._look_up(policy, resolved, head, body, caller, headers)
        record.cache = lookup.result
        self.metrics.child(self.metrics.cache_requests, lookup.result).inc()
        if lookup.entry is not None:
            return await self._serve_hit(lookup.entry, head, caller, resolved, record)
        planned = PlannedRequest(policy, self.upstreams, self.dispatcher, record.request_id)
        plans = make_plans(planned, resolved, head, body)
        estimate = estimate_prompt_tokens(head)
        admission = await self.limiter.admit(caller, resolved.policy.name, estimate)
        request.admission = admission
        if head.stream:
            result = await self._stream(plans, head, record, admission, lookup)
            request.streaming = True
        else:
            result = await self._complete(plans, record, admission, lookup)
        result.headers["x-llm-proxy-cache"] = lookup.result
        return result

    def _failed(self, request: InFlight, exc: Exception) -> None:
        """Record the failure; an error the client gets carries the cache and limit headers."""
        if isinstance(exc, UpstreamRejectedError):  # the upstream's own words: may quote our key
            exc.message = self.redactor(exc.message)
        request.record.status = getattr(exc, "status", 500)
        request.record.error = getattr(exc, "message", type(exc).__name__)
        self.cache_flow.land(request.lookup, None)
        if isinstance(exc, ProxyError):
            exc.headers["x-llm-proxy-cache"] = request.lookup.result
            if request.admission is not None:
                exc.headers.update(request.admission.headers)

    async def _settle(self, request: InFlight) -> None:
        self.cache_flow.land(request.lookup, None)  # e.g. cancelled: followers go on alone
        admission = request.admission
        if admission is not None and not admission.finished:
            await self.limiter.release(admission)
        request.record.finish(self.metrics, self.access_log)
        self.metrics.inflight.dec()

    async def _look_up(
        self,
        policy: Policy,
        resolved: ResolvedModel,
        head: ChatRequestHead,
        body: bytes,
        caller: Caller,
        headers: Mapping[str, str],
    ) -> Lookup:
        model_cache = policy.config.models[resolved.policy.name].cache
        return await self.cache_flow.lookup(
            model_cache, head, body, caller.name, resolved.public, headers.get("cache-control")
        )

    async def _serve_hit(
        self,
        entry: Entry,
        head: ChatRequestHead,
        caller: Caller,
        resolved: ResolvedModel,
        record: RequestRecord,
    ) -> ChatResult:
        """A cached answer: request limits count it (unless configured otherwise); tokens and
        spend do not; its usage shows the original counts."""
        headers = {
            "x-llm-proxy-cache": "hit",
            "x-llm-proxy-route": entry.route,
            "x-llm-proxy-attempts": "0",
        }
        if self._policy.config.cache.count_hits_in_request_limits:
            admission = await self.limiter.admit(caller, resolved.policy.name, 0, cached=True)
            await self.limiter.finish(admission, None, None, resolved.policy.name, 0, 0)
            headers.update(admission.headers)
        record.route = entry.route
        if not head.stream:
            return ChatResult(headers, body=entry.body)
        wants_usage = bool(head.stream_options and head.stream_options.include_usage)
        chunks = replay(_decode(entry.body), wants_usage)
        return ChatResult(headers, whole_stream=chunks)

    def _validate(self, policy: Policy, body: bytes) -> ChatRequestHead:
        if len(body) > policy.max_body_bytes:
            limit = policy.max_body_bytes
            raise RequestTooLargeError(f"The request body is larger than {limit} bytes.")
        head = decode_chat_head(body)
        if len(head.messages) > policy.config.server.max_messages:
            limit = policy.config.server.max_messages
            raise InvalidRequestError(f"Too many messages (at most {limit}).", param="messages")
        return head

    def _resolve(
        self, policy: Policy, caller: Caller, head: ChatRequestHead, headers: Mapping[str, str]
    ) -> ResolvedModel:
        """The key's allow-list checks the name the client sent; then the first matching
        rule rewrites it once."""
        if not caller.allows(head.model):
            message = f"The key '{caller.name}' may not use the model `{head.model}`."
            raise PermissionDeniedError(message)
        public = (
            apply_rules(policy.rules, head, headers, caller.name) if policy.rules else head.model
        )
        resolved = policy.resolve(public)
        if resolved is None:
            raise ModelNotFoundError(
                f"The model `{head.model}` does not exist or you do not have access to it.",
                param="model",
            )
        return resolved

    def _route_changed(self, health: RouteHealth, event: str) -> None:
        if event in ("open", "close"):
            self.metrics.set_route_up(health.label, event == "close")
