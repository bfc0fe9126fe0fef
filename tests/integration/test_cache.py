"""The response cache through the running proxy (docs/semantics.md, "Cache key" and "Token
accounting"), with the official SDK against the fake upstream that counts its calls.

Most tests share one proxy on the default backend (disk, in its own working directory); each
test asks something no other test asks (a nonce in the message), so entries never collide.
Tests of restarts, sizes, Redis and the environment start proxies of their own.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fakes.openai_upstream import (
    DEFAULT_REPLY,
    TOOL_ARGUMENTS,
    Behaviour,
    FakeOpenAI,
    drop_after,
    end_after,
    error_event_after,
    garbage,
    hang,
    status,
)
from fakes.proxy_harness import UPSTREAM_KEY, ProxyLauncher, RunningProxy
from fakes.redis_server import RedisServer, command, redis_available

from .conftest import WEATHER_TOOL

KEY_A = "sk-cache-team-a"
KEY_B = "sk-cache-team-b"
KEY_METERED = "sk-cache-metered"
CACHE_HEADER = "x-llm-proxy-cache"
# 80 characters: 4 replayed content chunks of 24 characters at most
LONG_REPLY = "The cached answer comes back in several pieces when it is replayed as a stream."
# A fill is written just after the answer is sent: give it a moment before asking again.
FILL_SETTLE = 0.05


def cache_policy(base_url: str, **cache: Any) -> dict[str, Any]:
    upstream = {"type": "openai", "base_url": base_url, "api_key": UPSTREAM_KEY}

    def route(model: str) -> list[dict[str, str]]:
        return [{"upstream": "fake", "model": model}]

    return {
        "server": {"drain_timeout": 0},  # stops at once: nothing here drains
        "upstreams": {"fake": upstream},
        "models": {
            "cached": {"routes": route("up-cached")},
            "other": {"routes": route("up-other")},
            "any-temp": {"routes": route("up-any"), "cache": {"deterministic_only": False}},
            "short-ttl": {"routes": route("up-short"), "cache": {"ttl": 1}},
            "uncached": {"routes": route("up-uncached"), "cache": False},
            "slow-leader": {"routes": route("up-slow"), "timeout": {"total": 0.5}},
        },
        "keys": [
            {"name": "team-a", "key": KEY_A},
            {"name": "team-b", "key": KEY_B},
            {
                "name": "metered",
                "key": KEY_METERED,
                "limits": {"requests": "1000/hour", "tokens": "1000000/hour"},
                "budget": {"usd": 1000, "period": "day"},
            },
        ],
        # USD per million tokens: every answer of the fake costs a visible amount
        "prices": {"up-cached": {"input": 1000, "output": 1000}},
        "retry": {"attempts": 1, "initial_delay": 0.01, "max_delay": 0.05, "deadline": 30},
        "circuit_breaker": {"failures": 1000},
        "cache": {"backend": "disk", "ttl": 600, **cache},
    }


@pytest.fixture(scope="module")
def cache_proxy(
    tmp_path_factory: pytest.TempPathFactory, fake_openai_server: FakeOpenAI
) -> Iterator[RunningProxy]:
    launcher = ProxyLauncher(tmp_path_factory.mktemp("cache-proxy"))
    yield launcher.start(cache_policy(fake_openai_server.base_url))
    launcher.close()


@pytest.fixture(scope="module")
def shared_proxy(
    tmp_path_factory: pytest.TempPathFactory, fake_openai_server: FakeOpenAI
) -> Iterator[RunningProxy]:
    """One namespace for every key, and hits that do not count against request limits."""
    launcher = ProxyLauncher(tmp_path_factory.mktemp("shared-cache-proxy"))
    policy = cache_policy(
        fake_openai_server.base_url,
        backend="memory",
        shared_across_keys=True,
        count_hits_in_request_limits=False,
    )
    yield launcher.start(policy)
    launcher.close()


def sdk(proxy: RunningProxy, key: str = KEY_A) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key=key, max_retries=0, timeout=20)


def async_sdk(proxy: RunningProxy, key: str = KEY_A) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=proxy.base_url, api_key=key, max_retries=0, timeout=20)


@pytest.fixture
def client(cache_proxy: RunningProxy) -> Iterator[openai.OpenAI]:
    with sdk(cache_proxy) as c:
        yield c


def fresh(tag: str = "question") -> list[dict[str, str]]:
    """A question no other request asked."""
    return [{"role": "user", "content": f"{tag} {time.time_ns()}"}]


def settle() -> None:
    time.sleep(FILL_SETTLE)


def ask(
    client: openai.OpenAI,
    messages: list[dict[str, str]],
    model: str = "cached",
    **params: Any,
) -> tuple[str, Any]:
    """(x-llm-proxy-cache, the parsed completion) of one JSON request."""
    params.setdefault("temperature", 0)
    raw = client.chat.completions.with_raw_response.create(model=model, messages=messages, **params)
    answer = raw.parse()
    settle()
    return raw.headers[CACHE_HEADER], answer


def calls(fake: FakeOpenAI) -> int:
    return len(fake.chat_requests)


def metric(proxy: RunningProxy, name: str, **labels: str) -> float:
    """One sample of /metrics; 0 when absent (a counter never incremented)."""
    text = httpx.get(f"{proxy.url}/metrics", timeout=5).text
    for line in text.splitlines():
        if not line.startswith((name + "{", name + " ")):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def post(
    proxy: RunningProxy, content: bytes | str, key: str = KEY_A, **headers: str
) -> httpx.Response:
    return httpx.post(
        f"{proxy.base_url}/chat/completions",
        content=content,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json", **headers},
        timeout=20,
    )


def sse_events(
    proxy: RunningProxy, body: dict[str, Any], key: str = KEY_A
) -> tuple[httpx.Headers, list[Any]]:
    """The headers and every `data:` payload of a streamed answer (`[DONE]` kept as text)."""
    events: list[Any] = []
    with httpx.stream(
        "POST",
        f"{proxy.base_url}/chat/completions",
        json={**body, "stream": True},
        headers={"Authorization": f"Bearer {key}"},
        timeout=20,
    ) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data:"):
                data = line[5:].strip()
                events.append(data if data == "[DONE]" else json.loads(data))
    settle()
    return response.headers, events


def reversed_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: reversed_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reversed_keys(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# Hit, miss, bypass


def test_miss_then_hit(
    client: openai.OpenAI, cache_proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    hits = metric(cache_proxy, "llm_proxy_cache_requests_total", result="hit")
    misses = metric(cache_proxy, "llm_proxy_cache_requests_total", result="miss")
    messages = fresh()
    first = client.chat.completions.with_raw_response.create(
        model="cached", messages=messages, temperature=0
    )
    settle()
    second = client.chat.completions.with_raw_response.create(
        model="cached", messages=messages, temperature=0
    )
    assert (first.headers[CACHE_HEADER], second.headers[CACHE_HEADER]) == ("miss", "hit")
    assert calls(fake_openai) == 1
    assert second.parse().model_dump() == first.parse().model_dump()  # the same answer, id too
    assert second.parse().model == "cached"
    assert second.headers["x-llm-proxy-attempts"] == "0"
    assert second.headers["x-llm-proxy-route"] == first.headers["x-llm-proxy-route"]
    assert second.headers["content-type"].startswith("application/json")
    assert metric(cache_proxy, "llm_proxy_cache_requests_total", result="hit") == hits + 1
    assert metric(cache_proxy, "llm_proxy_cache_requests_total", result="miss") == misses + 1


def test_bypass_is_counted_and_said(
    client: openai.OpenAI, cache_proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    bypasses = metric(cache_proxy, "llm_proxy_cache_requests_total", result="bypass")
    messages = fresh()
    results = [ask(client, messages, temperature=0.8)[0] for _ in range(2)]
    assert results == ["bypass", "bypass"]
    assert calls(fake_openai) == 2
    assert metric(cache_proxy, "llm_proxy_cache_requests_total", result="bypass") == bypasses + 2


def test_error_responses_say_the_cache_result_too(
    client: openai.OpenAI, cache_proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(status(500))
    with pytest.raises(openai.APIStatusError) as failed:
        client.chat.completions.create(model="cached", messages=fresh(), temperature=0)
    assert failed.value.status_code == 502
    assert failed.value.response.headers[CACHE_HEADER] == "miss"
    with (
        sdk(cache_proxy, key="sk-not-a-key") as stranger,
        pytest.raises(openai.AuthenticationError) as refused,
    ):
        stranger.chat.completions.create(model="cached", messages=fresh(), temperature=0)
    assert refused.value.response.headers[CACHE_HEADER] == "bypass"


def test_the_key_ignores_json_key_order_and_whitespace(
    cache_proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    data = {
        "model": "cached",
        "messages": [{"role": "user", "content": fresh()[0]["content"], "name": "tester"}],
        "temperature": 0,
        "max_tokens": 64,
        "response_format": {"type": "text"},
    }
    compact = json.dumps(data, separators=(",", ":"))
    pretty = json.dumps(reversed_keys(data), indent=3)
    first, second = post(cache_proxy, compact), post(cache_proxy, "\n" + pretty + "\n")
    assert (first.status_code, second.status_code) == (200, 200)
    assert (first.headers[CACHE_HEADER], second.headers[CACHE_HEADER]) == ("miss", "hit")
    assert second.json() == first.json()
    assert calls(fake_openai) == 1


def test_fields_that_never_change_the_answer_still_hit(
    cache_proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    data = {"model": "cached", "messages": fresh(), "temperature": 0}
    assert post(cache_proxy, json.dumps(data)).headers[CACHE_HEADER] == "miss"
    settle()
    extras = {"user": "end-user-7", "metadata": {"team": "blue"}, "store": False}
    again = post(cache_proxy, json.dumps({**data, **extras}))
    assert again.headers[CACHE_HEADER] == "hit"
    assert calls(fake_openai) == 1


@pytest.mark.parametrize(
    "extra",
    [{"top_p": 0.5}, {"max_tokens": 7}, {"n": 2}, {"a_field_from_next_year": True}],
    ids=lambda extra: next(iter(extra)),
)
def test_every_other_field_is_part_of_the_key(
    cache_proxy: RunningProxy, fake_openai: FakeOpenAI, extra: dict[str, Any]
) -> None:
    data = {"model": "cached", "messages": fresh(), "temperature": 0}
    assert post(cache_proxy, json.dumps(data)).headers[CACHE_HEADER] == "miss"
    settle()
    other = post(cache_proxy, json.dumps({**data, **extra}))
    assert other.status_code == 200, other.text
    assert other.headers[CACHE_HEADER] == "miss"
    assert calls(fake_openai) == 2


def test_the_model_is_part_of_the_key(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    messages = fresh()
    assert ask(client, messages, model="cached")[0] == "miss"
    assert ask(client, messages, model="other")[0] == "miss"
    assert ask(client, messages, model="other")[0] == "hit"
    assert [r.json["model"] for r in fake_openai.chat_requests] == ["up-cached", "up-other"]


def test_entries_expire_after_their_ttl(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    """`short-ttl` has `cache: {ttl: 1}`."""
    messages = fresh()
    assert ask(client, messages, model="short-ttl")[0] == "miss"
    assert ask(client, messages, model="short-ttl")[0] == "hit"
    time.sleep(1.2)
    assert ask(client, messages, model="short-ttl")[0] == "miss"
    assert calls(fake_openai) == 2


# ---------------------------------------------------------------------------------------------
# Who may see an entry


def test_one_key_never_sees_another_keys_answers(
    cache_proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    messages = fresh()
    with sdk(cache_proxy, KEY_A) as a, sdk(cache_proxy, KEY_B) as b:
        assert ask(a, messages)[0] == "miss"
        assert ask(b, messages)[0] == "miss"
        assert ask(a, messages)[0] == "hit"
        assert ask(b, messages)[0] == "hit"
    assert calls(fake_openai) == 2


def test_shared_across_keys_shares_entries(
    shared_proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    messages = fresh()
    with sdk(shared_proxy, KEY_A) as a, sdk(shared_proxy, KEY_B) as b:
        assert ask(a, messages)[0] == "miss"
        assert ask(b, messages)[0] == "hit"
        assert ask(a, messages)[0] == "hit"
    assert calls(fake_openai) == 1


# ---------------------------------------------------------------------------------------------
# Which requests are cached


@pytest.mark.parametrize(
    ("model", "params", "cached"),
    [
        ("cached", {"temperature": 0}, True),
        ("cached", {"seed": 42}, True),
        ("cached", {"temperature": 0.9, "seed": 42}, True),
        ("cached", {}, False),
        ("cached", {"temperature": 0.7}, False),
        ("any-temp", {"temperature": 0.9}, True),  # cache: {deterministic_only: false}
        ("any-temp", {}, True),
        ("uncached", {"temperature": 0}, False),  # cache: false
    ],
)
def test_deterministic_only(
    client: openai.OpenAI,
    fake_openai: FakeOpenAI,
    model: str,
    params: dict[str, Any],
    cached: bool,
) -> None:
    messages = fresh()
    kwargs = {"temperature": openai.NOT_GIVEN, **params}
    results = [ask(client, messages, model=model, **kwargs)[0] for _ in range(2)]
    if cached:
        assert results == ["miss", "hit"]
        assert calls(fake_openai) == 1
    else:
        assert results == ["bypass", "bypass"]
        assert calls(fake_openai) == 2


# ---------------------------------------------------------------------------------------------
# Streams: filled from either kind of answer, replayed as either kind


def test_a_streamed_fill_is_served_as_json(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.reply = LONG_REPLY
    messages = fresh()
    raw = client.chat.completions.with_raw_response.create(
        model="cached", messages=messages, temperature=0, stream=True
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    settle()
    assert raw.headers[CACHE_HEADER] == "miss"
    assert streamed == LONG_REPLY
    result, answer = ask(client, messages)
    assert result == "hit"
    assert answer.object == "chat.completion"
    assert answer.model == "cached"
    assert answer.choices[0].message.content == LONG_REPLY
    assert answer.choices[0].finish_reason == "stop"
    # the client did not ask for usage, the proxy did: the entry has the original counts
    assert answer.usage is not None
    assert answer.usage.model_dump(exclude_none=True) == fake_openai.chat_requests[0].usage
    assert calls(fake_openai) == 1


def test_a_json_fill_is_replayed_as_a_valid_stream(
    cache_proxy: RunningProxy, client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply = LONG_REPLY
    messages = fresh()
    _, original = ask(client, messages)
    body = {"model": "cached", "messages": messages, "temperature": 0}

    headers, events = sse_events(cache_proxy, {**body, "stream_options": {"include_usage": True}})
    assert headers[CACHE_HEADER] == "hit"
    assert headers["content-type"].startswith("text/event-stream")
    assert int(headers["content-length"]) > 0  # known whole: one body, not chunked
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "cached" for c in chunks)
    role, *content, finish, usage = chunks
    assert role["choices"][0]["delta"]["role"] == "assistant"
    pieces = [c["choices"][0]["delta"]["content"] for c in content]
    assert len(pieces) >= 3 and "".join(pieces) == LONG_REPLY
    assert all(c["choices"][0]["finish_reason"] is None for c in [role, *content])
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert usage["choices"] == []
    assert usage["usage"] == original.usage.model_dump(exclude_none=True)

    headers, events = sse_events(cache_proxy, body)  # no usage asked: no usage chunk
    assert headers[CACHE_HEADER] == "hit"
    assert events[-1] == "[DONE]"
    assert all(c["choices"] and not c.get("usage") for c in events[:-1])

    # the SDK's stream helper accumulates the same message
    with client.chat.completions.stream(model="cached", messages=messages, temperature=0) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == original.choices[0].message.content
    assert final.choices[0].finish_reason == "stop"
    assert final.id == original.id
    assert calls(fake_openai) == 1


def test_tool_calls_survive_both_ways(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    tools: Any = [WEATHER_TOOL]
    json_first = fresh("weather")
    _, original = ask(client, json_first, tools=tools)
    want = original.choices[0].message.tool_calls
    assert want and json.loads(want[0].function.arguments) == TOOL_ARGUMENTS
    with client.chat.completions.stream(
        model="cached", messages=json_first, temperature=0, tools=tools
    ) as stream:
        final = stream.get_final_completion()
    got = final.choices[0].message.tool_calls
    assert got is not None
    assert [(c.id, c.function.name, c.function.arguments) for c in got] == [
        (c.id, c.function.name, c.function.arguments) for c in want
    ]
    assert final.choices[0].finish_reason == "tool_calls"

    stream_first = fresh("weather")
    chunks = list(
        client.chat.completions.create(
            model="cached", messages=stream_first, temperature=0, tools=tools, stream=True
        )
    )
    settle()
    streamed_id = next(
        c.choices[0].delta.tool_calls[0].id
        for c in chunks
        if c.choices and c.choices[0].delta.tool_calls
    )
    result, answer = ask(client, stream_first, tools=tools)
    assert result == "hit"
    call = answer.choices[0].message.tool_calls[0]
    assert (call.id, call.function.name) == (streamed_id, "get_weather")
    assert json.loads(call.function.arguments) == TOOL_ARGUMENTS
    assert answer.choices[0].finish_reason == "tool_calls"
    assert calls(fake_openai) == 2


def test_several_choices_survive_a_streamed_fill(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    messages = fresh()
    list(
        client.chat.completions.create(
            model="cached", messages=messages, temperature=0, n=2, stream=True
        )
    )
    settle()
    result, answer = ask(client, messages, n=2)
    assert result == "hit"
    assert [c.message.content for c in answer.choices] == [DEFAULT_REPLY, f"{DEFAULT_REPLY} #1"]
    assert calls(fake_openai) == 1


# ---------------------------------------------------------------------------------------------
# Cache-Control from the client


def test_no_cache_refreshes_the_entry(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    messages = fresh()
    assert ask(client, messages)[0] == "miss"
    fake_openai.reply = "A newer answer"
    result, answer = ask(client, messages, extra_headers={"Cache-Control": "no-cache"})
    assert result == "miss"
    assert answer.choices[0].message.content == "A newer answer"
    result, answer = ask(client, messages)  # the refreshed answer was stored
    assert result == "hit"
    assert answer.choices[0].message.content == "A newer answer"
    assert calls(fake_openai) == 2


def test_no_store_bypasses_both_ways(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    messages = fresh()
    no_store = {"Cache-Control": "no-store"}
    assert ask(client, messages, extra_headers=no_store)[0] == "bypass"
    assert ask(client, messages)[0] == "miss"  # the no-store answer was not written
    assert ask(client, messages, extra_headers=no_store)[0] == "bypass"  # nor read
    assert ask(client, messages)[0] == "hit"
    assert calls(fake_openai) == 3


def test_max_age_accepts_only_younger_entries(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    messages = fresh()
    assert ask(client, messages)[0] == "miss"
    time.sleep(1.1)
    assert ask(client, messages, extra_headers={"Cache-Control": "max-age=60"})[0] == "hit"
    assert ask(client, messages, extra_headers={"Cache-Control": "max-age=1"})[0] == "miss"
    assert calls(fake_openai) == 2


# ---------------------------------------------------------------------------------------------
# Failures are never cached


@pytest.mark.parametrize(
    "failure",
    [status(500), status(400), garbage()],
    ids=["500", "400", "garbage"],
)
def test_errors_are_never_cached(
    client: openai.OpenAI, fake_openai: FakeOpenAI, failure: Behaviour
) -> None:
    messages = fresh()
    fake_openai.script(failure)
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="cached", messages=messages, temperature=0)
    settle()
    assert ask(client, messages)[0] == "miss"
    assert ask(client, messages)[0] == "hit"
    assert calls(fake_openai) == 2


@pytest.mark.parametrize(
    "failure",
    [drop_after(3), end_after(3), error_event_after(3)],
    ids=["connection-dropped", "ended-early", "error-event"],
)
def test_truncated_streams_are_never_cached(
    cache_proxy: RunningProxy, client: openai.OpenAI, fake_openai: FakeOpenAI, failure: Behaviour
) -> None:
    messages = fresh()
    fake_openai.script(failure)
    _, events = sse_events(cache_proxy, {"model": "cached", "messages": messages, "temperature": 0})
    assert events[-1] == "[DONE]"
    assert "error" in events[-2]  # the in-band error
    assert ask(client, messages)[0] == "miss"
    assert ask(client, messages)[0] == "hit"
    assert calls(fake_openai) == 2


# ---------------------------------------------------------------------------------------------
# Single flight


async def test_concurrent_identical_requests_make_one_upstream_call(
    cache_proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    fake_openai.default = hang(0.8)  # slow: the 20 requests overlap
    messages = fresh()
    async with async_sdk(cache_proxy) as client:
        raws = await asyncio.gather(
            *(
                client.chat.completions.with_raw_response.create(
                    model="cached", messages=messages, temperature=0
                )
                for _ in range(20)
            )
        )
    assert calls(fake_openai) == 1
    assert sorted(r.headers[CACHE_HEADER] for r in raws) == ["hit"] * 19 + ["miss"]
    answers = {r.parse().model_dump_json() for r in raws}
    assert len(answers) == 1


async def test_stream_and_json_followers_share_one_leader(
    cache_proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    fake_openai.default = hang(0.6)
    fake_openai.reply = LONG_REPLY
    messages = fresh()

    async def streamed(client: openai.AsyncOpenAI) -> str:
        stream = await client.chat.completions.create(
            model="cached", messages=messages, temperature=0, stream=True
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    async def plain(client: openai.AsyncOpenAI) -> str:
        answer = await client.chat.completions.create(
            model="cached", messages=messages, temperature=0
        )
        return answer.choices[0].message.content or ""

    async with async_sdk(cache_proxy) as client:
        texts = await asyncio.gather(*(f(client) for f in [streamed, plain] * 4))
    assert texts == [LONG_REPLY] * 8
    assert calls(fake_openai) == 1


async def test_followers_go_on_their_own_when_the_leader_fails(
    cache_proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    """`slow-leader` times out after 0.5 s: the first call outlives that, the others answer."""
    fake_openai.script(hang(1.5))
    messages = fresh()
    async with async_sdk(cache_proxy) as client:

        async def one() -> Any:
            return await client.chat.completions.create(
                model="slow-leader", messages=messages, temperature=0
            )

        leader = asyncio.ensure_future(one())
        await asyncio.to_thread(fake_openai.wait_for_requests, 1)
        followers = await asyncio.gather(*(one() for _ in range(4)), return_exceptions=True)
        with pytest.raises(openai.APIStatusError) as failed:
            await leader
    assert failed.value.status_code == 504
    assert all(not isinstance(f, BaseException) for f in followers), followers
    assert {f.choices[0].message.content for f in followers} == {DEFAULT_REPLY}
    assert calls(fake_openai) >= 2


# ---------------------------------------------------------------------------------------------
# Accounting: hits count as requests, not tokens or spend


def usage_of(proxy: RunningProxy, key: str) -> dict[str, Any]:
    resp = httpx.get(
        f"{proxy.base_url}/proxy/keys/me", headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    assert resp.status_code == 200, resp.text
    report: dict[str, Any] = resp.json()
    return report


def remaining(report: dict[str, Any], kind: str) -> int:
    (found,) = [w["remaining"] for w in report["limits"] if w["kind"] == kind]
    return int(found)


def test_hits_keep_the_original_usage_and_charge_only_request_limits(
    cache_proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    messages = fresh("metered")
    before = usage_of(cache_proxy, KEY_METERED)
    with sdk(cache_proxy, KEY_METERED) as client:
        assert ask(client, messages)[0] == "miss"
        after_miss = usage_of(cache_proxy, KEY_METERED)
        result, answer = ask(client, messages)
        assert result == "hit"
        after_hit = usage_of(cache_proxy, KEY_METERED)
    original = fake_openai.chat_requests[0].usage
    assert original and original["total_tokens"] > 0
    assert answer.usage is not None and answer.usage.model_dump(exclude_none=True) == original

    spent = after_miss["budget"]["spent_usd"]
    assert spent > before["budget"]["spent_usd"]
    assert after_hit["budget"]["spent_usd"] == spent  # no spend
    assert remaining(after_miss, "tokens") < remaining(before, "tokens")
    assert remaining(after_hit, "tokens") == remaining(after_miss, "tokens")  # no tokens
    assert remaining(after_hit, "requests") == remaining(after_miss, "requests") - 1

    headers, events = sse_events(
        cache_proxy,
        {
            "model": "cached",
            "messages": messages,
            "temperature": 0,
            "stream_options": {"include_usage": True},
        },
        key=KEY_METERED,
    )
    assert headers[CACHE_HEADER] == "hit"
    assert events[-2]["usage"] == original
    after_stream = usage_of(cache_proxy, KEY_METERED)
    assert after_stream["budget"]["spent_usd"] == spent
    assert remaining(after_stream, "tokens") == remaining(after_miss, "tokens")
    assert remaining(after_stream, "requests") == remaining(after_miss, "requests") - 2
    assert calls(fake_openai) == 1


def test_hits_can_be_left_out_of_request_limits(
    shared_proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    """`count_hits_in_request_limits: false` on this proxy."""
    messages = fresh("metered")
    with sdk(shared_proxy, KEY_METERED) as client:
        assert ask(client, messages)[0] == "miss"
        after_miss = usage_of(shared_proxy, KEY_METERED)
        assert ask(client, messages)[0] == "hit"
        after_hit = usage_of(shared_proxy, KEY_METERED)
    assert remaining(after_hit, "requests") == remaining(after_miss, "requests")
    assert after_hit["budget"]["spent_usd"] == after_miss["budget"]["spent_usd"]


# ---------------------------------------------------------------------------------------------
# Backends: disk across restarts and bounded, Redis shared and fault tolerant


def test_a_restart_keeps_disk_entries(
    start_proxy: Any, tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    policy = cache_policy(fake_openai.base_url)
    del policy["cache"]["backend"]  # the default: disk, under the working directory
    messages = fresh()
    first = start_proxy(policy)
    with sdk(first) as client:
        assert ask(client, messages)[0] == "miss"
    first.stop()
    assert (tmp_path / ".cache" / "llm-proxy").is_dir()
    second = start_proxy(policy)
    with sdk(second) as client:
        result, answer = ask(client, messages)
    assert result == "hit"
    assert answer.choices[0].message.content == DEFAULT_REPLY
    assert calls(fake_openai) == 1


@pytest.mark.parametrize(
    ("backend", "max_size", "fills"), [("memory", "4KiB", 12), ("disk", "48KiB", 40)]
)
def test_max_size_evicts_the_oldest_entries(
    start_proxy: Any, fake_openai: FakeOpenAI, backend: str, max_size: str, fills: int
) -> None:
    proxy = start_proxy(cache_policy(fake_openai.base_url, backend=backend, max_size=max_size))
    nonce = time.time_ns()
    questions = [[{"role": "user", "content": f"fill {nonce} {i}"}] for i in range(fills)]
    with sdk(proxy) as client:
        for messages in questions:
            raw = client.chat.completions.with_raw_response.create(
                model="cached", messages=messages, temperature=0
            )
            assert raw.headers[CACHE_HEADER] == "miss"
        settle()
        assert ask(client, questions[-1])[0] == "hit"  # the newest stayed
        assert ask(client, questions[0])[0] == "miss"  # the oldest went
    assert calls(fake_openai) == fills + 1


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if not redis_available():
        pytest.skip("redis-server is not installed")
    with RedisServer(tmp_path / "redis") as server:
        yield server


def test_two_proxies_share_the_redis_cache(
    start_proxy: Any, redis_server: RedisServer, fake_openai: FakeOpenAI
) -> None:
    by_policy = cache_policy(fake_openai.base_url, backend="redis", url=redis_server.url)
    a = start_proxy(by_policy)
    # the other replica names disk in its file; REDIS_URL moves its cache to Redis
    b = start_proxy(cache_policy(fake_openai.base_url), env={"REDIS_URL": redis_server.url})
    one, two = fresh(), fresh()
    with sdk(a) as client_a, sdk(b) as client_b:
        assert ask(client_a, one)[0] == "miss"
        assert ask(client_b, one)[0] == "hit"
        assert ask(client_b, two)[0] == "miss"
        assert ask(client_a, two)[0] == "hit"
    assert calls(fake_openai) == 2
    stored = command(redis_server.port, "KEYS", "llm-proxy:cache:*")
    assert stored.startswith(b"*2\r\n"), stored  # two entries, under the cache's prefix
    name = re.findall(rb"(llm-proxy:cache:[0-9a-f]{64})", stored)[0].decode()
    ttl_ms = int(command(redis_server.port, "PTTL", name)[1:].strip())
    assert 590_000 < ttl_ms <= 600_000  # the TTL lives in Redis


def test_redis_down_serves_uncached_and_counts(
    start_proxy: Any, redis_server: RedisServer, fake_openai: FakeOpenAI
) -> None:
    proxy = start_proxy(cache_policy(fake_openai.base_url, backend="redis", url=redis_server.url))
    messages = fresh()
    with sdk(proxy) as client:
        assert ask(client, messages)[0] == "miss"
        assert ask(client, messages)[0] == "hit"
        errors = metric(proxy, "llm_proxy_storage_errors_total", store="cache")
        redis_server.stop()
        for _ in range(2):
            started = time.monotonic()
            result, answer = ask(client, messages)
            assert time.monotonic() - started < 2.0
            assert result == "miss"
            assert answer.choices[0].message.content == DEFAULT_REPLY
        assert calls(fake_openai) == 3  # served, uncached
        assert metric(proxy, "llm_proxy_storage_errors_total", store="cache") >= errors + 2
        redis_server.start()  # back, empty: caching resumes by itself
        assert ask(client, messages)[0] == "miss"
        assert ask(client, messages)[0] == "hit"
    assert calls(fake_openai) == 4


# ---------------------------------------------------------------------------------------------
# Environment overrides


def test_cache_enabled_false_turns_the_cache_off(start_proxy: Any, fake_openai: FakeOpenAI) -> None:
    proxy = start_proxy(cache_policy(fake_openai.base_url), env={"CACHE_ENABLED": "false"})
    messages = fresh()
    with sdk(proxy) as client:
        assert [ask(client, messages)[0] for _ in range(2)] == ["bypass", "bypass"]
    assert calls(fake_openai) == 2


def test_cache_enabled_true_keeps_the_configured_cache(
    start_proxy: Any, fake_openai: FakeOpenAI
) -> None:
    policy = cache_policy(fake_openai.base_url, backend="memory")
    proxy = start_proxy(policy, env={"CACHE_ENABLED": "true"})
    messages = fresh()
    with sdk(proxy) as client:
        assert [ask(client, messages)[0] for _ in range(2)] == ["miss", "hit"]
