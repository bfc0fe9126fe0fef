"""Model listing and health endpoints."""

from __future__ import annotations

import httpx
import openai
import pytest
from fakes.proxy_harness import CLIENT_KEY_A, RunningProxy

from .conftest import assert_openai_error

NOT_CONFIGURED = "unconfigured-model"


def public_names(proxy: RunningProxy) -> set[str]:
    return {name for name in proxy.policy["models"] if "*" not in name}


def upstream_ids(proxy: RunningProxy) -> set[str]:
    return {
        r["model"] for m in proxy.policy["models"].values() for r in m["routes"] if "model" in r
    }


def test_models_lists_public_names_not_patterns(client: openai.OpenAI, proxy: RunningProxy) -> None:
    listed = [m.id for m in client.models.list()]
    assert len(listed) == len(set(listed))
    names = public_names(proxy)
    assert names - {NOT_CONFIGURED} <= set(listed) <= names
    assert not [m for m in listed if "*" in m]
    assert not set(listed) & upstream_ids(proxy)


def test_models_wire_shape(http: httpx.Client) -> None:
    resp = http.get("/v1/models")
    assert resp.status_code == 200
    body = resp.json()
    assert body["object"] == "list"
    for model in body["data"]:
        assert model["object"] == "model"
        assert isinstance(model["id"], str) and isinstance(model["created"], int)
        assert isinstance(model["owned_by"], str)


def test_models_only_those_the_key_may_use(proxy: RunningProxy) -> None:
    with openai.OpenAI(base_url=proxy.base_url, api_key=CLIENT_KEY_A, max_retries=0) as team_a:
        assert {m.id for m in team_a.models.list()} == {"gpt-4o-mini", "gpt-4o"}


def test_models_need_a_key(proxy: RunningProxy) -> None:
    resp = httpx.get(f"{proxy.base_url}/models")
    assert resp.status_code == 401
    assert_openai_error(resp.json())


@pytest.mark.parametrize("model_id", ["gpt-4o-mini", "acme/chat-1"])
def test_retrieve_model(client: openai.OpenAI, model_id: str) -> None:
    model = client.models.retrieve(model_id)  # the SDK sends acme%2Fchat-1
    assert model.id == model_id and model.object == "model"


def test_retrieve_model_with_a_raw_slash(http: httpx.Client) -> None:
    resp = http.get("/v1/models/acme/chat-1")
    assert resp.status_code == 200, resp.text
    assert resp.json()["id"] == "acme/chat-1"


def test_retrieve_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        client.models.retrieve("no-such-model")
    assert assert_openai_error(exc.value.response.json())["code"] == "model_not_found"


@pytest.mark.parametrize("path", ["/health/liveness", "/health/readiness", "/health", "/metrics"])
def test_health_needs_no_key(proxy: RunningProxy, path: str) -> None:
    resp = httpx.get(f"{proxy.url}{path}")
    assert resp.status_code == 200


def test_metrics_count_requests(client: openai.OpenAI, proxy: RunningProxy) -> None:
    client.chat.completions.create(model="chat-b", messages=[{"role": "user", "content": "hi"}])
    text = httpx.get(f"{proxy.url}/metrics").text
    lines = [
        line
        for line in text.splitlines()
        if line.startswith("llm_proxy_requests_total{") and 'model="chat-b"' in line
    ]
    assert any('status="200"' in line and float(line.rsplit(" ", 1)[1]) >= 1 for line in lines), (
        lines or text[:2000]
    )


def test_metrics_content_type(proxy: RunningProxy) -> None:
    """Prometheus text format: text/plain; version=0.0.4; charset=utf-8, each parameter once."""
    resp = httpx.get(f"{proxy.url}/metrics")
    media_type, *params = [p.strip() for p in resp.headers["content-type"].split(";")]
    assert media_type == "text/plain"
    assert sorted(p.split("=")[0] for p in params) == ["charset", "version"], params
