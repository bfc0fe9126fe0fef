"""What the proxy says about the way a request went: `x-llm-proxy-route` names the concrete
`<upstream>/<model id sent>` (a cache hit says the same as the miss that filled it), error
answers carry `x-llm-proxy-attempts` (and the route when one was tried), and the access line
names the api and the concrete target, with client-supplied text bounded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from fakes.openai_upstream import FakeOpenAI, status
from fakes.proxy_harness import UPSTREAM_KEY, ProxyLauncher, RunningProxy

from .conftest import USER_MESSAGES, assert_openai_error

StartProxy = Callable[..., RunningProxy]
CLIENT_KEY = "sk-reporting-client"
MAX_LOGGED_ERROR = 500


def reporting_policy(base_url: str) -> dict[str, Any]:
    upstream = {"type": "openai", "base_url": base_url, "api_key": UPSTREAM_KEY}
    return {
        "server": {"drain_timeout": 0, "max_body_bytes": 1024 * 1024},
        "upstreams": {"fake": upstream, "other": dict(upstream)},
        "models": {
            "openai/*": {"routes": [{"upstream": "fake"}], "cache": {"ttl": 600}},
            "plain": {"routes": [{"upstream": "fake", "model": "up-plain"}]},
            "two-routes": {
                "routes": [
                    {"upstream": "fake", "model": "up-first"},
                    {"upstream": "other", "model": "up-second"},
                ],
                "strategy": "priority",
            },
        },
        "keys": [{"name": "reporter", "key": CLIENT_KEY}],
        "retry": {"attempts": 1, "initial_delay": 0.01, "max_delay": 0.05, "deadline": 30},
        "circuit_breaker": {"failures": 100},
        "cache": {"backend": "memory"},
    }


@pytest.fixture(scope="module")
def running(
    tmp_path_factory: pytest.TempPathFactory, fake_openai_server: FakeOpenAI
) -> Iterator[RunningProxy]:
    launcher = ProxyLauncher(tmp_path_factory.mktemp("reporting"))
    yield launcher.start(reporting_policy(fake_openai_server.base_url))
    launcher.close()


@pytest.fixture
def client(running: RunningProxy, fake_openai: FakeOpenAI) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=running.base_url, api_key=CLIENT_KEY, max_retries=0, timeout=20
    ) as sdk:
        yield sdk


@pytest.fixture
def http(running: RunningProxy, fake_openai: FakeOpenAI) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=running.base_url, timeout=20, headers={"Authorization": f"Bearer {CLIENT_KEY}"}
    ) as c:
        yield c


def chat_body(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": USER_MESSAGES, **extra}


def access_line(running: RunningProxy, request_id: str) -> str:
    """The access line of one request (the proxy writes it once the request ends)."""
    deadline = time.monotonic() + 5
    while True:
        lines = [line for line in running.log().splitlines() if f"request_id={request_id}" in line]
        if lines:
            return lines[-1]
        assert time.monotonic() < deadline, f"no access line for {request_id}"
        time.sleep(0.05)


# -- a cache hit names the concrete route -------------------------------------------------


@pytest.mark.parametrize("stream_hit", [False, True])
def test_a_cache_hit_for_a_pattern_model_reports_the_route_of_the_miss(
    client: openai.OpenAI, fake_openai: FakeOpenAI, running: RunningProxy, stream_hit: bool
) -> None:
    model = f"openai/gpt-hit-{'stream' if stream_hit else 'json'}"
    miss = client.chat.completions.with_raw_response.create(
        model=model, messages=USER_MESSAGES, temperature=0
    )
    assert miss.headers["x-llm-proxy-cache"] == "miss"
    concrete = f"fake/gpt-hit-{'stream' if stream_hit else 'json'}"
    assert miss.headers["x-llm-proxy-route"] == concrete
    hit = client.chat.completions.with_raw_response.create(
        model=model, messages=USER_MESSAGES, temperature=0, stream=stream_hit
    )
    assert hit.headers["x-llm-proxy-cache"] == "hit"
    assert hit.headers["x-llm-proxy-route"] == concrete  # not the pattern's "fake/openai/*"
    assert hit.headers["x-llm-proxy-attempts"] == "0"
    assert len(fake_openai.chat_requests) == 1
    line = access_line(running, hit.headers["x-request-id"])
    assert f"route=fake/openai/* target={concrete} " in line and "cache=hit" in line


# -- errors carry the attempts and the route ----------------------------------------------


def test_an_upstream_failure_names_the_route_and_the_attempts(
    http: httpx.Client, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(status(500))
    response = http.post("/chat/completions", json=chat_body("plain"))
    assert response.status_code == 502
    assert_openai_error(response.json())
    assert response.headers["x-llm-proxy-attempts"] == "1"
    assert response.headers["x-llm-proxy-route"] == "fake/up-plain"


def test_a_failover_counts_every_attempt_and_names_the_last_route(
    http: httpx.Client, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(status(500), status(503))
    response = http.post("/chat/completions", json=chat_body("two-routes"))
    assert response.status_code in (502, 503)
    assert response.headers["x-llm-proxy-attempts"] == "2"
    assert response.headers["x-llm-proxy-route"] == "other/up-second"


def test_an_upstream_rejection_names_the_route(http: httpx.Client, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(status(400, message="No such parameter."))
    response = http.post("/chat/completions", json=chat_body("plain"))
    assert response.status_code == 400
    assert response.headers["x-llm-proxy-attempts"] == "1"
    assert response.headers["x-llm-proxy-route"] == "fake/up-plain"


@pytest.mark.parametrize(
    ("body", "authorization", "expected"),
    [
        (chat_body("no-such-model"), f"Bearer {CLIENT_KEY}", 404),
        ({"model": "plain"}, f"Bearer {CLIENT_KEY}", 400),
        (chat_body("plain"), "Bearer sk-wrong", 401),
        (chat_body("plain"), None, 401),
    ],
    ids=["unknown-model", "invalid-body", "wrong-key", "no-key"],
)
def test_an_error_before_any_attempt_says_zero_attempts_and_no_route(
    running: RunningProxy,
    fake_openai: FakeOpenAI,
    body: dict[str, Any],
    authorization: str | None,
    expected: int,
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = httpx.post(
        f"{running.base_url}/chat/completions", json=body, headers=headers, timeout=20
    )
    assert response.status_code == expected
    assert_openai_error(response.json())
    assert response.headers["x-llm-proxy-attempts"] == "0"
    assert "x-llm-proxy-route" not in response.headers
    assert fake_openai.chat_requests == []


# -- the access line ------------------------------------------------------------------------


def test_the_access_line_names_the_api_and_the_concrete_target(
    client: openai.OpenAI, running: RunningProxy
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="openai/gpt-line", messages=USER_MESSAGES
    )
    line = access_line(running, raw.headers["x-request-id"])
    assert "| chat 200 model=openai/* route=fake/openai/* target=fake/gpt-line " in line


def test_an_error_in_the_access_line_is_bounded(
    http: httpx.Client, fake_openai: FakeOpenAI, running: RunningProxy
) -> None:
    long_message = "The upstream explains at length. " + "x" * 5000
    fake_openai.script(status(400, message=long_message))
    response = http.post("/chat/completions", json=chat_body("plain"))
    assert response.status_code == 400
    line = access_line(running, response.headers["x-request-id"])
    error = line.split(" error=", 1)[1]
    assert error.startswith("'The upstream explains at length. xxx")
    assert len(error) <= MAX_LOGGED_ERROR + len("'...'")
    assert "x" * 1000 not in line
    assert "target=fake/up-plain " in line


def test_a_huge_model_name_is_a_400_and_never_reaches_the_log_whole(
    http: httpx.Client, fake_openai: FakeOpenAI, running: RunningProxy
) -> None:
    name = "m" * 300_000
    logged_before = len(running.log())
    response = http.post("/chat/completions", json=chat_body(name))
    assert response.status_code == 400
    assert assert_openai_error(response.json())["param"] == "model"
    assert name[:300] not in response.text
    access_line(running, response.headers["x-request-id"])
    written = running.log()[logged_before:]
    assert "m" * 1000 not in written
    assert len(written) < 10_000
    assert fake_openai.chat_requests == []


def test_json_access_lines_carry_the_api_and_the_target(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    running = start_proxy(reporting_policy(fake_openai.base_url), env={"LOG_JSON": "true"})
    with openai.OpenAI(
        base_url=running.base_url, api_key=CLIENT_KEY, max_retries=0, timeout=20
    ) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(
            model="openai/gpt-json", messages=USER_MESSAGES
        )
    request_id = raw.headers["x-request-id"]
    line = access_line(running, request_id)
    record = json.loads(line)
    assert record["request_id"] == request_id
    assert record["api"] == "chat"
    assert record["model"] == "openai/*"
    assert record["route"] == "fake/openai/*"
    assert record["target"] == "fake/gpt-json"
