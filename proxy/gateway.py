"""The request pipeline and the gateway's life (start, policy swaps, close).

Every front door (proxy/formats/) takes the same way: auth -> decode -> allow-list (the name
the client sent) -> rules -> resolve model -> params -> cache -> key/model limits -> the
exchange with upstreams (proxy/exchange.py: dispatch over routes and fallbacks, the answer or
the relay) -> settle (proxy/settle.py: cache fill, charges, metrics, the access line). The
HTTP layer is a thin shell over `Gateway.serve`; the in-process API (proxy/inprocess.py) is
the same pipeline with typed results, and proxy/status.py what the gateway reports.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from proxy.accounting import RequestRecord
from proxy.cache.cache import ResponseCache
from proxy.cache.flow import CacheFlow
from proxy.errors import (
    ModelNotFoundError,
    PermissionDeniedError,
    ProxyError,
    RequestTooLargeError,
    UpstreamRejectedError,
)
from proxy.exchange import Result, UpstreamExchange, route_header
from proxy.formats.base import DecodeContext, FrontDoor, FrontRequest
from proxy.formats.chat import CHAT
from proxy.formats.embeddings.inprocess import EmbeddingInput, embeddings
from proxy.formats.embeddings.wire import EmbeddingList, EncodingFormat
from proxy.formats.messages.inprocess import MessageResult, StreamEvent, send_messages
from proxy.formats.responses import build_store, store_settings
from proxy.formats.responses.client import create_response
from proxy.formats.responses.wire import ResponseEvent, ResponseObject
from proxy.inprocess import InProcess
from proxy.keys import Caller, ClientKey
from proxy.limits.limiter import Limiter
from proxy.loader import LoadedConfig, load_dict, load_file
from proxy.observability.access_log import AccessLog
from proxy.observability.logging import Redactor
from proxy.observability.metrics import Metrics
from proxy.observability.tracing import Tracing
from proxy.planning import Planning, plans
from proxy.policy import Policy, ResolvedModel, compile_policy
from proxy.relay import OpenStreams
from proxy.routing.dispatch import Dispatcher
from proxy.routing.health import HealthBoard, RouteHealth
from proxy.routing.rules import apply_rules
from proxy.routing.shared import SharedHealth
from proxy.services import Services
from proxy.settle import InFlight, Settlement, spawner
from proxy.status import GatewayStatus
from proxy.upstreams.pool import UpstreamPool
from proxy.wire import ChatCompletion, ChatCompletionChunk, Model, ModelList

if TYPE_CHECKING:
    from proxy.admin.runtime import AdminRuntime

NO_HEADERS: Mapping[str, str] = {}
ReadBody = Callable[[], Awaitable[bytes]]


class Gateway:
    def __init__(self, loaded: LoadedConfig) -> None:
        policy = compile_policy(loaded)
        config = policy.config
        self.metrics = Metrics(config.metrics.enabled)
        self.redactor = Redactor(policy.secrets)
        self.board = HealthBoard(config.circuit_breaker)
        self.board.watcher = self._route_changed
        for label in self._labels(policy):
            self.metrics.set_route_up(label, True)
        self._rng = random.Random()
        self._background: set[asyncio.Task[None]] = set()
        self.spawn = spawner(self._background)
        self.upstreams = UpstreamPool()
        self.open_streams = OpenStreams()
        self.shared: SharedHealth | None = None
        tracing = Tracing(config)
        cache = ResponseCache(config.cache, self.metrics)
        self.services = Services(
            policy=policy,
            dispatcher=self._dispatcher(policy, tracing),
            limiter=Limiter(config, self.metrics, Path(config.cache.path)),
            cache=cache,
            cache_flow=CacheFlow(cache, config.cache),
            tracing=tracing,
            access_log=AccessLog(config.logging, self.redactor),
        )
        self.settlement = Settlement(self.metrics, self.board, self.spawn)
        self.exchange = UpstreamExchange(
            self.metrics, self.board, self.open_streams, self.settlement
        )
        self.status = GatewayStatus(self)
        self.inprocess = InProcess(self)
        self.door_services: dict[str, Any] = {}  # what a front door needs to decode (by api)
        self.door_services["responses"] = build_store(config)
        # keys made at run time (the operators' store keeps it current), by sha256 digest
        self.runtime_keys: dict[bytes, ClientKey] = {}
        self.admin: AdminRuntime | None = None
        if config.admin.enabled:  # imported only then: the store's driver loads with it
            from proxy.admin.runtime import AdminRuntime

            self.admin = AdminRuntime(self, config.admin)
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
        return self.services.policy

    @property
    def limiter(self) -> Limiter:
        return self.services.limiter

    @property
    def cache(self) -> ResponseCache:
        return self.services.cache

    @property
    def tracing(self) -> Tracing:
        return self.services.tracing

    # -- life ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Build one pooled client per configured upstream (needs the running loop)."""
        policy = self.policy
        await self.upstreams.update(policy.config.upstreams, policy.unconfigured)
        storage = policy.config.limits.storage
        if storage.startswith(("redis://", "rediss://")):
            self.shared = SharedHealth(storage, self.board)
            await self.shared.start(self._labels(policy))
            self.services.dispatcher.claim_trial = self.shared.claim_trial
        if self.admin is not None:
            await self.admin.start()
        self.started = True

    @staticmethod
    def _labels(policy: Policy) -> set[str]:
        return {route.label for model in policy.models.values() for route in model.routes}

    def _dispatcher(self, policy: Policy, tracing: Tracing) -> Dispatcher:
        shared = getattr(self, "shared", None)  # None before start()
        claim = shared.claim_trial if shared is not None else None
        return Dispatcher(
            policy.config.retry,
            self.board,
            self.metrics,
            self._rng,
            claim_trial=claim,
            tracing=tracing,
        )

    async def apply(self, loaded: LoadedConfig) -> None:
        """Swap in a new policy: requests in flight finish on the one they started with;
        unchanged upstream clients and the health of surviving routes carry over."""
        policy = compile_policy(loaded)
        config, old = policy.config, self.services
        if self.started:
            await self.upstreams.update(config.upstreams, policy.unconfigured)
        labels = self._labels(policy)
        self.board.reconfigure(config.circuit_breaker, labels)
        for label in labels:
            self.metrics.set_route_up(label, self.board[label].state() != "open")
        if self.shared is not None:
            self.shared.track(labels)
        tracing = Tracing(config)
        cache, cache_flow = old.cache, old.cache_flow
        if config.cache != old.policy.config.cache:
            cache = ResponseCache(config.cache, self.metrics)
            cache_flow = CacheFlow(cache, config.cache)
            self.spawn(old.cache.close())
        limiter = old.limiter
        if config.limits == old.policy.config.limits:
            limiter.configure(config)
        else:
            limiter = Limiter(config, self.metrics, Path(config.cache.path))
            self.spawn(old.limiter.close())
        if store_settings(config) != store_settings(old.policy.config):
            self.spawn(self.door_services["responses"].close())
            self.door_services["responses"] = build_store(config)
        self.redactor.update(policy.secrets)
        self.services = Services(
            policy=policy,
            dispatcher=self._dispatcher(policy, tracing),
            limiter=limiter,
            cache=cache,
            cache_flow=cache_flow,
            tracing=tracing,
            access_log=AccessLog(config.logging, self.redactor),
        )
        if self.admin is not None:
            self.admin.policy_applied(config.admin)

    def end_streams(self) -> int:
        """End every stream still open with an in-band error (the drain time is over)."""
        return self.open_streams.end_all()

    async def close(self) -> None:
        self.started = False
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        self.services.access_log.flush()
        if self.admin is not None:  # after the background settlements: the ledger has them all
            await self.admin.close()
        await self.upstreams.close()
        await self.services.limiter.close()
        await self.services.cache.close()
        await self.door_services["responses"].close()
        if self.shared is not None:
            await self.shared.close()
            self.shared = None

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- the pipeline ---------------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> Caller:
        return self.policy.authenticate(authorization, self.runtime_keys)

    async def serve(
        self,
        door: FrontDoor,
        authorization: str | None,
        request_id: str,
        headers: Mapping[str, str],
        read_body: ReadBody,
    ) -> Result:
        """One request through the pipeline. The key is checked from the headers before the
        body is read, so an unauthenticated client never makes the proxy hold a body."""
        flight = InFlight(RequestRecord(request_id, time.perf_counter(), door.api), self.services)
        self.metrics.in_flight.inc()
        try:
            return await self._answer(door, flight, authorization, headers, read_body)
        except Exception as exc:
            self._failed(flight, exc)
            raise
        finally:
            if flight.stream is None:  # a stream settles when it ends (proxy/relay.py)
                await self.settlement.settle(flight)

    async def handle(
        self,
        door: FrontDoor,
        body: bytes,
        authorization: str | None,
        request_id: str,
        headers: Mapping[str, str] = NO_HEADERS,
    ) -> Result:
        """`serve` with the body at hand."""

        async def read() -> bytes:
            return body

        return await self.serve(door, authorization, request_id, headers, read)

    async def handle_chat(
        self,
        body: bytes,
        authorization: str | None,
        request_id: str,
        headers: Mapping[str, str] = NO_HEADERS,
    ) -> Result:
        return await self.handle(CHAT, body, authorization, request_id, headers)

    async def _answer(
        self,
        door: FrontDoor,
        flight: InFlight,
        authorization: str | None,
        headers: Mapping[str, str],
        read_body: ReadBody,
    ) -> Result:
        record, services = flight.record, flight.services
        policy = services.policy
        caller = policy.authenticate(authorization, self.runtime_keys)
        record.caller = caller.name
        body = await read_body()
        if services.access_log.log_bodies:
            record.body = body
        if len(body) > policy.max_body_bytes:
            limit = policy.max_body_bytes
            raise RequestTooLargeError(f"The request body is larger than {limit} bytes.")
        context = DecodeContext(policy, caller, headers, self.door_services.get(door.api))
        request = flight.request = await door.decode(body, context)
        record.stream = request.stream
        resolved = self._resolve(policy, caller, request, headers)
        record.model = resolved.policy.name
        if resolved.policy.params:
            request.apply_params(resolved.policy.params)
        model_cache = policy.config.models[resolved.policy.name].cache
        flight.lookup = await request.look_up(
            services.cache_flow, model_cache, caller.name, resolved.public,
            headers.get("cache-control"),
        )  # fmt: skip
        record.cache = flight.lookup.result
        self.metrics.tally(self.metrics.cache_requests, record.cache).inc()
        if flight.lookup.entry is not None:
            return await self._serve_hit(flight, caller, resolved)
        planning = Planning(policy, self.upstreams, services.dispatcher, record.request_id)
        planned = plans(planning, resolved, request)
        limiter = services.limiter
        flight.admission = await limiter.admit(caller, resolved.policy.name, request.estimate)
        if request.stream:
            result = await self.exchange.stream(flight, planned)
        else:
            result = await self.exchange.complete(flight, planned)
        result.headers["x-llm-proxy-cache"] = record.cache
        return result

    def _failed(self, flight: InFlight, exc: Exception) -> None:
        """Record the failure; an error the client gets carries the cache, attempt, route and
        limit headers."""
        record = flight.record
        if isinstance(exc, UpstreamRejectedError):  # the upstream's own words: may quote our key
            redact = self.redactor
            exc.message = redact(exc.message)
            exc.param = redact(exc.param) if exc.param is not None else None
            exc.code = redact(exc.code) if exc.code is not None else None
        record.status = getattr(exc, "status", 500)
        record.error = getattr(exc, "message", type(exc).__name__)
        if isinstance(exc, ProxyError):
            exc.headers["x-llm-proxy-cache"] = flight.lookup.result
            exc.headers["x-llm-proxy-attempts"] = str(record.attempts)
            if record.target is not None:
                exc.headers["x-llm-proxy-route"] = route_header(record.target)
            if flight.admission is not None:
                exc.headers.update(flight.admission.headers)

    async def _serve_hit(self, flight: InFlight, caller: Caller, resolved: ResolvedModel) -> Result:
        """A cached answer: request limits count it (unless configured otherwise); tokens and
        spend do not; its usage shows the original counts."""
        entry, record, request = flight.lookup.entry, flight.record, flight.request
        assert entry is not None and request is not None
        record.route = entry.route
        record.target = entry.target or entry.route
        headers = {
            "x-llm-proxy-cache": "hit",
            "x-llm-proxy-route": route_header(record.target),
            "x-llm-proxy-attempts": "0",
        }
        services = flight.services
        if services.policy.config.cache.count_hits_in_request_limits:
            limiter = services.limiter
            admission = await limiter.admit(caller, resolved.policy.name, 0, cached=True)
            await limiter.finish(admission, None, None, resolved.policy.name, 0, 0)
            headers.update(admission.headers)
        answer = flight.answer = request.from_cache(entry.body)
        if not request.stream:
            return Result(headers, body=answer)
        return Result(headers, whole_stream=request.replay(answer))

    def resolve(
        self, caller: Caller, request: FrontRequest, headers: Mapping[str, str]
    ) -> ResolvedModel:
        """The model a request is served as, as the pipeline decides it (allow-list, rules,
        resolution), for what answers without an upstream's generation (count_tokens)."""
        return self._resolve(self.policy, caller, request, headers)

    def _resolve(
        self,
        policy: Policy,
        caller: Caller,
        request: FrontRequest,
        headers: Mapping[str, str],
    ) -> ResolvedModel:
        """The key's allow-list checks the name the client sent; then the first matching
        rule rewrites it once."""
        if not caller.allows(request.model):
            message = f"The key '{caller.name}' may not use the model `{request.model}`."
            raise PermissionDeniedError(message)
        public = (
            apply_rules(policy.rules, request, headers, caller.name)
            if policy.rules
            else request.model
        )
        resolved = policy.resolve(public)
        if resolved is None:
            raise ModelNotFoundError(
                f"The model `{request.model}` does not exist or you do not have access to it.",
                param="model",
            )
        return resolved

    def _route_changed(self, health: RouteHealth, event: str) -> None:
        if event in ("open", "close"):
            self.metrics.set_route_up(health.label, event == "close")

    # -- what the gateway tells about itself, and the in-process API -------------------------

    async def key_usage(self, authorization: str | None) -> dict[str, Any]:
        return await self.status.key_usage(authorization)

    def list_models(self, authorization: str | None) -> ModelList:
        return self.status.list_models(authorization)

    def get_model(self, authorization: str | None, model_id: str) -> Model:
        return self.status.get_model(authorization, model_id)

    @property
    def ready(self) -> bool:
        return self.started and not self.draining

    async def health(self) -> dict[str, Any]:
        report = await self.status.health()
        if self.admin is not None:
            report["storage"]["admin"] = self.admin.health()
        return report

    def stats(self) -> dict[str, list[dict[str, Any]]]:
        return self.metrics.snapshot()

    async def chat(
        self,
        model: str,
        messages: str | list[dict[str, Any]],
        *,
        stream: bool = False,
        api_key: str | None = None,
        request_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        **params: Any,
    ) -> ChatCompletion | AsyncIterator[ChatCompletionChunk]:
        """Chat without HTTP. `messages` may be a string (one user message)."""
        return await self.inprocess.chat(
            model,
            messages,
            stream=stream,
            api_key=api_key,
            request_id=request_id,
            headers=headers,
            **params,
        )

    async def embeddings(
        self,
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
        """Embeddings without HTTP: vectors as lists of floats unless base64 is asked for."""
        return await embeddings(
            self.inprocess,
            model,
            input,
            encoding_format=encoding_format,
            dimensions=dimensions,
            api_key=api_key,
            request_id=request_id,
            headers=headers,
            **params,
        )

    async def messages(
        self,
        model: str,
        messages: str | list[dict[str, Any]],
        *,
        max_tokens: int,
        stream: bool = False,
        api_key: str | None = None,
        request_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        **params: Any,
    ) -> MessageResult | AsyncIterator[StreamEvent]:
        """Anthropic's Messages API without HTTP. `messages` may be a string (one user turn)."""
        return await send_messages(
            self.inprocess,
            model,
            messages,
            max_tokens,
            stream=stream,
            api_key=api_key,
            request_id=request_id,
            headers=headers,
            **params,
        )

    async def responses(
        self,
        model: str,
        input: str | list[dict[str, Any]],
        *,
        stream: bool = False,
        api_key: str | None = None,
        request_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        **params: Any,
    ) -> ResponseObject | AsyncIterator[ResponseEvent]:
        """The Responses API without HTTP. `input` may be a string (one user message)."""
        return await create_response(
            self.inprocess,
            model,
            input,
            stream=stream,
            api_key=api_key,
            request_id=request_id,
            headers=headers,
            **params,
        )
