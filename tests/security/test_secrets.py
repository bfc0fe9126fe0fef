"""No secret leaves the proxy (docs/semantics.md, "Secrets and 'not configured' upstreams").

One proxy with every kind of secret a policy holds: upstream keys given literally, through
`${VAR}`, shaped like an OpenAI key or not, a secret in an upstream's `headers`, and client
keys given literally, through `${VAR}` and as a sha256. It is driven through successes,
upstream failures of every sort (including an upstream that echoes the key it was sent, as
OpenAI's 401 does), refused client keys, and every read-only endpoint; then every captured
output (response status lines, headers and bodies, /metrics, /health, the log on stderr at
DEBUG and the log file, `llm-proxy check`) is scanned for every secret.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fakes.openai_upstream import (
    FakeOpenAI,
    drop_after,
    error_envelope,
    error_event_after,
    garbage,
    invalid_api_key,
    status,
)
from fakes.proxy_harness import (
    PROXY_ENV_OVERRIDES,
    REPO_ROOT,
    ProxyLauncher,
    RunningProxy,
    sha256_hex,
)

from .helpers import assert_envelope, find_secrets

pytestmark = pytest.mark.timeout(120)

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "keep my secrets"}]

UP_LITERAL = "upLiteralKey-7f3a9c2e1b"  # not shaped like any known token
UP_ENV = "envUpstreamKey-c0ffee1234"
UP_SK = "sk-proj-Echo0123456789abcdefXYZ"
HEADER_SECRET = "hdrSecretValue-5eed1e55"
CLIENT_LITERAL = "cliKeyLiteral-9a8b7c6d"
CLIENT_ENV = "cliKeyEnv-1234abcd5678"
CLIENT_HASHED = "cliKeyHashed-feedface00"
UPSTREAM_SECRETS = (UP_LITERAL, UP_ENV, UP_SK, HEADER_SECRET)
CLIENT_KEYS = (CLIENT_LITERAL, CLIENT_ENV, CLIENT_HASHED)
SECRETS = UPSTREAM_SECRETS + CLIENT_KEYS
ENV = {
    "SEC_UPSTREAM_KEY": UP_ENV,
    "SEC_HEADER_SECRET": HEADER_SECRET,
    "SEC_CLIENT_KEY": CLIENT_ENV,
    "LOG_LEVEL": "DEBUG",
}
MODELS = ("m-lit", "m-env", "m-sk")


def secrets_policy(base_url: str, log_file: Path) -> dict[str, Any]:
    def upstream(key: str, **extra: Any) -> dict[str, Any]:
        return {"type": "openai", "base_url": base_url, "api_key": key, **extra}

    return {
        "server": {"drain_timeout": 0},
        "upstreams": {
            "lit": upstream(UP_LITERAL),
            "env": upstream("${SEC_UPSTREAM_KEY}", headers={"X-Secret": "${SEC_HEADER_SECRET}"}),
            "sk": upstream(UP_SK),
        },
        "models": {
            "m-lit": {"routes": [{"upstream": "lit", "model": "id-lit"}]},
            "m-env": {"routes": [{"upstream": "env", "model": "id-env"}]},
            "m-sk": {"routes": [{"upstream": "sk", "model": "id-sk"}]},
        },
        "keys": [
            {"name": "literal", "key": CLIENT_LITERAL, "limits": {"requests": "1000/minute"}},
            {"name": "from-env", "key": "${SEC_CLIENT_KEY}"},
            {"name": "hashed", "sha256": sha256_hex(CLIENT_HASHED), "budget": {"usd": 5}},
        ],
        "retry": {"attempts": 1, "initial_delay": 0.01, "max_delay": 0.05},
        "circuit_breaker": {"failures": 1000, "auth_cooldown": 0.01},
        "cache": {"backend": "none"},
        "logging": {"level": "DEBUG", "file": str(log_file), "redact": True},
    }


class Captured:
    """Every byte the proxy gave a client, as text, with where it came from."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def response(self, what: str, resp: httpx.Response) -> httpx.Response:
        head = "\n".join(f"{k}: {v}" for k, v in resp.headers.items())
        self.items.append((what, f"HTTP {resp.status_code}\n{head}\n\n{resp.text}"))
        return resp

    def leaks(self, secrets: tuple[str, ...]) -> list[tuple[str, list[str]]]:
        return [
            (what, found) for what, text in self.items if (found := find_secrets(text, secrets))
        ]


