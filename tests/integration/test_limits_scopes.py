"""Limits per scope and kind with memory storage (docs/semantics.md: 429
rate_limit_exceeded with retry-after + retry-after-ms, a full route is skipped and no usable
route is a 503, "Rate-limit headers", "Token accounting", "Budgets").

tests/integration/test_limits.py already covers a plain request limit, the concurrency 429,
insufficient_quota and the charge of a stream cut by a disconnect; this file covers the rest:
several windows, the burst bucket, tokens corrected by real usage, the model, upstream and
route scopes, concurrency released on every ending, the headers, /v1/proxy/keys/me, spend,
budgets across a restart and the DEFAULT_* environment overrides.

Windows of the default strategy (sliding-window-counter) are aligned on multiples of their
length, so tests that count within a window first step away from its end.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx
import openai
import pytest
from fakes.openai_upstream import FakeOpenAI, hang, slow_stream, status
from fakes.proxy_harness import UPSTREAM_KEY, ProxyLauncher, RunningProxy

from .conftest import USER_MESSAGES, assert_openai_error

MODEL = "scoped"
# USER_MESSAGES: "Say hello to the test suite" = 6 words; the fake's default reply has 6 words
# too; the fake counts words as tokens, so a default exchange is 12 tokens of real usage
DEFAULT_USAGE = 12
LONG_REPLY = " ".join(f"w{i}" for i in range(100))  # 100 completion tokens
GO_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(\d+(?:\.\d+)?)(ms|s)$")


# ---------------------------------------------------------------------------------------------
# Helpers (test_limits_redis.py uses them too)


class Reply(Protocol):
    """An httpx response, or the one an SDK error carries (the SDK may use httpx2)."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Any: ...
    @property
    def text(self) -> str: ...
    def json(self) -> Any: ...


def upstream(base_url: str, **extra: Any) -> dict[str, Any]:
    return {"type": "openai", "base_url": base_url, "api_key": UPSTREAM_KEY, **extra}


def tuned(policy: dict[str, Any]) -> dict[str, Any]:
    """One upstream call per route, no breaker trips, no response cache, a quick stop."""
    return {
        "server": {"drain_timeout": 0},
        **policy,
        "retry": {"attempts": 1, "initial_delay": 0.01, "max_delay": 0.05, "deadline": 30},
        "circuit_breaker": {"failures": 100},
        "cache": {"backend": "none"},
    }


def start_together(
    *jobs: tuple[ProxyLauncher, dict[str, Any], dict[str, str] | None],
) -> list[RunningProxy]:
    """Start proxies in parallel (each start is mostly imports): (launcher, policy, env)."""
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(launcher.start, policy, env) for launcher, policy, env in jobs]
        return [future.result() for future in futures]


def stop_together(*launchers: ProxyLauncher) -> None:
    """SIGTERM every proxy first, then wait for each: the drains overlap."""
    for launcher in launchers:
        for running in launcher.running:
            if running.process.poll() is None:
                running.process.terminate()
    for launcher in launchers:
        launcher.close()


def sdk(proxy: RunningProxy, key: str = "sk-none", timeout: float = 20) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key=key, max_retries=0, timeout=timeout)


def async_sdk(proxy: RunningProxy, key: str = "sk-none") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=proxy.base_url, api_key=key, max_retries=0, timeout=20)


def chat(proxy: RunningProxy, key: str, model: str = MODEL, **body: Any) -> httpx.Response:
    """One raw chat request (for status and headers without the SDK's exceptions)."""
    payload = {"model": model, "messages": USER_MESSAGES, **body}
    headers = {"Authorization": f"Bearer {key}"}
    url = f"{proxy.base_url}/chat/completions"
    return httpx.post(url, json=payload, headers=headers, timeout=20)


