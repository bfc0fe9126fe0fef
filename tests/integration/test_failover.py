"""Routing and failover through the running proxy (docs/semantics.md, "Retries, parking,
failover" and "Breakers"): weighted split, priority failover, Retry-After waits, circuit
breakers, the all-routes-open case, stream failover before the first byte, fallbacks, rules by
key and by `stream`, and credential ejection.

One proxy serves the module. Every test uses routes of its own (distinct upstream model ids on
the one fake upstream), so breakers, parking and ejection in one test never leak into another.
test_routing.py covers the basics (transient retry, retries exhausted, failover, 429 parking,
client errors, context_length_exceeded, rule by header); they are not repeated here.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest
from fakes.openai_upstream import (
    DEFAULT_REPLY,
    FakeOpenAI,
    drop_after,
    hang,
    invalid_api_key,
    rate_limited,
    status,
)
from fakes.proxy_harness import UPSTREAM_AUTH_KEY, UPSTREAM_KEY, ProxyLauncher, RunningProxy
from prometheus_client.parser import text_string_to_metric_families

from .conftest import USER_MESSAGES

# The breaker of the module's proxy. The cooldowns are short enough to wait out in a test and
# long enough to look at the open state (metrics, /health, a request) before they end.
COOLDOWN = 1.0
MAX_COOLDOWN = 4.0
BREAKER = {"failures": 2, "window": 10, "cooldown": COOLDOWN, "max_cooldown": MAX_COOLDOWN}

KEY_OPS = "sk-client-ops"  # every model
KEY_BATCH = "sk-client-batch"  # rule: everything it sends goes to `cheap`
KEY_ALIAS = "sk-client-alias"  # allow-list: alias-*
KEY_HIDDEN = "sk-client-hidden"  # allow-list: hidden-model


def fake_routes(*models: str, upstream: str = "fake") -> list[dict[str, Any]]:
    return [{"upstream": upstream, "model": m} for m in models]


def failover_policy(base_url: str, retry: dict[str, Any] | None = None) -> dict[str, Any]:
    upstream = {"type": "openai", "base_url": base_url, "api_key": UPSTREAM_KEY}
    prio = "priority"
    return {
        "server": {"drain_timeout": 0},
        "upstreams": {
            "fake": upstream,
            "fake-auth": {**upstream, "api_key": UPSTREAM_AUTH_KEY},
        },
        "models": {
            "weighted": {
                "routes": [
                    {"upstream": "fake", "model": "w-heavy", "weight": 3},
                    {"upstream": "fake", "model": "w-light", "weight": 1},
                ],
                "strategy": "weighted",
            },
            "prio": {"routes": fake_routes("pr-a", "pr-b"), "strategy": prio},
            "ra-model": {"routes": fake_routes("ra-1")},
            "brk": {"routes": fake_routes("brk-a", "brk-b"), "strategy": prio},
            "allopen": {"routes": fake_routes("ao-a", "ao-b"), "strategy": prio},
            # shares the route fake/ao-b (one upstream model, one breaker) with `allopen`
            "allopen-b": {"routes": fake_routes("ao-b")},
            "stream-fo": {"routes": fake_routes("sf-a", "sf-b"), "strategy": prio},
            "stream-drop": {"routes": fake_routes("sd-a", "sd-b"), "strategy": prio},
            "fb-x": {
                "routes": fake_routes("fx-a", "fx-b"),
                "strategy": prio,
                "fallbacks": ["fb-y"],
            },
            "fb-y": {"routes": fake_routes("fy")},
            "plain": {"routes": fake_routes("plain-id")},
            "cheap": {"routes": fake_routes("cheap-id")},
            "streamy": {"routes": fake_routes("streamy-id")},
            "streamy-live": {"routes": fake_routes("streamy-live-id")},
            "hidden-model": {"routes": fake_routes("hidden-id")},
            "auth-model": {
                "routes": [
                    {"upstream": "fake-auth", "model": "au-a"},
                    {"upstream": "fake", "model": "au-b"},
                ],
                "strategy": prio,
            },
        },
        "keys": [
            {"name": "ops", "key": KEY_OPS},
            {"name": "batch", "key": KEY_BATCH},
            {"name": "alias", "key": KEY_ALIAS, "models": ["alias-*"]},
            {"name": "hidden", "key": KEY_HIDDEN, "models": ["hidden-model"]},
        ],
        "rules": [
            {"when": {"key": "batch"}, "use": "cheap"},
            {"when": {"model": "streamy", "stream": True}, "use": "streamy-live"},
            {"when": {"model": "alias-big"}, "use": "hidden-model"},
        ],
        "retry": retry or {"attempts": 1, "initial_delay": 0.01, "max_delay": 2.0, "deadline": 30},
        "circuit_breaker": BREAKER,
    }


@pytest.fixture(scope="module")
def fo_proxy(
    proxy_launcher: ProxyLauncher, fake_openai_server: FakeOpenAI
) -> Iterator[RunningProxy]:
    running = proxy_launcher.start(failover_policy(fake_openai_server.base_url))
    yield running
    running.stop()


def sdk(proxy: RunningProxy, key: str = KEY_OPS) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key=key, max_retries=0, timeout=20)


@pytest.fixture
def client(fo_proxy: RunningProxy) -> Iterator[openai.OpenAI]:
    with sdk(fo_proxy) as c:
        yield c


def upstream_models(fake: FakeOpenAI) -> list[str]:
    return [r.json["model"] for r in fake.chat_requests]


def metric(proxy: RunningProxy, name: str, **labels: str) -> float | None:
    """One sample of /metrics, or None when it is absent."""
    text = httpx.get(f"{proxy.url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def route_up(proxy: RunningProxy, route: str) -> float | None:
    return metric(proxy, "llm_proxy_route_up", route=route)


def route_state(proxy: RunningProxy, route: str) -> str:
    routes = httpx.get(f"{proxy.url}/health", timeout=5).json()["routes"]
    assert route in routes, sorted(routes)
    return str(routes[route]["state"])


def wait_for_state(proxy: RunningProxy, route: str, state: str, timeout: float) -> float:
    """Poll /health until `route` is in `state`; the time it took."""
    started = time.monotonic()
    while True:
        current = route_state(proxy, route)
        if current == state:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, f"{route} still {current!r}, not {state!r}"
        time.sleep(0.02)


def chat(client: openai.OpenAI, model: str, **kwargs: Any) -> Any:
    """A non-streaming chat; the raw response (headers) with `.parse()` for the completion."""
    return client.chat.completions.with_raw_response.create(
        model=model, messages=USER_MESSAGES, **kwargs
    )


# ---------------------------------------------------------------------------------------------
# Strategies


def test_weighted_split_is_about_three_to_one(
    fo_proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    """Weights 3 and 1: over 600 requests the heavy route leads ~75% of the time. The band
    0.68-0.82 is about 4 standard deviations (0.018) either side of 0.75."""
    total = 600
    with sdk(fo_proxy) as c, ThreadPoolExecutor(8) as pool:
        routes = list(
            pool.map(lambda _: chat(c, "weighted").headers["x-llm-proxy-route"], range(total))
        )
    seen = Counter(upstream_models(fake_openai))
    assert set(seen) == {"w-heavy", "w-light"}, seen
    assert sum(seen.values()) == total, seen  # one call each: nothing failed over
    assert Counter(routes) == {"fake/w-heavy": seen["w-heavy"], "fake/w-light": seen["w-light"]}
    share = seen["w-heavy"] / total
    assert 0.68 <= share <= 0.82, seen


# ---------------------------------------------------------------------------------------------
# Failover, Retry-After


def test_priority_failover_on_500(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(status(500))
    raw = chat(client, "prio")
    assert raw.parse().choices[0].message.content == DEFAULT_REPLY
    assert raw.parse().model == "prio"
    assert raw.headers["x-llm-proxy-route"] == "fake/pr-b"
    assert raw.headers["x-llm-proxy-attempts"] == "2"
    assert upstream_models(fake_openai) == ["pr-a", "pr-b"]  # retry.attempts 1: no retry of pr-a
    # One failure does not open the breaker (failures: 2): the first route leads again.
    raw = chat(client, "prio")
    assert raw.headers["x-llm-proxy-route"] == "fake/pr-a"
    assert raw.headers["x-llm-proxy-attempts"] == "1"


def test_retry_after_is_waited_out_when_it_fits_max_delay(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    """Single route, 429 with retry-after: 1, max_delay 2: nothing else to try, so the proxy
    waits for the parked route (at least the Retry-After: it is a floor) and serves."""
    fake_openai.script(rate_limited(retry_after=1))
    started = time.monotonic()
    raw = chat(client, "ra-model")
    elapsed = time.monotonic() - started
    assert raw.parse().choices[0].message.content == DEFAULT_REPLY
    assert raw.headers["x-llm-proxy-attempts"] == "2"
    first, second = fake_openai.chat_requests
    assert [first.json["model"], second.json["model"]] == ["ra-1", "ra-1"]
    assert second.received_at - first.received_at >= 0.9
    assert 0.9 <= elapsed < 5, elapsed


def test_retry_after_longer_than_max_delay_is_429_at_once(
    start_proxy: Callable[..., RunningProxy], fake_openai: FakeOpenAI
) -> None:
    """The same upstream behaviour with max_delay 0.5 < 1 s: no wait, 429 with retry-after."""
    retry = {"attempts": 1, "initial_delay": 0.01, "max_delay": 0.5, "deadline": 30}
    running = start_proxy(failover_policy(fake_openai.base_url, retry=retry))
    fake_openai.script(rate_limited(retry_after=1))
    with sdk(running) as c:
        started = time.monotonic()
        with pytest.raises(openai.RateLimitError) as exc:
            chat(c, "ra-model")
        elapsed = time.monotonic() - started
    assert elapsed < 0.9, elapsed  # waiting out the park would take 1 s
    assert exc.value.status_code == 429
    assert int(exc.value.response.headers["retry-after"]) >= 1  # Retry-After is a floor
    assert upstream_models(fake_openai) == ["ra-1"]


# ---------------------------------------------------------------------------------------------
# Circuit breakers


def test_breaker_opens_stays_open_and_closes_after_a_good_trial(
    fo_proxy: RunningProxy, client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    a, b = "fake/brk-a", "fake/brk-b"
    assert route_up(fo_proxy, a) == 1
    # Two transient failures within the window open brk-a; each request is served by brk-b.
    for _ in range(2):
        opening = time.monotonic()  # the breaker opens after this (on the second request)
        fake_openai.script(status(500))
        assert chat(client, "brk").headers["x-llm-proxy-route"] == b
    assert upstream_models(fake_openai) == ["brk-a", "brk-b", "brk-a", "brk-b"]
    assert route_up(fo_proxy, a) == 0
    assert route_up(fo_proxy, b) == 1
    assert route_state(fo_proxy, a) == "open"
    # During the cooldown brk-a is not called at all.
    raw = chat(client, "brk")
    assert raw.headers["x-llm-proxy-route"] == b
    assert raw.headers["x-llm-proxy-attempts"] == "1"
    assert upstream_models(fake_openai)[4:] == ["brk-b"]
    assert time.monotonic() - opening < COOLDOWN, "too slow to look inside the cooldown"

    # After the cooldown: a trial that fails re-opens it, for twice the cooldown.
    wait_for_state(fo_proxy, a, "half-open", timeout=COOLDOWN + 2)
    fake_openai.reset()
    fake_openai.script(status(500))
    reopening = time.monotonic()  # the breaker re-opens between these two instants
    raw = chat(client, "brk")
    reopened = time.monotonic()
    assert raw.headers["x-llm-proxy-route"] == b
    assert upstream_models(fake_openai) == ["brk-a", "brk-b"]  # one trial, then failover
    assert route_state(fo_proxy, a) == "open"
    assert route_up(fo_proxy, a) == 0
    # Past the first cooldown, within the second: still open, brk-a still not called.
    time.sleep(max(0.0, reopened + COOLDOWN * 1.3 - time.monotonic()))
    assert route_state(fo_proxy, a) == "open"
    assert chat(client, "brk").headers["x-llm-proxy-route"] == b
    assert upstream_models(fake_openai)[2:] == ["brk-b"]
    assert time.monotonic() - reopening < 2 * COOLDOWN, "too slow to look inside the cooldown"

    # Half-open again: one trial at a time. Two requests at once, each held 0.5 s upstream:
    # exactly one goes to brk-a, the other to brk-b.
    wait_for_state(fo_proxy, a, "half-open", timeout=2 * COOLDOWN + 2)
    fake_openai.reset()
    fake_openai.default = hang(0.5)
    with ThreadPoolExecutor(2) as pool:
        routes = sorted(pool.map(lambda _: chat(client, "brk").headers["x-llm-proxy-route"], "xy"))
    assert routes == [a, b]
    assert sorted(upstream_models(fake_openai)) == ["brk-a", "brk-b"]
    # The good trial closed it: brk-a leads again and route_up is back to 1.
    assert route_state(fo_proxy, a) == "closed"
    assert route_up(fo_proxy, a) == 1
    fake_openai.reset()
    assert chat(client, "brk").headers["x-llm-proxy-route"] == a


def test_all_routes_open_still_tries_the_one_closest_to_recovery(
    fo_proxy: RunningProxy, client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    """ao-b opens first (through a model of its own), then ao-a: with both open, one call
    goes to ao-b, the route nearest recovery, though ao-a comes first in priority order."""
    fake_openai.default = status(500)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            chat(client, "allopen-b")
    assert route_state(fo_proxy, "fake/ao-b") == "open"
    for _ in range(2):  # ao-b is open, so only ao-a is tried
        with pytest.raises(openai.InternalServerError):
            chat(client, "allopen")
    assert upstream_models(fake_openai) == ["ao-b", "ao-b", "ao-a", "ao-a"]
    assert route_state(fo_proxy, "fake/ao-a") == "open"
    assert route_state(fo_proxy, "fake/ao-b") == "open"

    fake_openai.reset()
    raw = chat(client, "allopen")
    assert raw.parse().choices[0].message.content == DEFAULT_REPLY
    assert raw.headers["x-llm-proxy-route"] == "fake/ao-b"
    assert raw.headers["x-llm-proxy-attempts"] == "1"
    assert upstream_models(fake_openai) == ["ao-b"]


# ---------------------------------------------------------------------------------------------
# Streams


def test_stream_fails_over_before_the_first_byte(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(status(500))
    raw = client.chat.completions.with_raw_response.create(
        model="stream-fo", messages=USER_MESSAGES, stream=True
    )
    assert raw.headers["x-llm-proxy-route"] == "fake/sf-b"
    assert raw.headers["x-llm-proxy-attempts"] == "2"
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == DEFAULT_REPLY
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert {c.model for c in chunks} == {"stream-fo"}
    assert upstream_models(fake_openai) == ["sf-a", "sf-b"]


def test_stream_dropped_after_the_first_byte_is_an_in_band_error_without_failover(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(drop_after(3))  # role chunk, "Hello", " from", then the TCP abort
    stream = client.chat.completions.create(
        model="stream-drop", messages=USER_MESSAGES, stream=True
    )
    text = ""
    with pytest.raises(openai.APIError) as exc:
        for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
    # Exactly APIError (an in-band error event), not APIConnectionError (a cut stream).
    assert type(exc.value) is openai.APIError, repr(exc.value)
    assert text == "Hello from"
    assert upstream_models(fake_openai) == ["sd-a"]  # sd-b never called


# ---------------------------------------------------------------------------------------------
# Fallbacks


def test_every_route_failing_goes_to_the_fallback_model(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(status(500), status(500))
    raw = chat(client, "fb-x")
    assert raw.parse().model == "fb-y"  # the public model that served
    assert raw.parse().choices[0].message.content == DEFAULT_REPLY
    assert raw.headers["x-llm-proxy-route"] == "fake/fy"
    assert raw.headers["x-llm-proxy-attempts"] == "3"  # across routes and fallbacks
    assert upstream_models(fake_openai) == ["fx-a", "fx-b", "fy"]


# ---------------------------------------------------------------------------------------------
# Rules


def test_rule_by_client_key(fo_proxy: RunningProxy, fake_openai: FakeOpenAI) -> None:
    with sdk(fo_proxy, KEY_BATCH) as batch, sdk(fo_proxy, KEY_OPS) as ops:
        assert batch.chat.completions.create(model="plain", messages=USER_MESSAGES).model == "cheap"
        assert ops.chat.completions.create(model="plain", messages=USER_MESSAGES).model == "plain"
    assert upstream_models(fake_openai) == ["cheap-id", "plain-id"]


def test_rule_by_stream(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    assert chat(client, "streamy").parse().model == "streamy"
    chunks = list(
        client.chat.completions.create(model="streamy", messages=USER_MESSAGES, stream=True)
    )
    assert {c.model for c in chunks} == {"streamy-live"}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == DEFAULT_REPLY
    assert upstream_models(fake_openai) == ["streamy-id", "streamy-live-id"]


def test_allow_list_checks_the_name_the_client_sent(
    fo_proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    """The rule alias-big -> hidden-model: a key allowed alias-* is served by hidden-model; a
    key allowed only hidden-model may not send alias-big; alias-* may not send hidden-model."""
    with sdk(fo_proxy, KEY_ALIAS) as alias, sdk(fo_proxy, KEY_HIDDEN) as hidden:
        raw = chat(alias, "alias-big")
        assert raw.parse().model == "hidden-model"
        assert raw.headers["x-llm-proxy-route"] == "fake/hidden-id"
        with pytest.raises(openai.PermissionDeniedError):
            chat(alias, "hidden-model")
        with pytest.raises(openai.PermissionDeniedError):
            chat(hidden, "alias-big")
        assert chat(hidden, "hidden-model").parse().model == "hidden-model"
    assert upstream_models(fake_openai) == ["hidden-id", "hidden-id"]


# ---------------------------------------------------------------------------------------------
# Credentials


def test_upstream_401_ejects_the_route_and_hides_its_message(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    """au-a's upstream refuses our key (401, echoing it), then au-b fails too: the client gets
    a 502 that says nothing of the upstream's message. One 401 ejects au-a: the next request
    goes straight to au-b."""
    fake_openai.script(invalid_api_key(), status(500))
    with pytest.raises(openai.APIStatusError) as exc:
        chat(client, "auth-model")
    assert exc.value.status_code == 502
    body = exc.value.response.text
    assert "Incorrect API key" not in body and UPSTREAM_AUTH_KEY not in body, body
    assert upstream_models(fake_openai) == ["au-a", "au-b"]
    assert fake_openai.chat_requests[0].headers["authorization"] == f"Bearer {UPSTREAM_AUTH_KEY}"

    raw = chat(client, "auth-model")
    assert raw.headers["x-llm-proxy-route"] == "fake/au-b"
    assert raw.headers["x-llm-proxy-attempts"] == "1"
    assert upstream_models(fake_openai) == ["au-a", "au-b", "au-b"]  # au-a not called again