@pytest.fixture(scope="module")
def secrets_proxy(
    tmp_path_factory: pytest.TempPathFactory, fake_openai_server: FakeOpenAI
) -> Iterator[tuple[RunningProxy, Path]]:
    workdir = tmp_path_factory.mktemp("secrets")
    log_file = workdir / "file-sink.log"
    launcher = ProxyLauncher(workdir)
    try:
        yield launcher.start(secrets_policy(fake_openai_server.base_url, log_file), ENV), log_file
    finally:
        launcher.close()


def chat(http: httpx.Client, key: str, model: str, stream: bool) -> httpx.Response:
    return http.post(
        CHAT,
        json={"model": model, "messages": MESSAGES, "stream": stream},
        headers={"Authorization": f"Bearer {key}"},
    )


UPSTREAM_FAILURES = {
    "401-echoing-the-key": (invalid_api_key, 502),
    "500-with-the-key": (lambda key: status(500, message=f"internal: {key}"), 502),
    "429-with-the-key": (
        lambda key: status(429, headers={"retry-after": "0"}, message=f"slow down {key}"),
        None,  # 429 or a 503 once the route is parked
    ),
    "404-with-the-key": (lambda key: status(404, message=f"no model for {key}"), 502),
    "garbage-with-the-key": (lambda key: garbage(f"<html>{key}</html>".encode()), 502),
    "reset": (lambda key: drop_after(1), None),
    "stream-error-event-with-the-key": (
        lambda key: error_event_after(2, error_envelope(f"failed for {key}", "server_error")),
        None,
    ),
}


def drive(http: httpx.Client, fake: FakeOpenAI, captured: Captured) -> None:
    keys = dict(zip(MODELS, (UP_LITERAL, UP_ENV, UP_SK), strict=True))
    for key in CLIENT_KEYS:
        for model in MODELS:
            for stream in (False, True):
                resp = captured.response(f"ok {model}", chat(http, key, model, stream))
                assert resp.status_code == 200, resp.text
    for name, (make, expected) in UPSTREAM_FAILURES.items():
        for model in MODELS:
            for stream in (False, True):
                behaviour = invalid_api_key() if make is invalid_api_key else make(keys[model])
                fake.script(behaviour)
                resp = chat(http, CLIENT_LITERAL, model, stream)
                captured.response(f"{name} {model} stream={stream}", resp)
                if expected is not None:
                    assert resp.status_code == expected, (name, resp.text)
                if resp.status_code != 200:
                    assert_envelope(resp.json())
                time.sleep(0.02)  # auth_cooldown: the ejected route is back for the next one


def refused_keys(http: httpx.Client, captured: Captured) -> None:
    """Wrong client keys, among them the upstream keys themselves: a 401 that quotes none."""
    attempts = [f"Bearer {s}" for s in (*UPSTREAM_SECRETS, CLIENT_LITERAL + "x")]
    attempts += [
        f"Bearer {CLIENT_LITERAL[:-1]}",
        f"Basic {base64.b64encode(f'user:{CLIENT_LITERAL}x'.encode()).decode()}",
        f"{CLIENT_ENV}x",
        f"Bearer {sha256_hex(CLIENT_HASHED)}",  # the digest is not the key
    ]
    for authorization in attempts:
        for path in (CHAT, "/v1/models", "/v1/proxy/keys/me"):
            body = {"model": "m-lit", "messages": MESSAGES}
            resp = http.request(
                "POST" if path == CHAT else "GET",
                path,
                json=body if path == CHAT else None,
                headers={"Authorization": authorization},
            )
            captured.response(f"refused {path}", resp)
            assert resp.status_code == 401, resp.text
            assert_envelope(resp.json())


def read_endpoints(http: httpx.Client, captured: Captured) -> None:
    for path in ("/metrics", "/health", "/health/readiness", "/health/liveness", "/nope"):
        captured.response(path, http.get(path))
    for key in CLIENT_KEYS:
        auth = {"Authorization": f"Bearer {key}"}
        for path in ("/v1/models", "/v1/models/m-env", "/v1/proxy/keys/me"):
            resp = captured.response(f"{path} as a client", http.get(path, headers=auth))
            assert resp.status_code == 200, resp.text


