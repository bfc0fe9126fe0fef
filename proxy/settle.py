"""A request in flight, and the one place where its end is settled.

Whatever way a request ends (an answer, an error, a stream that finished, failed or lost its
client), `Settlement` does the same things once: the cache is filled or its followers let go,
the route's stream slot and trace span are closed, usage and spend are charged (or the
request's holds released), the front door keeps what it keeps (a stored response), and the
request becomes metrics and one access line.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from proxy.accounting import RequestRecord
from proxy.cache.flow import Lookup
from proxy.observability.metrics import Metrics
from proxy.observability.tracing import Tracing
from proxy.routing.health import HealthBoard

if TYPE_CHECKING:
    from proxy.formats.base import FrontRequest
    from proxy.limits.limiter import Admission
    from proxy.relay import StreamContext
    from proxy.routing.dispatch import Attempt
    from proxy.services import Services


BYPASS = Lookup(None)  # never changed: a bypass has no flight to lead or land


@dataclass(slots=True)
class InFlight:
    """One request on its way through the pipeline."""

    record: RequestRecord
    services: Services  # the policy and its parts, as they were when the request began
    request: FrontRequest | None = None
    lookup: Lookup = field(default_factory=lambda: BYPASS)  # the request's own once asked
    admission: Admission | None = None
    attempt: Attempt | None = None  # the attempt that answered
    answer: bytes | None = None  # the whole answer in the client's format
    stream: StreamContext | None = None  # a stream being relayed settles when it ends
    settled: bool = False


Listener = Callable[[RequestRecord], None]


class Settlement:
    def __init__(
        self,
        metrics: Metrics,
        board: HealthBoard,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self.metrics = metrics
        self.board = board
        self.spawn = spawn  # work that must finish even if the request's task is cancelled
        # told of every request once it is fully settled, spend included (e.g. the usage
        # ledger); a listener must not block: it queues what it needs
        self.listeners: list[Listener] = []

    async def settle(self, flight: InFlight) -> None:
        """The end of a JSON answer or of a request that failed before streaming."""
        if flight.settled:
            return
        flight.settled = True
        self._close_attempt(flight)
        self._keep_in_cache(flight)
        try:
            if self._needs_storage(flight):
                await self._charge(flight)
            elif flight.admission is not None:
                flight.admission.finished = True  # nothing to charge or release
        finally:
            self._account(flight)
            self._tell(flight)

    def settle_stream(self, flight: InFlight) -> None:
        """The end of a relayed stream, from the relay itself: what storage needs happens
        in the background (the relay's task may be being cancelled)."""
        if flight.settled:
            return
        flight.settled = True
        context = flight.stream
        if flight.attempt is not None:
            self.board[flight.attempt.route.label].stream_ended()
        if context is not None and context.completed and flight.request is not None:
            collected = context.collected
            if collected is not None:
                flight.answer = flight.request.whole(collected, flight.record)
        self._close_attempt(flight)
        self._keep_in_cache(flight)
        self._account(flight)
        if self._needs_storage(flight):
            self.spawn(self._charge_and_tell(flight))
        else:  # the common end: nothing to charge, nothing to keep; no task for it
            if flight.admission is not None:
                flight.admission.finished = True
            self._tell(flight)

    def _close_attempt(self, flight: InFlight) -> None:
        attempt = flight.attempt
        if attempt is None or attempt.span is None:
            return
        record = flight.record
        if record.error:
            Tracing.fail(attempt.span, Exception(record.error))
        else:
            Tracing.finish(attempt.span, record)

    def _keep_in_cache(self, flight: InFlight) -> None:
        lookup, flow = flight.lookup, flight.services.cache_flow
        attempt, answer, request = flight.attempt, flight.answer, flight.request
        if (
            lookup.decision is not None  # nothing to keep: the cache was not asked
            and lookup.entry is None
            and attempt is not None
            and answer is not None
            and request is not None
            and flight.record.error is None
            and request.keepable(answer)
        ):
            request.keep(flow, lookup, answer, attempt.route.label, flight.record.target or "")
        else:
            flow.land(lookup, None)  # e.g. failed or cancelled: followers go on alone

    async def _charge(self, flight: InFlight) -> None:
        """Usage and spend charged on every scope that admitted the request, or its holds
        released when no attempt answered; then what the door keeps."""
        admission, attempt, record = flight.admission, flight.attempt, flight.record
        limiter = flight.services.limiter
        if admission is not None and not admission.finished:
            if attempt is None:
                await limiter.release(admission)
            else:
                prompt, completion = record.prompt_tokens, record.completion_tokens
                if not (prompt or completion):  # no usage came: the estimates stand in
                    prompt, completion = admission.estimate, record.relayed_bytes // 4
                record.spend_usd = await limiter.finish(
                    admission,
                    attempt.route.ident,
                    attempt.call.model,
                    attempt.model.policy.name,
                    prompt,
                    completion,
                )
        if flight.answer is not None and flight.request is not None and record.error is None:
            await flight.request.finish(flight.answer)

    @staticmethod
    def _needs_storage(flight: InFlight) -> bool:
        """Does this end await anything (a charge, a release, what the door keeps)?"""
        request, admission = flight.request, flight.admission
        if flight.answer is not None and request is not None and request.keeps_answer:
            return True
        if admission is None or admission.finished:
            return False
        return flight.services.limiter.to_settle(admission)

    async def _charge_and_tell(self, flight: InFlight) -> None:
        try:
            await self._charge(flight)
        finally:
            self._tell(flight)

    def _tell(self, flight: InFlight) -> None:
        for listener in self.listeners:
            listener(flight.record)

    def _account(self, flight: InFlight) -> None:
        flight.record.finish(self.metrics, flight.services.access_log)
        self.metrics.in_flight.dec()


def spawner(tasks: set[asyncio.Task[None]]) -> Callable[[Coroutine[Any, Any, None]], None]:
    """Run work in the background, kept in `tasks` until done (so close() can wait)."""

    def spawn(work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return spawn
