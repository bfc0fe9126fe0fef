"""Input built to confuse the proxy, its logs or its upstreams is a 400 before any attempt:
model names that are too long or carry control characters (a trailing newline included),
top-level JSON keys given twice (the proxy would act on one value while an upstream might
read the other), values no JSON reader can hold, two Authorization headers. Unknown model
names leave nothing behind in the proxy's memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from fakes.openai_upstream import FakeOpenAI
from fakes.proxy_harness import CLIENT_KEY_B, RunningProxy

from .helpers import assert_envelope

MESSAGES = [{"role": "user", "content": "hi"}]
MESSAGES_JSON = json.dumps(MESSAGES).encode()
MAX_MODEL_NAME = 256
MiB = 1024 * 1024


@pytest.fixture
def http(proxy: RunningProxy, fake_openai: FakeOpenAI) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=proxy.base_url,
        timeout=20,
        headers={"Authorization": f"Bearer {CLIENT_KEY_B}", "Content-Type": "application/json"},
    ) as client:
        yield client


def refused(response: httpx.Response, param: str | None = None) -> dict[str, object]:
    assert response.status_code == 400, response.text[:500]
    error = assert_envelope(response.json())
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param, error
    return error


# -- model names ----------------------------------------------------------------------------


def test_a_model_name_over_256_characters_is_a_400(
    http: httpx.Client, fake_openai: FakeOpenAI
) -> None:
    name = "openai/" + "x" * (MAX_MODEL_NAME - len("openai/") + 1)  # a pattern would take it
    refused(http.post("/chat/completions", json={"model": name, "messages": MESSAGES}), "model")
    assert fake_openai.chat_requests == []


def test_a_model_name_of_256_characters_is_a_name_like_any_other(
    http: httpx.Client, fake_openai: FakeOpenAI
) -> None:
    name = "openai/" + "x" * (MAX_MODEL_NAME - len("openai/"))
    response = http.post("/chat/completions", json={"model": name, "messages": MESSAGES})
    assert response.status_code == 200, response.text
    assert fake_openai.last_request.json["model"] == name.removeprefix("openai/")


@pytest.mark.parametrize(
    "name",
    [
        *("gpt-4o-mini\n", "gpt-4o-mini\r\n", "gpt-\n4o-mini", "gpt-4o\tmini", "gpt\x00"),
        *("\x1b[31m", "gpt-4o-mini\x7f", "gpt-4o-mini\x85"),
    ],
)
def test_a_control_character_in_a_model_name_is_a_400(
    http: httpx.Client, fake_openai: FakeOpenAI, name: str
) -> None:
    refused(http.post("/chat/completions", json={"model": name, "messages": MESSAGES}), "model")
    assert fake_openai.chat_requests == []


# -- the body's JSON ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (b'{"model":"gpt-4o-mini","messages":%s,"model":"gpt-4o"}', "model"),
        (b'{"model":"gpt-4o-mini","m\\u006fdel":"gpt-4o-mini","messages":%s}', "model"),
        (b'{ "model" : "gpt-4o-mini" ,\n "messages" : %s , "model" : "gpt-4o-mini" }', "model"),
        (b'{"model":"gpt-4o-mini","messages":%s,"messages":%s}', "messages"),
        (b'{"model":"gpt-4o-mini","messages":%s,"max_tokens":1,"max_tokens":99999}', "max_tokens"),
    ],
    ids=["model-twice", "model-escaped", "model-spaced", "messages-twice", "unknown-twice"],
)
def test_a_top_level_key_given_twice_is_a_400_naming_it(
    http: httpx.Client, fake_openai: FakeOpenAI, body: bytes, key: str
) -> None:
    body = body.replace(b"%s", MESSAGES_JSON)
    error = refused(http.post("/chat/completions", content=body), key)
    assert f"'{key}'" in str(error["message"])
    assert fake_openai.chat_requests == []


def test_keys_repeated_inside_a_value_pass_through(
    http: httpx.Client, fake_openai: FakeOpenAI
) -> None:
    """Below the top level the proxy reads nothing: the upstream judges its own fields."""
    body = b'{"model":"gpt-4o-mini","messages":%s,"metadata":{"k":"1","k":"2"}}' % MESSAGES_JSON
    assert http.post("/chat/completions", content=body).status_code == 200
    assert b'"metadata":{"k":"1","k":"2"}' in fake_openai.last_request.body


@pytest.mark.parametrize("value", [b"1e999", b"-1e999", b"9" * 5000])
def test_a_value_no_json_reader_can_hold_is_a_400_before_any_attempt(
    http: httpx.Client, proxy: RunningProxy, fake_openai: FakeOpenAI, value: bytes
) -> None:
    body = b'{"model":"gpt-4o-mini","messages":%s,"x_unknown":%s}' % (MESSAGES_JSON, value)
    response = http.post("/chat/completions", content=body)
    refused(response)
    assert fake_openai.chat_requests == []
    routes = httpx.get(f"{proxy.url}/health", timeout=10).json()["routes"]
    assert routes["fake/upstream-model-id"]["inflight"] == 0  # not left counted in flight
    assert response.headers["x-llm-proxy-attempts"] == "0"


# -- headers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "second", [f"Bearer {CLIENT_KEY_B}", "Bearer sk-someone-else"], ids=["same", "other"]
)
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/chat/completions"), ("GET", "/models"), ("GET", "/models/gpt-4o-mini")],
)
def test_two_authorization_headers_are_a_400(
    proxy: RunningProxy, fake_openai: FakeOpenAI, method: str, path: str, second: str
) -> None:
    headers = [("Authorization", f"Bearer {CLIENT_KEY_B}"), ("Authorization", second)]
    body = {"model": "gpt-4o-mini", "messages": MESSAGES} if method == "POST" else None
    response = httpx.request(
        method, f"{proxy.base_url}{path}", headers=headers, json=body, timeout=20
    )
    error = refused(response)
    assert "Authorization" in str(error["message"])
    assert fake_openai.chat_requests == []


# -- unknown names leave nothing behind ----------------------------------------------------


def rss(proxy: RunningProxy) -> int:
    return int(httpx.get(f"{proxy.url}/health", timeout=10).json()["process"]["rss_bytes"])


def unknown_names(count: int, length: int, tag: str) -> Iterator[str]:
    for i in range(count):
        prefix = f"no-such-model-{tag}-{i}-"
        yield prefix + "z" * (length - len(prefix))


def test_distinct_unknown_model_names_do_not_grow_the_process(
    http: httpx.Client, proxy: RunningProxy
) -> None:
    """1,000 distinct 256-character unknown names: the resident set stays within 5 MiB."""
    for name in unknown_names(50, MAX_MODEL_NAME, "warm"):  # the allocator's first growth
        http.post("/chat/completions", json={"model": name, "messages": MESSAGES})
    before = rss(proxy)
    for name in unknown_names(1000, MAX_MODEL_NAME, "run"):
        response = http.post("/chat/completions", json={"model": name, "messages": MESSAGES})
        assert response.status_code == 404
    grown = rss(proxy) - before
    print(f"\nRSS after 1,000 distinct unknown 256-character model names: {grown / MiB:+.2f} MiB")
    assert grown < 5 * MiB


# -- request targets ---------------------------------------------------------------------------


def test_a_request_target_over_4_kib_is_a_414_before_routing(proxy: RunningProxy) -> None:
    """Litestar's router memoizes the last 1,024 paths it saw whatever their size: a long
    path never reaches it."""
    response = httpx.get(f"{proxy.base_url}/models/{'m' * 5000}", timeout=20)
    assert response.status_code == 414
    assert assert_envelope(response.json())["code"] == "uri_too_long"
    response = httpx.get(f"{proxy.base_url}/models?{'q=1&' * 1100}", timeout=20)
    assert response.status_code == 414
    assert httpx.get(f"{proxy.base_url}/models/{'m' * 200}", timeout=20).status_code in (
        401,
        404,
    )