def check_output(policy_path: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in PROXY_ENV_OVERRIDES}
    env.update(ENV, PYTHONPATH=str(REPO_ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "check", str(policy_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_no_secret_in_any_output(
    secrets_proxy: tuple[RunningProxy, Path], fake_openai: FakeOpenAI
) -> None:
    proxy, log_file = secrets_proxy
    captured = Captured()
    with httpx.Client(base_url=proxy.url, timeout=20) as http:
        drive(http, fake_openai, captured)
        refused_keys(http, captured)
        read_endpoints(http, captured)
    # the upstream really was sent each key (so an echo had something to echo)
    sent = {rec.headers.get("authorization") for rec in fake_openai.chat_requests}
    assert {f"Bearer {k}" for k in (UP_LITERAL, UP_ENV, UP_SK)} <= sent
    assert any(rec.headers.get("x-secret") == HEADER_SECRET for rec in fake_openai.chat_requests)
    time.sleep(0.5)  # the last log lines are written
    outputs = {
        "stderr log": proxy.log(),
        "log file": log_file.read_text(errors="replace"),
        "llm-proxy check": check_output(proxy.config_path),
    }
    assert "refused the proxy's credentials" in outputs["stderr log"]  # the 401s were logged
    assert outputs["log file"].count("chat 200") >= len(CLIENT_KEYS) * len(MODELS) * 2
    leaks = captured.leaks(SECRETS)
    leaks += [
        (what, found) for what, text in outputs.items() if (found := find_secrets(text, SECRETS))
    ]
    assert leaks == []


@pytest.mark.parametrize("code", [400, 422])
def test_an_upstream_400_quoting_the_key_does_not_hand_it_to_the_client(
    secrets_proxy: tuple[RunningProxy, Path], fake_openai: FakeOpenAI, code: int
) -> None:
    proxy, _ = secrets_proxy
    with httpx.Client(base_url=proxy.url, timeout=20) as http:
        for model, key in zip(MODELS, (UP_LITERAL, UP_ENV, UP_SK), strict=True):
            fake_openai.script(
                status(code, message=f"Invalid header 'Authorization: Bearer {key}'")
            )
            resp = chat(http, CLIENT_LITERAL, model, False)
            assert resp.status_code == 400
            assert_envelope(resp.json())
            assert find_secrets(resp.text, SECRETS) == [], resp.text


# ---- a policy rewritten badly at run time ----------------------------------------------------


def bad_rewrite(policy: dict[str, Any]) -> dict[str, Any]:
    """The operator's slip: `headers` written as one string (with the secret interpolated)
    and a `${VAR}` pasted into a number field; the file is rejected."""
    bad = yaml.safe_load(yaml.safe_dump(policy))
    bad["upstreams"]["env"]["headers"] = "X-Secret: ${SEC_HEADER_SECRET}"
    bad["upstreams"]["lit"]["timeout"] = {"total": "${SEC_UPSTREAM_KEY}"}
    return bad


def rejected_reload(start_proxy: Any, fake: FakeOpenAI, tmp_path: Path) -> RunningProxy:
    policy = secrets_policy(fake.base_url, tmp_path / "reload-sink.log")
    proxy: RunningProxy = start_proxy(policy, ENV)
    proxy.config_path.write_text(yaml.safe_dump(bad_rewrite(policy), sort_keys=False))
    proxy.wait_for_log("policy reload failed", timeout=10)
    return proxy


def test_a_rejected_reload_logs_no_configured_secret(
    start_proxy: Any, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    proxy = rejected_reload(start_proxy, fake_openai, tmp_path)
    time.sleep(0.3)
    log = proxy.log() + (tmp_path / "reload-sink.log").read_text(errors="replace")
    assert "is not of type" in log  # the problems are there...
    assert find_secrets(log, SECRETS) == []  # ...without the values


def test_a_rejected_reload_shows_no_secret_in_health(
    start_proxy: Any, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    proxy = rejected_reload(start_proxy, fake_openai, tmp_path)
    health = httpx.get(f"{proxy.url}/health", timeout=10)
    assert health.json()["policy"]["last_reload"]["result"] == "error"
    assert find_secrets(health.text, SECRETS) == [], health.text
