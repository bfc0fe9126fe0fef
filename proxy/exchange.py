"""The exchange with the upstreams once a request is admitted: dispatch over its plans, then
the answer (JSON) or the relay (stream) in the client's format. What the end settles is
proxy/settle.py's."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from urllib.parse import quote

from proxy.errors import UpstreamError
from proxy.limits.limiter import Admission, Limiter
from proxy.observability.metrics import Metrics
from proxy.relay import OpenStreams, StreamContext
from proxy.routing.dispatch import Attempt, Plan
from proxy.routing.health import HealthBoard
from proxy.settle import InFlight, Settlement

_SAFE = "/:@-._~+"  # what x-llm-proxy-route shows unescaped (model ids are client text)


@dataclass(slots=True)
class Result:
    """What the client receives, in its format: a JSON body, a stream of event payloads,
    or a whole stream known at once (a cache hit)."""

    headers: dict[str, str]
    body: bytes | None = None
    stream: AsyncIterator[list[bytes]] | None = None
    whole_stream: list[bytes] | None = None


def route_header(target: str) -> str:
    """x-llm-proxy-route: `<upstream>/<model id>`, escaped (model ids may be client text)."""
    return quote(target, safe=_SAFE)


class UpstreamExchange:
    def __init__(
        self,
        metrics: Metrics,
        board: HealthBoard,
        open_streams: OpenStreams,
        settlement: Settlement,
    ) -> None:
        self.metrics = metrics
        self.board = board
        self.open_streams = open_streams
        self.settlement = settlement

    async def complete(self, flight: InFlight, plans: Iterator[Plan]) -> Result:
        request, record = flight.request, flight.record
        assert request is not None and flight.admission is not None

        async def call(attempt: Attempt) -> bytes:
            upstream_call = attempt.call
            if upstream_call.api == "embeddings":
                reply = await attempt.upstream.embed(upstream_call)
            else:
                reply = await attempt.upstream.complete(upstream_call)
            public, upstream = attempt.model.public, attempt.route.upstream
            return request.answer(reply, upstream_call, public, upstream, record)

        enter, leave = self._route_gates(flight.services.limiter, flight.admission)
        dispatcher = flight.services.dispatcher
        answer, attempt = await dispatcher.run(plans, call, record, enter, leave)
        flight.attempt, flight.answer = attempt, answer
        return Result(self._headers(flight, flight.admission), body=answer)

    async def stream(self, flight: InFlight, plans: Iterator[Plan]) -> Result:
        request, record, services = flight.request, flight.record, flight.services
        assert request is not None and flight.admission is not None
        settle = self.settlement.settle_stream

        async def call(attempt: Attempt) -> AsyncIterator[list[bytes]]:
            events = attempt.upstream.stream(attempt.call)
            try:
                first = await anext(events, None)
                if not first:
                    upstream = attempt.route.upstream
                    raise UpstreamError(f"The upstream '{upstream}' sent an empty stream.")
                context = StreamContext(
                    public_model=attempt.model.public,
                    upstream=attempt.route.upstream,
                    max_seconds=services.policy.config.server.max_stream_seconds,
                    record=record,
                    metrics=self.metrics,
                    open_streams=self.open_streams,
                    on_end=lambda _: settle(flight),
                    collected=[] if flight.lookup.decision or request.keeps_answer else None,
                )
                relay = request.relay(first, events, context, attempt.call)
                flight.stream = context
                return relay
            except BaseException:
                await events.aclose()  # type: ignore[attr-defined]
                raise

        enter, leave = self._route_gates(services.limiter, flight.admission)
        stream, attempt = await services.dispatcher.run(plans, call, record, enter, leave)
        flight.attempt = attempt
        self.board[attempt.route.label].inflight += 1  # in flight (least-busy) until it ends
        return Result(self._headers(flight, flight.admission), stream=stream)

    @staticmethod
    def _route_gates(
        limiter: Limiter, admission: Admission
    ) -> tuple[
        Callable[[Attempt], Awaitable[bool]] | None, Callable[[Attempt], Awaitable[None]] | None
    ]:
        """A route's (and its upstream's) limits admit each attempt; none when no route has
        any."""
        if not limiter.routes_limited:
            return None, None

        async def enter(attempt: Attempt) -> bool:
            return await limiter.admit_route(admission, attempt.route.ident, attempt.route.upstream)

        async def leave(attempt: Attempt) -> None:
            await limiter.release_route(admission, attempt.route.ident)

        return enter, leave

    @staticmethod
    def _headers(flight: InFlight, admission: Admission) -> dict[str, str]:
        record = flight.record
        return {
            "x-llm-proxy-route": route_header(record.target or ""),
            "x-llm-proxy-attempts": str(record.attempts),
            **admission.headers,
        }
