"""A model's `params`: per numeric request field, a `default` set when the client sent none
and `min`/`max` that clamp the value (never a refusal). They belong to the model that serves,
so they apply after rules, and before the cache key: requests that clamp to the same value
share one cache entry. What the fake upstream received is the proof.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from fakes.openai_upstream import FakeOpenAI, RecordedRequest
from fakes.proxy_harness import (
    PROXY_ENV_OVERRIDES,
    REPO_ROOT,
    UPSTREAM_KEY,
    ProxyLauncher,
    RunningProxy,
)

from .conftest import USER_MESSAGES

BOUNDED = {
    "max_tokens": {"default": 100, "min": 10, "max": 200},
    "temperature": {"min": 0.2, "max": 1.0},
    "top_p": {"default": 0.9},
    "top_k": {"max": 40},  # a field the proxy itself never reads: any numeric field works
}


def params_policy(base_url: str) -> dict[str, Any]:
    upstream = {"type": "openai", "base_url": base_url, "api_key": UPSTREAM_KEY}
    return {
        "server": {"drain_timeout": 0},
        "upstreams": {"fake": upstream},
        "models": {
            "bounded": {"routes": [{"upstream": "fake", "model": "up-bounded"}], "params": BOUNDED},
            "plain": {"routes": [{"upstream": "fake", "model": "up-plain"}]},
            "cached": {
                "routes": [{"upstream": "fake", "model": "up-cached"}],
                "params": {"max_tokens": {"max": 50}},
                "cache": {"ttl": 600},
            },
        },
        # a rule moves `plain` requests of the capped tier to `bounded`: its params apply
        "rules": [{"when": {"model": "plain", "header": {"x-tier": "capped"}}, "use": "bounded"}],
        "retry": {"attempts": 1, "initial_delay": 0.01, "max_delay": 0.05, "deadline": 30},
        "circuit_breaker": {"failures": 100},
        "cache": {"backend": "memory"},
    }


@pytest.fixture(scope="module")
def running(
    tmp_path_factory: pytest.TempPathFactory, fake_openai_server: FakeOpenAI
) -> Iterator[RunningProxy]:
    """One proxy for the module; `fake_openai` resets what the fake saw before each test."""
    launcher = ProxyLauncher(tmp_path_factory.mktemp("params"))
    yield launcher.start(params_policy(fake_openai_server.base_url))
    launcher.close()


@pytest.fixture
def client(running: RunningProxy, fake_openai: FakeOpenAI) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=running.base_url, api_key="no-keys", max_retries=0, timeout=20
    ) as sdk:
        yield sdk


def sent(fake: FakeOpenAI) -> dict[str, Any]:
    """The body the upstream received for the last request."""
    request: RecordedRequest = fake.last_request
    assert isinstance(request.json, dict)
    return request.json


def test_a_default_is_set_when_the_client_sent_none(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    reply = client.chat.completions.create(model="bounded", messages=USER_MESSAGES)
    assert reply.model == "bounded"
    body = sent(fake_openai)
    assert body["model"] == "up-bounded"
    assert body["max_tokens"] == 100 and body["top_p"] == 0.9
    assert "temperature" not in body and "top_k" not in body  # bounds alone add nothing


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("max_tokens", 5000, 200),
        ("max_tokens", 1, 10),
        ("max_tokens", 150, 150),
        ("temperature", 1.7, 1.0),
        ("temperature", 0.0, 0.2),
        ("top_p", 0.5, 0.5),
        ("top_k", 100, 40),
    ],
)
def test_values_are_clamped_into_the_bounds_not_refused(
    client: openai.OpenAI, fake_openai: FakeOpenAI, field: str, value: float, expected: float
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="bounded", messages=USER_MESSAGES, extra_body={field: value}
    )
    assert raw.http_response.status_code == 200
    assert sent(fake_openai)[field] == expected


def test_max_tokens_bounds_apply_to_max_completion_tokens_sent_alone(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    client.chat.completions.create(
        model="bounded", messages=USER_MESSAGES, max_completion_tokens=5000
    )
    body = sent(fake_openai)
    assert body["max_completion_tokens"] == 200
    assert "max_tokens" not in body  # the client's own name for the limit, not a second one


def test_a_model_without_params_passes_the_values_as_sent(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    client.chat.completions.create(
        model="plain", messages=USER_MESSAGES, max_tokens=5000, temperature=1.7
    )
    body = sent(fake_openai)
    assert (body["model"], body["max_tokens"], body["temperature"]) == ("up-plain", 5000, 1.7)
    assert "top_p" not in body


def test_a_rule_s_target_model_brings_its_params(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    reply = client.chat.completions.create(
        model="plain",
        messages=USER_MESSAGES,
        max_tokens=5000,
        extra_headers={"x-tier": "capped"},
    )
    assert reply.model == "bounded"
    body = sent(fake_openai)
    assert (body["model"], body["max_tokens"], body["top_p"]) == ("up-bounded", 200, 0.9)


def test_streams_get_the_params_too(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    stream = client.chat.completions.create(
        model="bounded", messages=USER_MESSAGES, max_tokens=5000, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    body = sent(fake_openai)
    assert body["stream"] is True and body["max_tokens"] == 200


def test_requests_clamped_to_the_same_value_share_a_cache_entry(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    def ask(max_tokens: int) -> str:
        raw = client.chat.completions.with_raw_response.create(
            model="cached", messages=USER_MESSAGES, max_tokens=max_tokens, temperature=0
        )
        return str(raw.headers["x-llm-proxy-cache"])

    assert ask(500) == "miss"
    assert ask(900) == "hit"  # also 50 once clamped: the same request
    assert len(fake_openai.chat_requests) == 1
    assert sent(fake_openai)["max_tokens"] == 50
    assert ask(20) == "miss"  # inside the bounds: a different request
    assert sent(fake_openai)["max_tokens"] == 20


def run_check(path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in PROXY_ENV_OVERRIDES}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    return subprocess.run(
        [sys.executable, "-m", "proxy", "check", str(path)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_check_refuses_params_that_cannot_work(tmp_path: Path) -> None:
    policy = params_policy("http://127.0.0.1:9/v1")
    policy["models"]["plain"]["params"] = {
        "max_tokens": {"min": 500, "max": 100},
        "temperature": {"default": 3, "max": 2},
        "top_p": {"default": 0.1, "min": 0.5},
        "stream": {"default": 1},
    }
    path = tmp_path / "proxy.yaml"
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    done = run_check(path)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "models.plain.params.max_tokens: min (500) is larger than max (100)" in output
    assert "models.plain.params.temperature.default: default (3)" in output
    assert "models.plain.params.top_p.default: default (0.1)" in output
    assert "models.plain.params.stream: 'stream' is not a numeric request field" in output


def test_check_accepts_the_params_these_tests_use(tmp_path: Path) -> None:
    path = tmp_path / "proxy.yaml"
    path.write_text(yaml.safe_dump(params_policy("http://127.0.0.1:9/v1"), sort_keys=False))
    done = run_check(path)
    assert done.returncode == 0, done.stdout + done.stderr