def key_usage(proxy: RunningProxy, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.get(f"{proxy.base_url}/proxy/keys/me", headers=headers, timeout=10)


def usage_of(proxy: RunningProxy, key: str) -> dict[str, Any]:
    resp = key_usage(proxy, key)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def window(report: dict[str, Any], kind: str) -> dict[str, Any]:
    found = [w for w in report["limits"] if w["kind"] == kind]
    assert len(found) == 1, report
    return found[0]


def metric(proxy: RunningProxy, name: str, **labels: str) -> float:
    """One sample of /metrics; 0 when absent (a counter never incremented)."""
    text = httpx.get(f"{proxy.url}/metrics", timeout=5).text
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def duration_seconds(text: str) -> float:
    """OpenAI's (Go's) duration format: 20ms, 1s, 59.9s, 6m0s, 1h2m3s."""
    match = GO_DURATION.match(text)
    assert match, f"not an OpenAI duration: {text!r}"
    hours, minutes, number, unit = match.groups()
    if unit == "ms":
        assert hours is None and minutes is None, text
        return float(number) / 1000
    if hours is not None or minutes is not None:
        assert float(number) < 60, text  # 6m0s, never 5m60s
    if hours is not None:
        assert minutes is not None and int(minutes) < 60, text  # 1h0m5s
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(number)


def assert_retry_headers(resp: Reply, at_most: float | None = None) -> float:
    """retry-after in whole seconds (>= 1) and retry-after-ms agree; returns the wait."""
    seconds, millis = resp.headers["retry-after"], resp.headers["retry-after-ms"]
    assert seconds.isdigit() and millis.isdigit(), dict(resp.headers)
    wait = int(millis) / 1000
    assert int(seconds) == max(1, math.ceil(wait - 1e-9)), dict(resp.headers)
    if at_most is not None:
        assert wait <= at_most, dict(resp.headers)
    return wait


def assert_rate_limited(resp: Reply, code: str = "rate_limit_exceeded") -> None:
    assert resp.status_code == 429, resp.text
    error = assert_openai_error(resp.json())
    assert code in {error["type"], error["code"]}, error


def away_from_window_end(period: float, margin: float) -> None:
    """Sleep past the end of the current aligned window when less than `margin` is left."""
    left = period - time.time() % period
    if left < margin:
        time.sleep(left + 0.02)


def at_window_start(period: float = 1.0) -> None:
    time.sleep(period - time.time() % period + 0.01)


def wait_until(check: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(0.05)


def in_flight(proxy: RunningProxy, key: str) -> int:
    return int(usage_of(proxy, key)["concurrency"]["in_flight"])


# ---------------------------------------------------------------------------------------------
# The proxy of this module


def key(name: str, **limits: Any) -> dict[str, Any]:
    """Key `name` is sent as `sk-<name>`."""
    entry: dict[str, Any] = {"name": name, "key": f"sk-{name}"}
    if limits:
        entry["limits"] = limits
    return entry


def scopes_policy(base_url: str) -> dict[str, Any]:
    def route(model: str, **extra: Any) -> dict[str, Any]:
        return {"upstream": "fake", "model": model, **extra}

    hourly = {"requests": "1/hour"}
    return tuned(
        {
            "upstreams": {
                "fake": upstream(base_url),
                "quota": upstream(base_url, limits=hourly),  # the provider's own quota
            },
            "models": {
                MODEL: {"routes": [route("scoped-up")]},
                "shared": {"routes": [route("shared-up")], "limits": {"requests": "2/hour"}},
                "tight": {"routes": [route("tight-up")], "limits": {"requests": "1/hour"}},
                "skip-upstream": {
                    "strategy": "priority",
                    "routes": [{"upstream": "quota", "model": "quota-up"}, route("spare-up")],
                },
                "quota-only": {"routes": [{"upstream": "quota", "model": "quota-only-up"}]},
                "skip-route": {
                    "strategy": "priority",
                    "routes": [
                        route("first-up", limits=hourly),
                        route("second-up", limits=hourly),
                    ],
                },
                "priced": {"routes": [route("priced-up")]},
                "unpriced": {"routes": [route("unpriced-up")]},
                "route-priced": {
                    "routes": [route("route-priced-up", price={"input": 5000, "output": 10000})]
                },
            },
            "keys": [
                key("windows", requests="3/second; 5/minute"),
                key("windows-rev", requests="5/minute; 2/second"),
                key("burst", requests="1/second", burst=3),
                key("tokens-json", tokens="50/hour"),
                key("tokens-stream", tokens="50/hour"),
                key("headers", requests="5/hour", tokens="1000/hour"),
                key("headers-429", requests="1/hour", tokens="1000/hour"),
                key("single", concurrency=1),
                key("thrifty", requests="2/hour"),
                key("shared-a"),
                key("shared-b"),
                key("free"),
                {**key("spender"), "budget": {"usd": 10, "period": "day"}},
                {
                    **key("me", requests="10/hour", tokens="1000/hour", concurrency=2),
                    "budget": {"usd": 5, "period": "month"},
                },
            ],
            "prices": {
                "priced-up": {"input": 1000, "output": 2000},
                "route-priced-up": {"input": 1, "output": 1},  # the route's own price wins
                "scoped-up": {"input": 1000, "output": 1000},
            },
        }
    )


ENV_OVERRIDES = {"DEFAULT_RATE_LIMIT": "1", "DEFAULT_BURST_LIMIT": "2"}


@pytest.fixture(scope="module")
def module_proxies(
    tmp_path_factory: pytest.TempPathFactory, fake_openai_server: FakeOpenAI
) -> Iterator[dict[str, tuple[ProxyLauncher, RunningProxy]]]:
    """The proxies of this module, started together, each in a working directory of its own:
    `scopes` (most tests), `anonymous` (no keys, DEFAULT_* overrides), `saver` (restarted)."""
    base_url = fake_openai_server.base_url
    launchers = {
        name: ProxyLauncher(tmp_path_factory.mktemp(f"limits-{name}"))
        for name in ("scopes", "anonymous", "saver")
    }
    try:
        started = start_together(
            (launchers["scopes"], scopes_policy(base_url), None),
            (launchers["anonymous"], anonymous_policy(base_url), ENV_OVERRIDES),
            (launchers["saver"], restart_policy(base_url), None),
        )
        yield {
            name: (launchers[name], proxy) for name, proxy in zip(launchers, started, strict=True)
        }
    finally:
        stop_together(*launchers.values())


@pytest.fixture
def scopes_proxy(
    module_proxies: dict[str, tuple[ProxyLauncher, RunningProxy]],
) -> RunningProxy:
    return module_proxies["scopes"][1]


# ---------------------------------------------------------------------------------------------
# Request windows and the burst bucket


def test_several_request_windows_apply_together(
    scopes_proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    """Requests "3/second; 5/minute": 3 at once, then the second's window refuses with a
    wait under a second that is honoured; once the second's window has room the minute's is
    the tightest (its headers), and its 5 used up it refuses for longer."""
    away_from_window_end(60, 8)
    at_window_start(1.0)
    with sdk(scopes_proxy, "sk-windows") as c:
        for remaining in ("2", "1", "0"):
            ok = c.chat.completions.with_raw_response.create(model=MODEL, messages=USER_MESSAGES)
            assert ok.headers["x-ratelimit-limit-requests"] == "3"  # the tightest: per second
            assert ok.headers["x-ratelimit-remaining-requests"] == remaining
            assert duration_seconds(ok.headers["x-ratelimit-reset-requests"]) <= 1
    refused = chat(scopes_proxy, "sk-windows")
    assert_rate_limited(refused)
    time.sleep(assert_retry_headers(refused, at_most=1.0) + 0.02)
    fourth = chat(scopes_proxy, "sk-windows")  # admitted once the wait is over
    assert fourth.status_code == 200, fourth.text

    at_window_start(1.0)  # the second's window has room again: 2 of 3 left after this one
    fifth = chat(scopes_proxy, "sk-windows")
    assert fifth.status_code == 200, fifth.text
    assert fifth.headers["x-ratelimit-limit-requests"] == "5"  # now the minute's is tightest
    assert fifth.headers["x-ratelimit-remaining-requests"] == "0"
    sixth = chat(scopes_proxy, "sk-windows")  # the second's window would take it
    assert_rate_limited(sixth)
    assert assert_retry_headers(sixth) > 1.0
    assert len(fake_openai.chat_requests) == 5


def test_a_refused_request_uses_no_other_window(
    scopes_proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    """Requests "5/minute; 2/second": 2 admitted and 3 refused by the second's window leave 3 of the
    minute's 5, so once the second's window has room the next request is admitted."""
    away_from_window_end(60, 6)
    at_window_start(1.0)
    statuses = [chat(scopes_proxy, "sk-windows-rev").status_code for _ in range(5)]
    assert statuses == [200, 200, 429, 429, 429]
    time.sleep(1.1)
    resp = chat(scopes_proxy, "sk-windows-rev")
    assert resp.status_code == 200, resp.text


def test_a_request_refused_by_the_model_uses_no_key_quota(
    scopes_proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    """Key "2/hour", model `tight` "1/hour": the model refuses the second request, so the
    key still has one request left for another model."""
    away_from_window_end(3600, 5)
    assert chat(scopes_proxy, "sk-thrifty", "tight").status_code == 200
    assert_rate_limited(chat(scopes_proxy, "sk-thrifty", "tight"))
    other = chat(scopes_proxy, "sk-thrifty", MODEL)
    assert other.status_code == 200, other.text
    assert other.headers["x-ratelimit-remaining-requests"] == "0"


async def test_burst_is_a_token_bucket(scopes_proxy: RunningProxy, fake_openai: FakeOpenAI) -> None:
    """requests "1/second" with burst 3: 3 at once, the 4th refused until one interval has
    passed, then one more (not a whole new window's worth)."""
    async with async_sdk(scopes_proxy, "sk-burst") as c:

        async def one() -> Any:
            try:
                return await c.chat.completions.with_raw_response.create(
                    model=MODEL, messages=USER_MESSAGES
                )
            except openai.RateLimitError as exc:
                return exc

        results = await asyncio.gather(*(one() for _ in range(4)))
        admitted = [r for r in results if not isinstance(r, Exception)]
        refused = [r for r in results if isinstance(r, openai.RateLimitError)]
        assert len(admitted) == 3 and len(refused) == 1, results
        assert {r.headers["x-ratelimit-limit-requests"] for r in admitted} == {"3"}
        assert {r.headers["x-ratelimit-remaining-requests"] for r in admitted} == {"2", "1", "0"}
        for r in admitted:
            duration_seconds(r.headers["x-ratelimit-reset-requests"])
        assert assert_openai_error(refused[0].response.json())["code"] == "rate_limit_exceeded"
        wait = assert_retry_headers(refused[0].response, at_most=1.0)
        assert wait > 0

        await asyncio.sleep(wait + 0.05)
        await c.chat.completions.create(model=MODEL, messages=USER_MESSAGES)  # refilled: one
        with pytest.raises(openai.RateLimitError):
            await c.chat.completions.create(model=MODEL, messages=USER_MESSAGES)
    assert len(fake_openai.chat_requests) == 4


# ---------------------------------------------------------------------------------------------
# Tokens: admitted on what is already charged, charged real usage at the end


def test_tokens_charged_real_usage_json(
    scopes_proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    """tokens "50/hour": a 10-token prompt is admitted; its 106 tokens of real usage fill the
    window, so the NEXT request gets the 429."""
    fake_openai.reply = LONG_REPLY
    with sdk(scopes_proxy, "sk-tokens-json") as c:
        first = c.chat.completions.with_raw_response.create(model=MODEL, messages=USER_MESSAGES)
        assert first.headers["x-ratelimit-limit-tokens"] == "50"
        assert first.headers["x-ratelimit-remaining-tokens"] == "50"  # nothing charged yet
        assert first.parse().usage.total_tokens == 106
        with pytest.raises(openai.RateLimitError) as exc:
            c.chat.completions.create(model=MODEL, messages=USER_MESSAGES)
    assert assert_openai_error(exc.value.response.json())["code"] == "rate_limit_exceeded"
    assert assert_retry_headers(exc.value.response) > 1.0
    assert window(usage_of(scopes_proxy, "sk-tokens-json"), "tokens")["remaining"] == 0
    assert len(fake_openai.chat_requests) == 1


def test_tokens_charged_real_usage_stream(
    scopes_proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    """The same for a stream: the proxy asks the upstream for usage (the client did not) and
    charges it when the stream ends."""
    fake_openai.reply = LONG_REPLY
    with sdk(scopes_proxy, "sk-tokens-stream") as c:
        stream = c.chat.completions.create(model=MODEL, messages=USER_MESSAGES, stream=True)
        chunks = list(stream)
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        assert text == LONG_REPLY
        assert all(ch.usage is None for ch in chunks)  # the usage chunk was not asked for
        assert fake_openai.last_request.json["stream_options"] == {"include_usage": True}

        def charged() -> bool:
            tokens = window(usage_of(scopes_proxy, "sk-tokens-stream"), "tokens")
            return bool(tokens["remaining"] == 0)

        wait_until(charged, what="the stream's usage charged")
        with pytest.raises(openai.RateLimitError) as exc:
            c.chat.completions.create(model=MODEL, messages=USER_MESSAGES, stream=True)
    assert assert_openai_error(exc.value.response.json())["code"] == "rate_limit_exceeded"
    assert len(fake_openai.chat_requests) == 1


# ---------------------------------------------------------------------------------------------
# Model, upstream and route scopes


def test_model_limit_is_shared_by_all_keys(
    scopes_proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    before = metric(scopes_proxy, "llm_proxy_rate_limited_total", scope="model")
    assert chat(scopes_proxy, "sk-shared-a", "shared").status_code == 200
    assert chat(scopes_proxy, "sk-shared-b", "shared").status_code == 200
    for key in ("sk-shared-a", "sk-shared-b"):
        resp = chat(scopes_proxy, key, "shared")
        assert_rate_limited(resp)
        assert_retry_headers(resp)
    assert metric(scopes_proxy, "llm_proxy_rate_limited_total", scope="model") == before + 2
    # the other models are not limited by it
    assert chat(scopes_proxy, "sk-shared-a", MODEL).status_code == 200
    assert len(fake_openai.chat_requests) == 3


def test_upstream_limit_skips_to_the_next_route(
    scopes_proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    """The `quota` upstream takes 1 request an hour, whatever model it serves."""
    before = metric(scopes_proxy, "llm_proxy_rate_limited_total", scope="upstream")
    first = chat(scopes_proxy, "sk-free", "skip-upstream")
    assert first.status_code == 200 and first.headers["x-llm-proxy-route"] == "quota/quota-up"
    second = chat(scopes_proxy, "sk-free", "skip-upstream")
    assert second.status_code == 200, second.text
    assert second.headers["x-llm-proxy-route"] == "fake/spare-up"
    assert second.json()["model"] == "skip-upstream"
    # another model whose only route is on the full upstream: nothing usable is left
    alone = chat(scopes_proxy, "sk-free", "quota-only")
    assert alone.status_code == 503, alone.text
    assert_openai_error(alone.json())
    assert [r.json["model"] for r in fake_openai.chat_requests] == ["quota-up", "spare-up"]
    assert metric(scopes_proxy, "llm_proxy_rate_limited_total", scope="upstream") == before + 2


def test_route_limit_skips_to_the_next_route_then_503(
    scopes_proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    before = metric(scopes_proxy, "llm_proxy_rate_limited_total", scope="route")
    with sdk(scopes_proxy, "sk-free") as c:
        routes = [
            c.chat.completions.with_raw_response.create(
                model="skip-route", messages=USER_MESSAGES
            ).headers["x-llm-proxy-route"]
            for _ in range(2)
        ]
        assert routes == ["fake/first-up", "fake/second-up"]
        with pytest.raises(openai.InternalServerError) as exc:  # every route full: 503
            c.chat.completions.create(model="skip-route", messages=USER_MESSAGES)
    assert exc.value.status_code == 503
    assert_openai_error(exc.value.response.json())
    assert int(exc.value.response.headers["retry-after"]) >= 1
    assert len(fake_openai.chat_requests) == 2
    # skipped: first-up on the 2nd request; first-up and second-up on the 3rd
    assert metric(scopes_proxy, "llm_proxy_rate_limited_total", scope="route") == before + 3
    # a full route is skipped, not failed: no error counted, its breaker stays closed
    for route in ("fake/first-up", "fake/second-up"):
        assert metric(scopes_proxy, "llm_proxy_upstream_errors_total", route=route) == 0
        assert metric(scopes_proxy, "llm_proxy_route_up", route=route) == 1


# ---------------------------------------------------------------------------------------------
# Concurrency: released on completion, error and disconnect


def test_concurrency_released_after_a_disconnect_mid_stream(
    scopes_proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply = LONG_REPLY
    fake_openai.script(slow_stream(0.05))  # ~5 s if read to the end
    with sdk(scopes_proxy, "sk-single") as c:
        stream = c.chat.completions.create(model=MODEL, messages=USER_MESSAGES, stream=True)
        it = iter(stream)
        next(it), next(it)
        assert in_flight(scopes_proxy, "sk-single") == 1
        stream.close()  # the client goes away mid-stream
        wait_until(lambda: in_flight(scopes_proxy, "sk-single") == 0, what="the slot released")
        answer = c.chat.completions.create(model=MODEL, messages=USER_MESSAGES)
    assert answer.choices[0].message.content == LONG_REPLY
    assert fake_openai.chat_requests[0].wait_done()
    assert fake_openai.chat_requests[0].outcome == "cancelled"  # the upstream call was closed


def test_concurrency_released_after_an_error_and_a_json_disconnect(
    scopes_proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(status(500), hang(1.0))
    with sdk(scopes_proxy, "sk-single") as c:
        with pytest.raises(openai.APIStatusError) as exc:
            c.chat.completions.create(model=MODEL, messages=USER_MESSAGES)
        assert exc.value.status_code == 502
        assert in_flight(scopes_proxy, "sk-single") == 0
    with (
        sdk(scopes_proxy, "sk-single", timeout=0.3) as impatient,
        pytest.raises(openai.APITimeoutError),
    ):
        impatient.chat.completions.create(model=MODEL, messages=USER_MESSAGES)
    wait_until(lambda: in_flight(scopes_proxy, "sk-single") == 0, what="the slot released")
    assert chat(scopes_proxy, "sk-single").status_code == 200


# ---------------------------------------------------------------------------------------------
# Headers


def test_rate_limit_headers_on_success(scopes_proxy: RunningProxy, fake_openai: FakeOpenAI) -> None:
    """requests "5/hour", tokens "1000/hour": limit, remaining and reset of each, the token
    window charged the real usage (12) of the first answer, not its estimate (10)."""
    away_from_window_end(3600, 5)
    first = chat(scopes_proxy, "sk-headers")
    second = chat(scopes_proxy, "sk-headers")
    assert first.status_code == second.status_code == 200
    h1, h2 = first.headers, second.headers
    assert (h1["x-ratelimit-limit-requests"], h1["x-ratelimit-remaining-requests"]) == ("5", "4")
    assert (h2["x-ratelimit-limit-requests"], h2["x-ratelimit-remaining-requests"]) == ("5", "3")
    assert (h1["x-ratelimit-limit-tokens"], h1["x-ratelimit-remaining-tokens"]) == ("1000", "1000")
    assert h2["x-ratelimit-remaining-tokens"] == str(1000 - DEFAULT_USAGE)
    for h in (h1, h2):
        assert 0 < duration_seconds(h["x-ratelimit-reset-requests"]) <= 3600
        assert 0 <= duration_seconds(h["x-ratelimit-reset-tokens"]) <= 3600
    assert duration_seconds(h2["x-ratelimit-reset-tokens"]) > 0  # something to give back
    # the upstream's own x-ratelimit-* (the fake sends limit 10000) never reach the client
    plain = chat(scopes_proxy, "sk-free")
    assert plain.status_code == 200
    assert not [name for name in plain.headers if name.startswith("x-ratelimit-")]


def test_rate_limit_headers_on_429(scopes_proxy: RunningProxy, fake_openai: FakeOpenAI) -> None:
    away_from_window_end(3600, 5)
    assert chat(scopes_proxy, "sk-headers-429").status_code == 200
    refused = chat(scopes_proxy, "sk-headers-429")
    assert_rate_limited(refused)
    wait = assert_retry_headers(refused)
    h = refused.headers
    assert (h["x-ratelimit-limit-requests"], h["x-ratelimit-remaining-requests"]) == ("1", "0")
    assert duration_seconds(h["x-ratelimit-reset-requests"]) == pytest.approx(wait, abs=1.0)
    assert h["x-ratelimit-limit-tokens"] == "1000"
    assert h["x-ratelimit-remaining-tokens"] == str(1000 - DEFAULT_USAGE)
    duration_seconds(h["x-ratelimit-reset-tokens"])


# ---------------------------------------------------------------------------------------------
# /v1/proxy/keys/me, spend, budgets


def test_keys_me_reports_limits_concurrency_and_budget(
    scopes_proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    away_from_window_end(3600, 5)
    fresh = usage_of(scopes_proxy, "sk-me")
    assert fresh["key"] == "me"
    assert window(fresh, "requests") == {
        "kind": "requests", "limit": 10, "remaining": 10, "reset_seconds": 0
    }  # fmt: skip
    assert fresh["concurrency"] == {"limit": 2, "in_flight": 0}
    assert fresh["budget"]["spent_usd"] == 0 and fresh["budget"]["remaining_usd"] == 5

    assert chat(scopes_proxy, "sk-me").status_code == 200  # scoped-up: $1000 / M tokens
    fake_openai.reply = LONG_REPLY
    fake_openai.script(slow_stream(0.05))
    with sdk(scopes_proxy, "sk-me") as c:
        stream = c.chat.completions.create(model=MODEL, messages=USER_MESSAGES, stream=True)
        next(iter(stream))
        during = usage_of(scopes_proxy, "sk-me")
        stream.close()
    assert during["concurrency"] == {"limit": 2, "in_flight": 1}
    requests, tokens = window(during, "requests"), window(during, "tokens")
    assert (requests["limit"], requests["remaining"]) == (10, 8)
    assert 0 < requests["reset_seconds"] <= 3600
    assert (tokens["limit"], tokens["remaining"]) == (1000, 1000 - DEFAULT_USAGE)
    spent = DEFAULT_USAGE * 1000 / 1_000_000
    now = datetime.now(UTC)
    next_month = (now.replace(day=1) + timedelta(days=32)).replace(day=1)
    assert during["budget"] == {
        "usd": 5,
        "period": "month",
        "spent_usd": pytest.approx(spent),
        "remaining_usd": pytest.approx(5 - spent),
        "resets_at": next_month.strftime("%Y-%m-%dT00:00:00+00:00"),
    }
    wait_until(lambda: in_flight(scopes_proxy, "sk-me") == 0, what="the stream's slot released")

    # a key with nothing configured; no key or a wrong one: 401
    assert usage_of(scopes_proxy, "sk-free") == {"key": "free", "limits": []}
    for key in (None, "sk-nobody"):
        resp = key_usage(scopes_proxy, key)
        assert resp.status_code == 401
        assert assert_openai_error(resp.json())["type"] == "authentication_error"


def test_keys_me_reports_the_burst_bucket(scopes_proxy: RunningProxy) -> None:
    report = usage_of(scopes_proxy, "sk-burst")
    assert [w for w in report["limits"] if w["kind"] == "requests"], report


def test_spend_metric_and_budget_after_priced_usage(
    scopes_proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    """prices are USD per million tokens, keyed by the upstream model; a route's own price
    wins over them; an unpriced model costs nothing."""
    with sdk(scopes_proxy, "sk-spender") as c:
        for model in ("priced", "route-priced", "unpriced"):
            c.chat.completions.create(model=model, messages=USER_MESSAGES)
    priced = (6 * 1000 + 6 * 2000) / 1_000_000
    route_priced = (6 * 5000 + 6 * 10000) / 1_000_000
    spend = "llm_proxy_spend_usd_total"
    assert metric(scopes_proxy, spend, key="spender", model="priced") == pytest.approx(priced)
    assert metric(scopes_proxy, spend, key="spender", model="route-priced") == pytest.approx(
        route_priced
    )
    assert metric(scopes_proxy, spend, key="spender", model="unpriced") == 0
    budget = usage_of(scopes_proxy, "sk-spender")["budget"]
    assert budget["spent_usd"] == pytest.approx(priced + route_priced)
    assert budget["remaining_usd"] == pytest.approx(10 - priced - route_priced)
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    assert budget["resets_at"] == f"{tomorrow.isoformat()}T00:00:00+00:00"


def restart_policy(base_url: str) -> dict[str, Any]:
    return tuned(
        {
            "upstreams": {"fake": upstream(base_url)},
            "models": {MODEL: {"routes": [{"upstream": "fake", "model": "saver-up"}]}},
            "keys": [{"name": "saver", "key": "sk-saver", "budget": {"usd": 1, "period": "day"}}],
            # $50,000 per million tokens: a default exchange (12 tokens) costs $0.60
            "prices": {"saver-up": {"input": 50_000, "output": 50_000}},
        }
    )


def test_budget_survives_a_restart_with_memory_storage(
    module_proxies: dict[str, tuple[ProxyLauncher, RunningProxy]], fake_openai: FakeOpenAI
) -> None:
    launcher, first = module_proxies["saver"]
    assert chat(first, "sk-saver").status_code == 200
    assert usage_of(first, "sk-saver")["budget"]["spent_usd"] == pytest.approx(0.6)
    first.stop()
    saved = json.loads((launcher.workdir / ".cache" / "llm-proxy" / "spend.json").read_text())
    assert any(name.startswith("saver:day:") for name in saved), saved

    second = launcher.start(first.policy)  # the same working directory
    assert usage_of(second, "sk-saver")["budget"]["spent_usd"] == pytest.approx(0.6)
    assert chat(second, "sk-saver").status_code == 200  # $0.60 < $1: admitted, now $1.20
    refused = chat(second, "sk-saver")
    assert_rate_limited(refused, "insufficient_quota")
    assert refused.headers["x-should-retry"] == "false"
    assert len(fake_openai.chat_requests) == 2


# ---------------------------------------------------------------------------------------------
# Environment overrides


def anonymous_policy(base_url: str) -> dict[str, Any]:
    return tuned(
        {
            "upstreams": {"fake": upstream(base_url)},
            "models": {MODEL: {"routes": [{"upstream": "fake", "model": "anon-up"}]}},
            "limits": {"default": {"requests": "100/second"}},
        }
    )


def test_default_limit_env_overrides_apply_to_anonymous(
    module_proxies: dict[str, tuple[ProxyLauncher, RunningProxy]], fake_openai: FakeOpenAI
) -> None:
    """No keys: every caller is anonymous. The file's limits.default (100/second) is replaced
    by DEFAULT_RATE_LIMIT=1 (per second) with DEFAULT_BURST_LIMIT=2 (ENV_OVERRIDES)."""
    proxy = module_proxies["anonymous"][1]

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=20) as client:
            payload = {"model": MODEL, "messages": USER_MESSAGES}
            return list(
                await asyncio.gather(
                    *(
                        client.post(
                            f"{proxy.base_url}/chat/completions",
                            json=payload,
                            headers={"Authorization": f"Bearer whatever-{i}"},
                        )
                        for i in range(3)
                    )
                )
            )

    results = sorted(asyncio.run(burst()), key=lambda r: r.status_code)
    assert [r.status_code for r in results] == [200, 200, 429]
    assert {r.headers["x-ratelimit-limit-requests"] for r in results[:2]} == {"2"}
    assert_rate_limited(results[2])
    time.sleep(assert_retry_headers(results[2], at_most=1.0) + 0.05)
    assert chat(proxy, "anyone").status_code == 200  # one slot back after one interval
    assert_rate_limited(chat(proxy, "anyone"))
    assert len(fake_openai.chat_requests) == 3
