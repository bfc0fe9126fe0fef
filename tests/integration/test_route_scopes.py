"""A route's `limits` and `price` belong to that route of that model, not to the
`<upstream>/<model id>` it points at: two public models may send to the same deployment, and
each route keeps what was configured on it, whichever model is declared first.

A quota shared by every model on one deployment is the upstream's `limits` (the last test):
route limits split a deployment between models, upstream limits bound it as a whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from fakes.openai_upstream import FakeOpenAI
from fakes.proxy_harness import UPSTREAM_KEY, ProxyLauncher, RunningProxy
from prometheus_client.parser import text_string_to_metric_families

from .conftest import USER_MESSAGES

ONE_A_MINUTE = {"requests": "1/minute"}
PRICE = {"input": 1_000_000, "output": 2_000_000}  # USD per million tokens: $1, $2 a token


def route(model_id: str, **extra: Any) -> dict[str, Any]:
    return {"routes": [{"upstream": "fake", "model": model_id, **extra}]}


def scopes_policy(base_url: str) -> dict[str, Any]:
    upstream = {"type": "openai", "base_url": base_url, "api_key": UPSTREAM_KEY}
    return {
        "server": {"drain_timeout": 0},
        "upstreams": {
            "fake": upstream,
            "quota": {**upstream, "limits": {"requests": "2/minute"}},
        },
        "models": {
            # limited first, then a model on the same deployment without limits
            "limited-a": route("shared-a", limits=ONE_A_MINUTE),
            "free-a": route("shared-a"),
            # the other way round
            "free-b": route("shared-b"),
            "limited-b": route("shared-b", limits=ONE_A_MINUTE),
            # prices, both orders
            "priced-c": route("shared-c", price=PRICE),
            "free-c": route("shared-c"),
            "free-d": route("shared-d"),
            "priced-d": route("shared-d", price=PRICE),
            # one deployment's quota, whatever the model
            "quota-1": {"routes": [{"upstream": "quota", "model": "deployment"}]},
            "quota-2": {"routes": [{"upstream": "quota", "model": "deployment"}]},
        },
        "retry": {"attempts": 1, "initial_delay": 0.01, "max_delay": 0.05, "deadline": 30},
        "circuit_breaker": {"failures": 100},
        "cache": {"backend": "none"},
    }


@pytest.fixture(scope="module")
def running(
    tmp_path_factory: pytest.TempPathFactory, fake_openai_server: FakeOpenAI
) -> Iterator[RunningProxy]:
    launcher = ProxyLauncher(tmp_path_factory.mktemp("route-scopes"))
    yield launcher.start(scopes_policy(fake_openai_server.base_url))
    launcher.close()


@pytest.fixture
def client(running: RunningProxy, fake_openai: FakeOpenAI) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=running.base_url, api_key="no-keys", max_retries=0, timeout=20
    ) as sdk:
        yield sdk


def status_of(client: openai.OpenAI, model: str) -> int:
    try:
        raw = client.chat.completions.with_raw_response.create(model=model, messages=USER_MESSAGES)
    except openai.APIStatusError as exc:
        return exc.status_code
    return raw.http_response.status_code


def spend(running: RunningProxy, model: str) -> float:
    text = httpx.get(f"{running.url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "llm_proxy_spend_usd_total" and sample.labels["model"] == model:
                return float(sample.value)
    return 0.0


def test_a_route_limit_survives_a_later_model_on_the_same_deployment(
    client: openai.OpenAI,
) -> None:
    assert status_of(client, "limited-a") == 200
    assert status_of(client, "limited-a") == 503  # its only route is full: skipped
    assert [status_of(client, "free-a") for _ in range(3)] == [200, 200, 200]


def test_a_route_limit_does_not_throttle_another_model_on_the_same_deployment(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    assert [status_of(client, "free-b") for _ in range(3)] == [200, 200, 200]
    assert status_of(client, "limited-b") == 200
    assert status_of(client, "limited-b") == 503
    assert status_of(client, "free-b") == 200
    assert [r.json["model"] for r in fake_openai.chat_requests] == ["shared-b"] * 5


@pytest.mark.parametrize(("priced", "free"), [("priced-c", "free-c"), ("priced-d", "free-d")])
def test_a_route_price_applies_to_its_own_route_only(
    running: RunningProxy, client: openai.OpenAI, priced: str, free: str
) -> None:
    reply = client.chat.completions.create(model=priced, messages=USER_MESSAGES)
    assert reply.usage is not None
    expected = reply.usage.prompt_tokens * 1 + reply.usage.completion_tokens * 2
    client.chat.completions.create(model=free, messages=USER_MESSAGES)
    assert spend(running, priced) == pytest.approx(expected)
    assert spend(running, free) == 0.0  # an unpriced route costs nothing


def test_a_quota_shared_by_every_model_on_a_deployment_is_the_upstream_s_limits(
    client: openai.OpenAI,
) -> None:
    assert status_of(client, "quota-1") == 200
    assert status_of(client, "quota-2") == 200
    assert status_of(client, "quota-1") == 503
    assert status_of(client, "quota-2") == 503
