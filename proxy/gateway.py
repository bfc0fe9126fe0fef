"""The request pipeline, and the in-process API for programs that embed the proxy.

auth -> validate -> allow-list -> resolve model -> order routes -> attempt (fail over
before the first byte) -> relay -> account. The HTTP layer is a thin shell over
`Gateway.handle_chat`; `Gateway.chat` is the same pipeline with typed results.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from random import getrandbits as _random_bits
from types import TracebackType
from typing import Any

import msgspec

from proxy.accounting import RequestRecord
from proxy.errors import (
    InvalidRequestError,
    ModelNotFoundError,
    PermissionDeniedError,
    ProxyError,
    RateLimitError,
    RequestTooLargeError,
    UpstreamError,
    UpstreamNotConfiguredError,
    UpstreamRejectedError,
)
from proxy.loader import LoadedConfig, load_dict, load_file
from proxy.observability.access_log import AccessLog
from proxy.observability.logging import Redactor
from proxy.observability.metrics import Metrics
from proxy.policy import Caller, Policy, ResolvedModel, Route, compile_policy
from proxy.relay import (
    OpenStreams,
    StreamContext,
    count_usage,
    open_relay,
    rewrite_completion,
)
from proxy.routing.strategies import order_routes
from proxy.upstreams.base import Upstream, UpstreamCall
from proxy.upstreams.registry import build_upstream
from proxy.wire import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequestHead,
    Model,
    ModelList,
    decode_chat_head,
)

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
_completion_decoder = msgspec.json.Decoder(ChatCompletion)
_chunk_decoder = msgspec.json.Decoder(ChatCompletionChunk)


@dataclass(slots=True)
class ChatResult:
    headers: dict[str, str]
    body: bytes | None = None  # a chat.completion
    stream: AsyncIterator[list[bytes]] | None = None  # chat.completion.chunk JSON, batched


@dataclass(slots=True)
class _Attempt:
    route: Route
    upstream: Upstream
    call: UpstreamCall


@dataclass
class _Failures:
    errors: list[ProxyError] = field(default_factory=list)

    def final(self) -> ProxyError:
        """The most meaningful error once every route has failed."""
        if self.errors and all(isinstance(e, RateLimitError) for e in self.errors):
            waits = [e.retry_after for e in self.errors if e.retry_after is not None]
            return RateLimitError(
                "Every upstream of this model is rate limited; try again later.",
                retry_after=min(waits) if waits else None,
            )
        non_rate = [e for e in self.errors if not isinstance(e, RateLimitError)]
        return non_rate[-1] if non_rate else UpstreamError("No upstream could serve the request.")


def new_request_id() -> str:
    return f"req_{_random_bits(128):032x}"  # unique, not secret: no need for os.urandom


class Gateway:
    def __init__(self, loaded: LoadedConfig) -> None:
        self._policy = compile_policy(loaded)
        self.metrics = Metrics()
        self.redactor = Redactor(self._policy.secrets)
        self.access_log = AccessLog(self._policy.config.logging, self.redactor)
        self._upstreams: dict[str, Upstream] = {}
        self._rng = random.Random()
        self.open_streams = OpenStreams()
        self.started = False
        self.draining = False

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
        for name, config in policy.config.upstreams.items():
            if name not in policy.unconfigured:
                upstream = build_upstream(name, config)
                await upstream.start()
                self._upstreams[name] = upstream
        self.started = True

    def end_streams(self) -> int:
        """End every stream still open with an in-band error (the drain time is over)."""
        return self.open_streams.end_all()

    async def close(self) -> None:
        self.started = False
        for upstream in self._upstreams.values():
            await upstream.close()
        self._upstreams.clear()

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- the pipeline ---------------------------------------------------------------------

    async def handle_chat(
        self, body: bytes, authorization: str | None, request_id: str
    ) -> ChatResult:
        record = RequestRecord(request_id, time.perf_counter())
        self.metrics.inflight.inc()
        streaming = False
        try:
            policy = self._policy
            caller = policy.authenticate(authorization)
            record.caller = caller.name
            head = self._validate(policy, body)
            record.stream = bool(head.stream)
            resolved = self._resolve(policy, caller, head.model)
            record.model = resolved.policy.name
            attempts = self._attempts(policy, resolved, head, body, request_id)
            if head.stream:
                result = await self._open_stream(attempts, resolved, head, record)
                streaming = True
                return result
            return await self._complete(attempts, resolved, record)
        except ProxyError as exc:
            record.status = exc.status
            record.error = exc.message
            raise
        finally:
            if not streaming:
                record.finish(self.metrics, self.access_log)
                self.metrics.inflight.dec()

    def _validate(self, policy: Policy, body: bytes) -> ChatRequestHead:
        if len(body) > policy.max_body_bytes:
            limit = policy.max_body_bytes
            raise RequestTooLargeError(f"The request body is larger than {limit} bytes.")
        head = decode_chat_head(body)
        if len(head.messages) > policy.config.server.max_messages:
            limit = policy.config.server.max_messages
            raise InvalidRequestError(f"Too many messages (at most {limit}).", param="messages")
        return head

    def _resolve(self, policy: Policy, caller: Caller, model: str) -> ResolvedModel:
        if not caller.allows(model):
            raise PermissionDeniedError(f"The key '{caller.name}' may not use the model `{model}`.")
        resolved = policy.resolve(model)
        if resolved is None:
            raise ModelNotFoundError(
                f"The model `{model}` does not exist or you do not have access to it.",
                param="model",
            )
        return resolved

    def _attempts(
        self,
        policy: Policy,
        resolved: ResolvedModel,
        head: ChatRequestHead,
        body: bytes,
        request_id: str,
    ) -> list[_Attempt]:
        attempts = []
        missing: dict[str, str] = {}
        for route in order_routes(resolved.policy, self._rng):
            upstream = self._upstreams.get(route.upstream)
            if upstream is None:
                if route.upstream in policy.unconfigured:
                    missing[route.upstream] = policy.unconfigured[route.upstream]
                continue
            model = resolved.upstream_model(route)
            upstream_body = _upstream_body(body, head, model, route.drop_params)
            call = UpstreamCall(upstream_body, model, route.timeouts, request_id, route.drop_params)
            attempts.append(_Attempt(route, upstream, call))
        if not attempts:
            if missing:
                names = ", ".join(f"{var} (upstream '{up}')" for up, var in missing.items())
                raise UpstreamNotConfiguredError(
                    f"The model `{resolved.public}` cannot be served: its upstream is not "
                    f"configured. Set the environment variable {names}."
                )
            raise UpstreamError(f"The model `{resolved.public}` has no usable route.")
        return attempts

    async def _complete(
        self, attempts: list[_Attempt], resolved: ResolvedModel, record: RequestRecord
    ) -> ChatResult:
        failures = _Failures()
        for attempt in attempts:
            self._begin(record, attempt)
            started = time.perf_counter()
            try:
                reply = await attempt.upstream.complete(attempt.call)
                record.upstream_seconds += time.perf_counter() - started
                body, usage = rewrite_completion(reply, resolved.public, attempt.route.upstream)
            except ProxyError as exc:
                record.upstream_seconds += time.perf_counter() - started
                self._failed(record, failures, exc)
                continue
            count_usage(record, usage)
            return ChatResult(self._headers(record, attempt, resolved), body=body)
        raise failures.final()

    async def _open_stream(
        self,
        attempts: list[_Attempt],
        resolved: ResolvedModel,
        head: ChatRequestHead,
        record: RequestRecord,
    ) -> ChatResult:
        failures = _Failures()
        for attempt in attempts:
            self._begin(record, attempt)
            context = self._stream_context(attempt, resolved, head, record)
            events = attempt.upstream.stream(attempt.call)
            started = time.perf_counter()
            try:
                first = await anext(events, None)
                if not first:
                    upstream = attempt.route.upstream
                    raise UpstreamError(f"The upstream '{upstream}' sent an empty stream.")
                stream = open_relay(first, events, context)
            except ProxyError as exc:
                await events.aclose()  # type: ignore[attr-defined]
                self._failed(record, failures, exc)
                continue
            finally:
                record.upstream_seconds += time.perf_counter() - started
            return ChatResult(self._headers(record, attempt, resolved), stream=stream)
        raise failures.final()

    def _stream_context(
        self,
        attempt: _Attempt,
        resolved: ResolvedModel,
        head: ChatRequestHead,
        record: RequestRecord,
    ) -> StreamContext:
        return StreamContext(
            public_model=resolved.public,
            upstream=attempt.route.upstream,
            client_wants_usage=bool(head.stream_options and head.stream_options.include_usage),
            choices=head.n or 1,
            max_seconds=self._policy.config.server.max_stream_seconds,
            record=record,
            metrics=self.metrics,
            access_log=self.access_log,
            open_streams=self.open_streams,
        )

    def _begin(self, record: RequestRecord, attempt: _Attempt) -> None:
        record.attempts += 1
        record.route = attempt.route.label

    def _failed(self, record: RequestRecord, failures: _Failures, exc: ProxyError) -> None:
        self.metrics.child(self.metrics.upstream_errors, record.route, exc.code or exc.type).inc()
        if isinstance(exc, UpstreamRejectedError):
            raise exc  # the client's request is at fault: no other route will like it more
        failures.errors.append(exc)

    def _headers(
        self, record: RequestRecord, attempt: _Attempt, resolved: ResolvedModel
    ) -> dict[str, str]:
        upstream_model = resolved.upstream_model(attempt.route)
        return {
            "x-llm-proxy-route": f"{attempt.route.upstream}/{upstream_model}",
            "x-llm-proxy-attempts": str(record.attempts),
        }

    # -- models, health, stats ------------------------------------------------------------

    def list_models(self, authorization: str | None) -> ModelList:
        policy = self._policy
        caller = policy.authenticate(authorization)
        created = int(policy.loaded_at)
        names = [name for name in policy.public_models if caller.allows(name)]
        return ModelList([Model(id=name, created=created) for name in names])

    def get_model(self, authorization: str | None, model_id: str) -> Model:
        policy = self._policy
        caller = policy.authenticate(authorization)
        resolved = self._resolve(policy, caller, model_id)
        return Model(id=resolved.public, created=int(policy.loaded_at))

    @property
    def ready(self) -> bool:
        return self.started and not self.draining

    def health(self) -> dict[str, Any]:
        policy = self._policy
        upstreams: dict[str, dict[str, Any]] = {}
        for name, config in policy.config.upstreams.items():
            upstreams[name] = {"type": config.__struct_config__.tag, "configured": True}
            if name in policy.unconfigured:
                upstreams[name].update(configured=False, missing_env=policy.unconfigured[name])
        routes = {
            route.label: {"upstream": route.upstream, "state": "closed"}
            for model in policy.models.values()
            for route in model.routes
        }
        return {
            "status": "draining" if self.draining else ("ok" if self.started else "starting"),
            "ready": self.ready,
            "policy": {
                "version": policy.version,
                "source": policy.source,
                "loaded_at": policy.loaded_at,
            },
            "upstreams": upstreams,
            "routes": routes,
        }

    def stats(self) -> dict[str, list[dict[str, Any]]]:
        return self.metrics.snapshot()

    # -- in-process API -------------------------------------------------------------------

    async def chat(
        self,
        model: str,
        messages: str | list[dict[str, Any]],
        *,
        stream: bool = False,
        api_key: str | None = None,
        request_id: str | None = None,
        **params: Any,
    ) -> ChatCompletion | AsyncIterator[ChatCompletionChunk]:
        """Chat without HTTP. `messages` may be a string (one user message)."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        request: dict[str, Any] = {"model": model, "messages": messages, **params}
        if stream:
            request["stream"] = True
        authorization = f"Bearer {api_key}" if api_key else None
        result = await self.handle_chat(
            _encode(request), authorization, request_id or new_request_id()
        )
        if result.stream is not None:
            return _typed_chunks(result.stream)
        assert result.body is not None
        return _completion_decoder.decode(result.body)


async def _typed_chunks(
    batches: AsyncIterator[list[bytes]],
) -> AsyncIterator[ChatCompletionChunk]:
    async for batch in batches:
        for payload in batch:
            yield _chunk_decoder.decode(payload)


def _upstream_body(
    body: bytes, head: ChatRequestHead, upstream_model: str, drop: frozenset[str] = frozenset()
) -> bytes:
    """The client's body with only `model` rewritten (usage asked for on streams, and the
    fields the route is configured to drop removed)."""
    wants_usage = bool(head.stream_options and head.stream_options.include_usage)
    add_usage = bool(head.stream) and not wants_usage
    if head.model == upstream_model and not add_usage and not drop:
        return body
    data = _decode(body)
    data["model"] = upstream_model
    for name in drop:
        data.pop(name, None)
    if add_usage:
        options = data.get("stream_options") or {}
        data["stream_options"] = {**options, "include_usage": True}
    return _encode(data)
