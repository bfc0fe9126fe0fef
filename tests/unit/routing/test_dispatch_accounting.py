"""A route's in-flight count and half-open trial are released whatever ends an attempt: a call
that cannot be built (the client's 400, before any accounting), a cancelled attempt (the
client left), a bug of ours. Otherwise least-busy routing would shun the route for good and a
half-open breaker would wait forever for a trial that never ends.

The dispatcher is built as the gateway builds it (with its tracing, off), with a fake clock.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest

from proxy.accounting import RequestRecord
from proxy.config import BreakerConfig, RetryConfig, Timeouts
from proxy.errors import InvalidRequestError, UpstreamError
from proxy.loader import load_dict
from proxy.observability.metrics import Metrics
from proxy.observability.tracing import Tracing
from proxy.policy import ModelPolicy, ResolvedModel, Route
from proxy.routing.dispatch import Attempt, Dispatcher, Plan
from proxy.routing.health import HealthBoard
from proxy.upstreams.base import UpstreamCall

LABEL = "up/m"
GOOD_CALL = UpstreamCall(b"{}", "m", Timeouts(), "r")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def unbuildable() -> UpstreamCall:
    """What a request a route cannot take does when its call is built."""
    raise InvalidRequestError("This route cannot take `tools[0].type`.", param="tools[0].type")


class Gates:
    """Route admission (`enter`) and release (`leave`), counted."""

    def __init__(self) -> None:
        self.entered = 0
        self.left = 0

    async def enter(self, attempt: Attempt) -> bool:
        self.entered += 1
        return True

    async def leave(self, attempt: Attempt) -> None:
        self.left += 1


def tracing() -> Tracing:
    config = load_dict({"upstreams": {"up": {"type": "openai", "base_url": "http://up/v1"}}})
    return Tracing(config.config)


def dispatcher(clock: Clock, board: HealthBoard) -> Dispatcher:
    retry = RetryConfig(attempts=1, initial_delay=0.01, max_delay=0.05, deadline=60)
    return Dispatcher(
        retry, board, Metrics(), random.Random(1), clock.sleep, clock, tracing=tracing()
    )


def plan(dispatch: Dispatcher, build: Callable[[], UpstreamCall] = lambda: GOOD_CALL) -> Plan:
    route = Route("up", "m", 1, LABEL, Timeouts())
    resolved = ResolvedModel("public", ModelPolicy("public", (route,), "priority", False))
    return dispatch.plan(resolved, lambda r: Attempt(r, None, resolved, build))  # type: ignore[arg-type]


async def answer(attempt: Attempt) -> bytes:
    attempt.call  # noqa: B018  the call is what the upstream would be sent
    return b"ok"


def half_open(clock: Clock) -> HealthBoard:
    """A board whose only route failed once, opened, and has cooled down: one trial admitted."""
    board = HealthBoard(BreakerConfig(failures=1, window=10, cooldown=5), clock)
    board[LABEL].begin()
    board[LABEL].failed()
    clock.now += 6
    assert board[LABEL].state() == "half-open" and board[LABEL].available()
    return board


async def test_a_call_that_cannot_be_built_is_the_client_s_400_and_holds_nothing() -> None:
    clock, gates = Clock(), Gates()
    board = HealthBoard(BreakerConfig(failures=100), clock)
    dispatch, record = dispatcher(clock, board), RequestRecord("r", 0.0)
    with pytest.raises(InvalidRequestError) as caught:
        await dispatch.run([plan(dispatch, unbuildable)], answer, record, gates.enter, gates.leave)
    assert caught.value.status == 400 and caught.value.param == "tools[0].type"
    assert board[LABEL].inflight == 0
    assert gates.entered == gates.left
    assert record.attempts == 0  # nothing was sent


async def test_a_half_open_route_s_trial_is_not_stuck_behind_a_call_that_cannot_be_built() -> None:
    clock = Clock()
    board = half_open(clock)
    dispatch = dispatcher(clock, board)
    with pytest.raises(InvalidRequestError):
        await dispatch.run([plan(dispatch, unbuildable)], answer, RequestRecord("r", 0.0))
    assert board[LABEL].available()  # the trial is still to be sent
    result, _ = await dispatch.run([plan(dispatch)], answer, RequestRecord("r", 0.0))
    assert result == b"ok" and board[LABEL].state() == "closed"
    assert board[LABEL].inflight == 0


async def test_a_cancelled_attempt_releases_its_route_and_its_trial() -> None:
    clock = Clock()
    board = half_open(clock)
    dispatch, gates = dispatcher(clock, board), Gates()
    called = asyncio.Event()

    async def hangs(attempt: Attempt) -> bytes:
        called.set()
        await asyncio.Event().wait()  # until cancelled: the client went away
        return b"never"

    task = asyncio.create_task(
        dispatch.run([plan(dispatch)], hangs, RequestRecord("r", 0.0), gates.enter, gates.leave)
    )
    await called.wait()
    assert board[LABEL].inflight == 1 and not board[LABEL].available()  # the trial is out
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert board[LABEL].inflight == 0
    assert board[LABEL].available()  # another request may send the trial
    assert board[LABEL].state() == "half-open"  # a departed client says nothing of the route


@pytest.mark.parametrize(
    "failure",
    [lambda: RuntimeError("a bug of ours"), lambda: UpstreamError("boom", cause="500")],
    ids=["bug", "upstream"],
)
async def test_every_other_end_of_an_attempt_releases_the_route(
    failure: Callable[[], Exception],
) -> None:
    clock = Clock()
    board = HealthBoard(BreakerConfig(failures=100), clock)
    dispatch = dispatcher(clock, board)

    async def fails(attempt: Attempt) -> bytes:
        raise failure()

    with pytest.raises((RuntimeError, UpstreamError)):
        await dispatch.run([plan(dispatch)], fails, RequestRecord("r", 0.0))
    assert board[LABEL].inflight == 0
