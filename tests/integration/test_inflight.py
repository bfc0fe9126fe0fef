"""A route's in-flight count (what `least-busy` routing reads, shown in /health) comes back
to 0 however a request ends: answered, or left by a client that disconnected while the
upstream was still working on a JSON answer."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fakes.openai_upstream import FakeOpenAI, RecordedRequest, hang
from fakes.proxy_harness import CLIENT_KEY_B, RunningProxy

ROUTE = "fake/upstream-model-id"  # gpt-4o-mini's only route in the shared policy
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
UPSTREAM_HANGS = 3.0


def inflight(proxy: RunningProxy) -> int:
    routes: dict[str, Any] = httpx.get(f"{proxy.url}/health", timeout=10).json()["routes"]
    return int(routes[ROUTE]["inflight"])


def wait_for_inflight(proxy: RunningProxy, expected: int, within: float) -> None:
    deadline = time.monotonic() + within
    while (seen := inflight(proxy)) != expected:
        assert time.monotonic() < deadline, f"{ROUTE} in flight: {seen}, expected {expected}"
        time.sleep(0.05)


@pytest.fixture
def left_during_call(proxy: RunningProxy, fake_openai: FakeOpenAI) -> Iterator[RecordedRequest]:
    """A JSON request whose client gives up (and closes its connection) while the upstream
    still works on the answer; the upstream's record of that call."""
    fake_openai.script(hang(UPSTREAM_HANGS))
    headers = {"Authorization": f"Bearer {CLIENT_KEY_B}"}
    with (
        httpx.Client(base_url=proxy.base_url, headers=headers) as client,
        pytest.raises(httpx.ReadTimeout),
    ):
        client.post("/chat/completions", json=BODY, timeout=httpx.Timeout(20, read=0.5))
    yield fake_openai.wait_for_requests(1)[0]
    wait_for_inflight(proxy, 0, within=UPSTREAM_HANGS + 5)  # nothing left for the next test


def test_a_client_that_leaves_during_a_json_call_leaves_nothing_in_flight(
    proxy: RunningProxy, left_during_call: RecordedRequest
) -> None:
    wait_for_inflight(proxy, 0, within=UPSTREAM_HANGS + 5)
    assert left_during_call.wait_done(1)


def test_a_client_that_leaves_during_a_json_call_cancels_the_upstream_call(
    left_during_call: RecordedRequest,
) -> None:
    assert left_during_call.wait_done(UPSTREAM_HANGS + 5)
    assert left_during_call.outcome == "cancelled"


def test_answered_requests_leave_nothing_in_flight(
    proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    headers = {"Authorization": f"Bearer {CLIENT_KEY_B}"}
    with httpx.Client(base_url=proxy.base_url, headers=headers, timeout=20) as client:
        for _ in range(3):
            assert client.post("/chat/completions", json=BODY).status_code == 200
    wait_for_inflight(proxy, 0, within=5)
