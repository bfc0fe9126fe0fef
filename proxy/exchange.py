"""The exchange with the upstream once a request is admitted: dispatch over its plans, the
answer (JSON) or the relay (stream), then what the end of it settles (usage and spend
charged, the cache filled, the trace span ended, the route's in-flight count). A mixin of
`Gateway`, which owns the parts it uses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from proxy.accounting import RequestRecord
from proxy.cache.flow import CacheFlow, Lookup, usage_of
from proxy.errors import UpstreamError
from proxy.limits.limiter import Admission, Limiter
from proxy.observability.access_log import AccessLog
from proxy.observability.metrics import Metrics
from proxy.observability.tracing import Tracing
from proxy.policy import Policy
from proxy.relay import OpenStreams, StreamContext, count_usage, open_relay, rewrite_completion
from proxy.routing.dispatch import Attempt, Dispatcher, Plan
from proxy.routing.health import HealthBoard
from proxy.wire import ChatRequestHead

_SAFE = "/:@-._~+"  # what x-llm-proxy-route shows unescaped (model ids are client text)


@dataclass(slots=True)
class ChatResult:
    headers: dict[str, str]
    body: bytes | None = None  # a chat.completion
    stream: AsyncIterator[list[bytes]] | None = None  # chat.completion.chunk JSON, batched
    whole_stream: list[bytes] | None = None  # a stream known whole at once (a cache hit)


class UpstreamExchange:
    _policy: Policy
    board: HealthBoard
    dispatcher: Dispatcher
    limiter: Limiter
    cache_flow: CacheFlow
    metrics: Metrics
    access_log: AccessLog
    open_streams: OpenStreams
    _spawn: Callable[[Coroutine[Any, Any, None]], None]

    async def _complete(
        self, plans: Iterator[Plan], record: RequestRecord, admission: Admission, lookup: Lookup
    ) -> ChatResult:
        async def call(attempt: Attempt) -> tuple[bytes, Any]:
            reply = await attempt.upstream.complete(attempt.call)
            public, upstream = attempt.model.public, attempt.route.upstream
            return rewrite_completion(reply, public, upstream, record)

        enter, leave = self._route_gates(admission)
        (body, usage), attempt = await self.dispatcher.run(plans, call, record, enter, leave)
        count_usage(record, usage)
        Tracing.finish(attempt.span, record)
        self.cache_flow.store_completion(lookup, body, attempt.route.label)
        prompt = record.prompt_tokens if usage else admission.estimate
        await self.limiter.finish(
            admission,
            attempt.route.label,
            attempt.call.model,
            attempt.model.policy.name,
            prompt,
            record.completion_tokens,
        )
        return ChatResult(self._headers(record, attempt, admission), body=body)

    def _route_gates(
        self, admission: Admission
    ) -> tuple[Callable[[Attempt], Awaitable[bool]], Callable[[Attempt], Awaitable[None]]]:
        limiter = self.limiter

        async def enter(attempt: Attempt) -> bool:
            return await limiter.admit_route(admission, attempt.route.label, attempt.route.upstream)

        async def leave(attempt: Attempt) -> None:
            await limiter.release_route(admission, attempt.route.label)

        return enter, leave

    async def _stream(
        self,
        plans: Iterator[Plan],
        head: ChatRequestHead,
        record: RequestRecord,
        admission: Admission,
        lookup: Lookup,
    ) -> ChatResult:
        async def call(attempt: Attempt) -> AsyncIterator[list[bytes]]:
            events = attempt.upstream.stream(attempt.call)
            try:
                first = await anext(events, None)
                if not first:
                    upstream = attempt.route.upstream
                    raise UpstreamError(f"The upstream '{upstream}' sent an empty stream.")
                context = self._stream_context(attempt, head, record, admission, lookup)
                return open_relay(first, events, context)
            except BaseException:
                await events.aclose()  # type: ignore[attr-defined]
                raise

        enter, leave = self._route_gates(admission)
        stream, attempt = await self.dispatcher.run(plans, call, record, enter, leave)
        return ChatResult(self._headers(record, attempt, admission), stream=stream)

    def _stream_context(
        self,
        attempt: Attempt,
        head: ChatRequestHead,
        record: RequestRecord,
        admission: Admission,
        lookup: Lookup,
    ) -> StreamContext:
        health = self.board[attempt.route.label]
        health.inflight += 1  # a stream stays in flight (least-busy) until it ends
        label = attempt.route.label

        def completed(chunks: list[bytes]) -> None:
            self.cache_flow.store_stream(lookup, chunks, label, usage_of(record))

        def ended() -> None:
            health.stream_ended()
            if record.error:
                Tracing.fail(attempt.span, Exception(record.error))
            else:
                Tracing.finish(attempt.span, record)
            self.cache_flow.land(lookup, None)  # no-op when the answer was stored
            prompt, completion = record.prompt_tokens, record.completion_tokens
            if not (prompt or completion):  # cut before the usage chunk: estimate it
                prompt, completion = admission.estimate, record.relayed_bytes // 4
            self._spawn(
                self.limiter.finish(
                    admission,
                    attempt.route.label,
                    attempt.call.model,
                    attempt.model.policy.name,
                    prompt,
                    completion,
                )
            )

        return StreamContext(
            public_model=attempt.model.public,
            upstream=attempt.route.upstream,
            client_wants_usage=bool(head.stream_options and head.stream_options.include_usage),
            choices=head.n or 1,
            max_seconds=self._policy.config.server.max_stream_seconds,
            record=record,
            metrics=self.metrics,
            access_log=self.access_log,
            open_streams=self.open_streams,
            on_end=ended,
            on_complete=completed if lookup.decision is not None else None,
            collected=[] if lookup.decision is not None else None,
        )

    def _headers(
        self, record: RequestRecord, attempt: Attempt, admission: Admission
    ) -> dict[str, str]:
        return {
            "x-llm-proxy-route": quote(
                f"{attempt.route.upstream}/{attempt.call.model}", safe=_SAFE
            ),
            "x-llm-proxy-attempts": str(record.attempts),
            **admission.headers,
        }
