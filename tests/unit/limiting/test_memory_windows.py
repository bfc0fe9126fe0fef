"""MemoryWindows answers exactly as the `limits` library's sliding-window-counter strategy on
its memory storage: same hits allowed, same tests, same remaining and reset, across window
boundaries, with costs, for several limits and identities at once."""

from __future__ import annotations

import random

import limits
import limits.aio.storage
import limits.aio.strategies
import pytest

from proxy.limits.windows import MemoryWindows


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock(1_800_000_000.25)
    monkeypatch.setattr("time.time", clock)  # the library reads time.time() itself
    return clock


@pytest.mark.parametrize("seed", range(8))
async def test_the_same_answers_as_the_library(clock: Clock, seed: int) -> None:
    rng = random.Random(seed)
    ours = MemoryWindows(clock)
    theirs = limits.aio.strategies.SlidingWindowCounterRateLimiter(
        limits.aio.storage.MemoryStorage()
    )
    items = [limits.parse("5/second"), limits.parse("20/minute"), limits.parse("7/10 seconds")]
    for _ in range(600):
        clock.now += rng.choice([0.0, 0.01, 0.1, 0.4, 1.3, 7.0])
        item = rng.choice(items)
        ident = rng.choice(["key:a", "key:b", "model:m"])
        cost = rng.choice([1, 1, 1, 2, 5])
        action = rng.choice(["hit", "hit", "test", "stats"])
        if action == "stats":
            mine = await ours.get_window_stats(item, ident)
            library = await theirs.get_window_stats(item, ident)
            assert mine.remaining == library.remaining
            assert mine.reset_time == pytest.approx(library.reset_time, abs=1e-6)
        else:
            mine_ok = await getattr(ours, action)(item, ident, cost=cost)
            library_ok = await getattr(theirs, action)(item, ident, cost=cost)
            assert mine_ok == library_ok, (action, item, ident, cost, clock.now)


async def test_a_cost_above_the_limit_never_hits(clock: Clock) -> None:
    assert not await MemoryWindows(clock).hit(limits.parse("3/minute"), "k", cost=4)


async def test_stale_windows_are_swept(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("proxy.limits.windows.SWEEP_AT", 10)
    windows = MemoryWindows(clock)
    item = limits.parse("1/second")
    for n in range(10):
        await windows.hit(item, f"old-{n}")
    clock.now += 5
    await windows.hit(item, "new")
    assert len(windows._windows) == 1


@pytest.mark.parametrize("seed", range(4))
async def test_take_is_a_hit_and_its_stats_in_one_pass(clock: Clock, seed: int) -> None:
    rng = random.Random(seed)
    ours = MemoryWindows(clock)
    theirs = limits.aio.strategies.SlidingWindowCounterRateLimiter(
        limits.aio.storage.MemoryStorage()
    )
    item = limits.parse("6/10 seconds")
    for _ in range(300):
        clock.now += rng.choice([0.0, 0.05, 0.7, 2.5])
        allowed, state = ours.take(item, ("k",), "requests")
        assert allowed == await theirs.hit(item, "k")
        stats = await theirs.get_window_stats(item, "k")
        assert state.remaining == stats.remaining
        assert state.reset == pytest.approx(max(stats.reset_time - clock.now, 0.0), abs=1e-6)


async def test_a_refusal_on_a_later_scope_takes_nothing_anywhere(clock: Clock) -> None:
    from proxy.config import LimitSpec
    from proxy.limits.scopes import Refused, Scope, compile_limits
    from proxy.limits.windows import admit_windows

    windows = MemoryWindows(clock)
    key = compile_limits("key", LimitSpec(requests="10/minute"))
    model = compile_limits("model", LimitSpec(requests="1/minute"))
    assert key is not None and model is not None
    scopes = [Scope(key, "team", states=True), Scope(model, "m")]
    admit_windows(windows, scopes, 1)
    with pytest.raises(Refused) as refused:
        admit_windows(windows, scopes, 1)
    assert refused.value.scope == "model" and refused.value.retry_after is not None
    holds = admit_windows(windows, [scopes[0]], 1)  # the key's hit was given back: 8 left
    assert holds[0].states[0].remaining == 8
