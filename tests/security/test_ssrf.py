"""No client input chooses where the proxy connects.

The upstream URL comes from the policy alone: whatever a client puts in `model`, in headers
that proxies usually trust (Host, X-Forwarded-Host, Forwarded...) or in body fields other
gateways honour (`base_url`, `api_base`, `api_key`...), the configured fake upstream is the
only thing contacted, always at its own address and path, with the proxy's own key, and a
canary listener whose address the client names gets no connection at all.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fakes.openai_upstream import FakeOpenAI
from fakes.proxy_harness import CLIENT_KEY_B, UPSTREAM_KEY, RunningProxy

from .helpers import Canary, Recorder, assert_envelope

pytestmark = pytest.mark.timeout(90)

MESSAGES = [{"role": "user", "content": "where do you connect?"}]
CHAT = "/v1/chat/completions"


@pytest.fixture
def http(proxy: RunningProxy) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=proxy.url, timeout=20, headers={"Authorization": f"Bearer {CLIENT_KEY_B}"}
    ) as client:
        yield client


def hostile_models(canary: str) -> list[str]:
    return [
        f"http://{canary}/v1",
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        f"//{canary}/v1/chat/completions",
        "file:///etc/passwd",
        "unix:///var/run/docker.sock",
        "../",
        "../../../../etc/passwd",
        "./gpt-4o-mini",
        "gpt-4o-mini/../chat-b",
        f"gpt-4o-mini@{canary}",
        "gpt-4o-mini?base_url=http://evil",
        "gpt-4o-mini#fragment",
        # "openai/*" is a pattern route: the matched part becomes the upstream model id
        f"openai/http://{canary}/v1",
        "openai/http://169.254.169.254/latest/meta-data/",
        "openai/../../../admin",
        "openai/..",
        "openai/%2e%2e/%2e%2e/admin",
        f"openai/@{canary}",
        f"openai/{canary}",
    ]


def assert_only_the_fake(fake: FakeOpenAI, canary: Canary) -> None:
    """Everything the fake saw came to its own address and path; the canary saw nothing."""
    time.sleep(0.2)  # a connection the proxy may have started has landed by now
    assert canary.connections == [], canary.connections
    for rec in fake.requests:
        assert rec.method == "POST" and rec.path == CHAT and rec.query == "", rec
        assert rec.headers["host"] == f"127.0.0.1:{fake.port}", rec.headers
        assert rec.headers["authorization"] == f"Bearer {UPSTREAM_KEY}", rec.headers


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_no_model_value_chooses_the_upstream(
    http: httpx.Client, fake_openai: FakeOpenAI, canary: Canary, stream: bool
) -> None:
    answered = []
    for model in hostile_models(canary.address):
        body: dict[str, Any] = {"model": model, "messages": MESSAGES, "stream": stream}
        resp = http.post(CHAT, json=body)
        answered.append((model, resp.status_code))
        if resp.status_code == 200:
            # only a pattern route serves these, on the configured upstream
            assert model.startswith("openai/"), model
            assert resp.headers["x-llm-proxy-route"].startswith("fake/"), resp.headers
            sent = fake_openai.last_request.json
            assert sent["model"] == model.removeprefix("openai/"), sent  # data, not a URL
        else:
            assert resp.status_code in (400, 404), (model, resp.status_code, resp.text)
            assert_envelope(resp.json())
    assert_only_the_fake(fake_openai, canary)
    served = [m for m, code in answered if code == 200]
    assert served == [m for m in hostile_models(canary.address) if m.startswith("openai/")]


def test_proxy_style_headers_do_not_choose_the_upstream(
    http: httpx.Client, fake_openai: FakeOpenAI, canary: Canary
) -> None:
    evil = f"http://{canary.address}"
    headers = {
        "host": canary.address,
        "x-forwarded-host": canary.address,
        "x-forwarded-proto": "https",
        "x-forwarded-port": str(canary.port),
        "x-forwarded-prefix": "/evil",
        "x-forwarded-for": "169.254.169.254",
        "forwarded": f"for=1.2.3.4;host={canary.address};proto=http",
        "x-original-url": f"{evil}/v1/chat/completions",
        "x-rewrite-url": f"{evil}/v1/chat/completions",
        "x-real-ip": "169.254.169.254",
        "x-upstream": evil,
        "x-base-url": evil,
        "x-llm-proxy-route": "fake-auth/up-err-auth",
        "x-tier": "free",
    }
    for stream in (False, True):
        body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": stream}
        resp = http.post(CHAT, json=body, headers=headers)
        assert resp.status_code == 200, resp.text
        assert resp.headers["x-llm-proxy-route"] == "fake/upstream-model-id"
    assert len(fake_openai.chat_requests) == 2
    assert_only_the_fake(fake_openai, canary)


BODY_FIELDS = (
    "base_url",
    "api_base",
    "api_url",
    "url",
    "endpoint",
    "azure_endpoint",
    "host",
    "proxy",
    "http_proxy",
    "upstream",
    "route",
    "provider",
    "custom_llm_provider",
    "deployment_id",
    "api_version",
    "organization",
)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_body_fields_do_not_change_where_or_how_the_proxy_connects(
    http: httpx.Client, fake_openai: FakeOpenAI, canary: Canary, stream: bool
) -> None:
    evil = f"http://{canary.address}/v1"
    body: dict[str, Any] = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": stream}
    body.update(dict.fromkeys(BODY_FIELDS, evil))
    body["api_key"] = "sk-from-the-client-body-123456"
    body["extra_headers"] = {"Authorization": "Bearer sk-from-the-client-body-123456"}
    body["headers"] = {"Host": canary.address}
    body["litellm_params"] = {"api_base": evil, "api_key": "sk-from-the-client-body-123456"}
    resp = http.post(CHAT, json=body)
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-llm-proxy-route"] == "fake/upstream-model-id"
    assert_only_the_fake(fake_openai, canary)
    rec = fake_openai.last_request
    # unknown fields pass through as data, never as connection settings
    assert rec.json["base_url"] == evil
    assert "sk-from-the-client-body" not in str(rec.headers)


def test_a_pattern_model_cannot_walk_out_of_the_upstream_path(
    start_proxy: Any, canary: Canary
) -> None:
    """`hf/*` sends the matched part as the model id in the URL path of the classic API:
    dot segments must not climb out of `{base_url}/models/`."""
    with Recorder() as upstream:
        policy = {
            "upstreams": {
                "hf": {
                    "type": "huggingface",
                    "api": "text-generation",
                    "base_url": f"{upstream.url}/hf-inference",
                    "api_key": "hf_securitytesttoken123456",
                },
            },
            "models": {"hf/*": {"routes": [{"upstream": "hf"}]}},
            "retry": {"attempts": 1, "initial_delay": 0.01, "max_delay": 0.05},
            "circuit_breaker": {"failures": 100},
            "cache": {"backend": "none"},
        }
        proxy = start_proxy(policy)
        models = [
            "hf/acme/model-1",  # the control: a normal repo id
            "hf/../../admin",
            "hf/acme/../../../admin",
            "hf/..",
            "hf/./../internal",
            f"hf/@{canary.address}/x",
        ]
        with httpx.Client(base_url=proxy.url, timeout=20) as http:
            for model in models:
                resp = http.post(CHAT, json={"model": model, "messages": MESSAGES})
                assert resp.status_code < 500 or resp.status_code in (502, 503), resp.text
                if resp.status_code != 200:
                    assert_envelope(resp.json())
        time.sleep(0.2)
        assert canary.connections == []
        paths = [seen.path for seen in upstream.seen]
        assert paths and paths[0] == "/hf-inference/models/acme/model-1", paths
        for path in paths:
            assert path.startswith("/hf-inference/models/"), paths
            segments = path.removeprefix("/hf-inference/models/").split("/")
            assert "." not in segments and ".." not in segments, paths
