"""Retries, parking, failover and fallbacks (docs/semantics.md, "Retries, parking, failover").

For each target model (the resolved one, then its fallbacks) the routes are tried in
strategy order. A transient failure retries the same route with full-jitter backoff; a
reply with Retry-After (or any upstream 429) parks the route and the next is tried at once;
refused credentials eject the route; a client error ends everything, except
`context_length_exceeded`, which moves on to the fallbacks. When no route is left, the
earliest parked one is waited for if that fits `max_delay` and the deadline.
"""

from __future__ import annotations

import asyncio
import enum
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from proxy.accounting import RequestRecord
from proxy.config import RetryConfig
from proxy.errors import (
    InvalidRequestError,
    ProxyError,
    RateLimitError,
    ServiceUnavailableError,
    UpstreamAuthError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
    reason_label,
)
from proxy.observability.metrics import Metrics
from proxy.observability.tracing import Tracing
from proxy.policy import ResolvedModel, Route
from proxy.routing.health import HealthBoard
from proxy.routing.strategies import order_routes
from proxy.upstreams.base import Upstream, UpstreamCall

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
Gate = Callable[["Attempt"], Awaitable[bool]]
Leave = Callable[["Attempt"], Awaitable[None]]


@dataclass(slots=True)
class Attempt:
    route: Route
    upstream: Upstream
    model: ResolvedModel  # the public model this attempt serves
    build: Callable[[], UpstreamCall]
    _call: UpstreamCall | None = None
    span: Any = None  # the tracing span of the call that answered (None: tracing off)

    @property
    def call(self) -> UpstreamCall:
        if self._call is None:
            self._call = self.build()
        return self._call


@dataclass(slots=True)
class Plan:
    """Routes to try for one model, and those parked (to wait for if nothing else works)."""

    attempts: list[Attempt]
    parked: list[Attempt] = field(default_factory=list)


class _Outcome(enum.Enum):
    FAILED = 1
    PARKED = 2
    TO_FALLBACKS = 3
    FULL = 4  # the route's (or its upstream's) own limits are full: skipped


@dataclass
class Failures:
    errors: list[ProxyError] = field(default_factory=list)
    parks: list[ProxyError] = field(default_factory=list)
    full: int = 0  # routes skipped because their limits were full

    def final(self) -> ProxyError:
        """The most meaningful error once nothing could serve the request."""
        every = self.errors + self.parks
        if every and all(isinstance(e, RateLimitError) for e in every):
            return RateLimitError(
                "Every upstream of this model is rate limited; try again later.",
                retry_after=_earliest(every),
            )
        if not self.errors and not self.parks and self.full:
            return ServiceUnavailableError(
                "Every route of this model is at its configured limit; try again later.",
                retry_after=1.0,
            )
        if not self.errors and self.parks:
            latest = self.parks[-1].message  # e.g. the model is still loading
            return ServiceUnavailableError(
                f"No upstream of this model can take the request now: {latest}",
                retry_after=_earliest(self.parks),
            )
        rejected = [e for e in self.errors if isinstance(e, UpstreamRejectedError)]
        if rejected:
            return rejected[-1]  # e.g. context_length_exceeded with no fallback that fits
        if self.errors:
            return self.errors[-1]
        return ServiceUnavailableError("No route of this model is available.")


def _earliest(errors: list[ProxyError]) -> float | None:
    waits = [e.retry_after for e in errors if e.retry_after is not None]
    return min(waits) if waits else None


@dataclass(slots=True)
class _Run(Generic[T]):
    """One request's way through the plans."""

    call: Callable[[Attempt], Awaitable[T]]
    record: RequestRecord
    failures: Failures
    deadline: float
    enter: Gate | None
    leave: Leave | None


