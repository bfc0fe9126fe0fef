"""An upstream's error is the upstream's text: any of its fields (message, param, code) may
echo the credential the proxy sent. Every field is redacted before the client or a log sees
it, and the `reason` label of `llm_proxy_upstream_errors_total` comes from a fixed set, never
from the upstream's code (a label would keep a secret, or grow without bound)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fakes.openai_upstream import FakeOpenAI, status
from fakes.proxy_harness import RunningProxy
from prometheus_client.parser import text_string_to_metric_families

from .helpers import assert_envelope

StartProxy = Callable[..., RunningProxy]
# Not shaped like a known token (sk-..., hf_...): only the policy says they are secrets.
SECRET = "plainSecretZq81yXw4Lm"  # written into the policy file
ENV_SECRET = "envSecretQw73vBn2Kp"  # read from the environment
SECRET_VAR = "LLM_PROXY_TEST_UPSTREAM_SECRET"
MESSAGES = [{"role": "user", "content": "hi"}]


def upstream_errors_policy(base_url: str, api_key: str) -> dict[str, Any]:
    return {
        "server": {"drain_timeout": 0},
        "upstreams": {"fake": {"type": "openai", "base_url": base_url, "api_key": api_key}},
        "models": {"m": {"routes": [{"upstream": "fake", "model": "up-m"}]}},
        "retry": {"attempts": 1, "initial_delay": 0.01, "max_delay": 0.05, "deadline": 30},
        "circuit_breaker": {"failures": 100},
        "cache": {"backend": "none"},
    }


@pytest.fixture
def running(start_proxy: StartProxy, fake_openai: FakeOpenAI) -> Iterator[RunningProxy]:
    yield start_proxy(upstream_errors_policy(fake_openai.base_url, SECRET))


def ask(running: RunningProxy) -> httpx.Response:
    return httpx.post(
        f"{running.base_url}/chat/completions",
        json={"model": "m", "messages": MESSAGES},
        timeout=20,
    )


def error_reasons(running: RunningProxy) -> list[str]:
    text = httpx.get(f"{running.url}/metrics", timeout=5).text
    return [
        sample.labels["reason"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "llm_proxy_upstream_errors_total"
    ]


@pytest.mark.parametrize("source", ["written", "environment"])
def test_a_credential_echoed_in_every_field_of_an_upstream_400_reaches_no_one(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, source: str
) -> None:
    if source == "written":
        secret, running = SECRET, start_proxy(upstream_errors_policy(fake_openai.base_url, SECRET))
    else:
        policy = upstream_errors_policy(fake_openai.base_url, "${" + SECRET_VAR + "}")
        secret, running = ENV_SECRET, start_proxy(policy, env={SECRET_VAR: ENV_SECRET})
    fake_openai.script(
        status(400, message=f"Key {secret} may not set this.", param=secret, error_code=secret)
    )
    response = ask(running)
    assert response.status_code == 400
    error: dict[str, Any] = assert_envelope(response.json())
    assert fake_openai.last_request.headers["authorization"] == f"Bearer {secret}"
    for field in ("message", "param", "code"):
        assert secret not in str(error[field]), (field, error)
    assert error["message"].startswith("Key ")  # the upstream's words, less the secret
    assert secret not in response.text
    assert secret not in httpx.get(f"{running.url}/metrics", timeout=5).text
    running.wait_for_log("chat 400 model=m")
    assert secret not in running.log()


@pytest.mark.parametrize("code", ["vendor_specific_code_8841", SECRET, "x" * 300])
def test_the_reason_label_never_comes_from_the_upstream_s_code(
    running: RunningProxy, fake_openai: FakeOpenAI, code: str
) -> None:
    fake_openai.script(status(400, message="Rejected.", error_code=code))
    assert ask(running).status_code == 400
    reasons = error_reasons(running)
    assert reasons and code not in reasons
    assert set(reasons) <= {"400", "invalid_request_error", "other"}


def test_a_failing_upstream_is_counted_by_its_status(
    running: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(status(500, error_code=SECRET))
    assert ask(running).status_code == 502
    assert error_reasons(running) == ["500"]
    assert all(re.fullmatch(r"\d{3}|[a-z_]+", reason) for reason in error_reasons(running))