class Dispatcher:
    def __init__(
        self,
        retry: RetryConfig,
        board: HealthBoard,
        metrics: Metrics,
        rng: random.Random,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        claim_trial: Callable[[str], Awaitable[bool]] | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.tracing = tracing
        self.retry = retry
        self.claim_trial = claim_trial  # cluster-wide half-open trial (shared state)
        self.board = board
        self.metrics = metrics
        self.rng = rng
        self.sleep = sleep
        self.clock = clock
        self._retry_on = {str(kind) for kind in retry.on}

    def plan(self, resolved: ResolvedModel, make: Callable[[Route], Attempt | None]) -> Plan:
        """Available routes in strategy order; if none, the one closest to recovery (an
        ejected route is still tried rather than failing without trying)."""
        board = self.board
        ordered = [
            a for a in map(make, order_routes(resolved.policy, board, self.rng)) if a is not None
        ]
        available = [a for a in ordered if board[a.route.label].available()]
        if available:
            return Plan(available)
        now = self.clock()
        parked = [a for a in ordered if board[a.route.label].parked_until > now]
        ejected = [a for a in ordered if a not in parked]
        if ejected:
            return Plan([min(ejected, key=lambda a: board[a.route.label].recovery_at())], parked)
        return Plan([], parked)

    async def run(
        self,
        plans: Iterable[Plan],
        call: Callable[[Attempt], Awaitable[T]],
        record: RequestRecord,
        enter: Gate | None = None,
        leave: Leave | None = None,
    ) -> tuple[T, Attempt]:
        """Serve from the first attempt that answers. `enter` admits an attempt's route
        (False: its limits are full, skip it); `leave` lets go of a route that failed."""
        run = _Run(call, record, Failures(), self.clock() + self.retry.deadline, enter, leave)
        for plan in plans:
            served = await self._try_model(plan, run)
            if served is not None:
                return served
        raise run.failures.final()

    async def _try_model(self, plan: Plan, run: _Run[T]) -> tuple[T, Attempt] | None:
        run.failures.parks.extend(map(self._still_parked, plan.parked))
        parked = list(plan.parked)
        for attempt in plan.attempts:
            result = await self._try_route(attempt, run)
            if isinstance(result, tuple):
                return result
            if result is _Outcome.TO_FALLBACKS:
                return None
            if result is _Outcome.PARKED:
                parked.append(attempt)
        return await self._wait_for_parked(parked, run)

    def _still_parked(self, attempt: Attempt) -> ProxyError:
        """Why a route parked by an earlier request cannot take this one."""
        health = self.board[attempt.route.label]
        wait = max(health.parked_until - self.clock(), 0.0)
        if health.park_rate_limited:
            return RateLimitError("The upstream is rate limited.", retry_after=wait)
        return ServiceUnavailableError("The upstream asked for a pause.", retry_after=wait)

    async def _wait_for_parked(
        self, parked: list[Attempt], run: _Run[T]
    ) -> tuple[T, Attempt] | None:
        if not parked:
            return None
        soonest = min(parked, key=lambda a: self.board[a.route.label].parked_until)
        now = self.clock()
        wait = max(self.board[soonest.route.label].parked_until - now, 0.0)
        if wait > self.retry.max_delay or now + wait >= run.deadline:
            return None
        await self._wait(wait, run.record)
        result = await self._try_route(soonest, run)
        return result if isinstance(result, tuple) else None

    async def _try_route(self, attempt: Attempt, run: _Run[T]) -> tuple[T, Attempt] | _Outcome:
        label = attempt.route.label
        attempt.call  # noqa: B018  built first: a request a route cannot take fails here, untouched
        if (
            self.claim_trial is not None
            and self.board[label].state() == "half-open"
            and not await self.claim_trial(label)
        ):
            return _Outcome.FAILED  # another replica sends this route's trial
        if run.enter is not None and not await run.enter(attempt):
            run.failures.full += 1
            return _Outcome.FULL
        outcome = await self._call_route(attempt, run)
        if not isinstance(outcome, tuple) and run.leave is not None:
            await run.leave(attempt)
        return outcome

    async def _call_route(self, attempt: Attempt, run: _Run[T]) -> tuple[T, Attempt] | _Outcome:
        health = self.board[attempt.route.label]
        record, failures = run.record, run.failures
        target = f"{attempt.route.upstream}/{attempt.call.model}"
        for number in range(self.retry.attempts):
            record.attempts += 1
            record.route = attempt.route.label
            record.target = target
            record.model = attempt.model.policy.name
            if self.tracing is not None:
                call = attempt.call
                operation = "embeddings" if call.api == "embeddings" else "chat"
                attempt.span = self.tracing.start(
                    attempt.route.upstream, call.model, record.request_id, operation
                )
            health.begin()
            started = self.clock()
            try:
                result = await run.call(attempt)
            except ProxyError as exc:
                Tracing.fail(attempt.span, exc)
                record.upstream_seconds += self.clock() - started
                outcome = self._failed(attempt, exc, failures)
                if outcome is not None:
                    return outcome
                delay = self._backoff(number, exc, run.deadline)
                if delay is None or health.state() == "open":
                    return _Outcome.FAILED
                await self._wait(delay, record)
                continue
            except BaseException as exc:  # cancelled (the client left), or a bug of ours
                health.released()
                Tracing.fail(attempt.span, exc if isinstance(exc, Exception) else Exception())
                raise
            record.upstream_seconds += self.clock() - started
            health.succeeded(self.clock() - started)
            return result, attempt
        return _Outcome.FAILED

    def _failed(self, attempt: Attempt, exc: ProxyError, failures: Failures) -> _Outcome | None:
        """Book a failed call; an outcome ends this route, None means it may be retried."""
        health = self.board[attempt.route.label]
        reason = reason_label(exc)
        self.metrics.child(self.metrics.upstream_errors, attempt.route.label, reason).inc()
        if isinstance(exc, InvalidRequestError):  # the client's request: no route likes it more
            health.released()
            if exc.code == "context_length_exceeded":
                failures.errors.append(exc)
                return _Outcome.TO_FALLBACKS
            raise exc
        if isinstance(exc, RateLimitError) or (exc.retry_after is not None and exc.cause == "503"):
            wait = exc.retry_after if exc.retry_after is not None else self.retry.initial_delay
            health.park(wait, rate_limited=isinstance(exc, RateLimitError))
            failures.parks.append(exc)
            return _Outcome.PARKED
        failures.errors.append(exc)
        if isinstance(exc, UpstreamAuthError):
            health.eject()
            return _Outcome.FAILED
        health.failed()
        if exc.code == "upstream_model_not_found":
            return _Outcome.FAILED
        return None

    def _backoff(self, number: int, exc: ProxyError, deadline: float) -> float | None:
        """Full-jitter exponential backoff before retry `number + 1`, or None: no retry."""
        if number + 1 >= self.retry.attempts or not self._retryable(exc):
            return None
        ceiling = min(self.retry.max_delay, self.retry.initial_delay * 2**number)
        delay = self.rng.uniform(0, ceiling)
        return None if self.clock() + delay >= deadline else delay

    def _retryable(self, exc: ProxyError) -> bool:
        if isinstance(exc, UpstreamTimeoutError):
            return "timeout" in self._retry_on
        cause = exc.cause if exc.cause is not None else "502"  # a malformed reply
        return cause in self._retry_on or (cause == "connect" and "connect" in self._retry_on)

    async def _wait(self, seconds: float, record: RequestRecord) -> None:
        started = self.clock()
        await self.sleep(seconds)
        record.waited += self.clock() - started
