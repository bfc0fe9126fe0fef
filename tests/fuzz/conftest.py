"""The proxy the fuzzers hit: in front of an upstream that answers every request well in every
format (tests/fuzz/upstream.py), so that any 5xx, hang or dropped connection is the proxy's
own. Every door is on: chat completions, embeddings, the Responses API (translated, and native
on one model), Anthropic's Messages API (translated, and passed through on one model), and the
admin API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fakes.proxy_harness import ProxyLauncher, RunningProxy

from .upstream import FuzzUpstream

FUZZ_KEY = "sk-fuzz-client-key"
FUZZ_ADMIN_KEY = "sk-fuzz-admin-key"
MAX_BODY_BYTES = 256 * 1024
MAX_MESSAGES = 64


def fuzz_policy(upstream: FuzzUpstream) -> dict[str, Any]:
    robust = {"type": "openai", "base_url": upstream.base_url, "api_key": "sk-fuzz-upstream"}
    native = {**robust, "responses": "native"}
    claude = {"type": "anthropic", "base_url": upstream.url, "api_key": "sk-fuzz-anthropic"}
    return {
        "server": {
            "max_body_bytes": MAX_BODY_BYTES,
            "max_messages": MAX_MESSAGES,
            "drain_timeout": 0,
        },
        "upstreams": {"robust": robust, "native": native, "claude": claude},
        "models": {
            "m": {"routes": [{"upstream": "robust", "model": "robust-id"}]},
            "cached": {
                "routes": [{"upstream": "robust", "model": "robust-cached"}],
                "cache": {"ttl": 60, "deterministic_only": False},
            },
            "same": {"routes": [{"upstream": "robust", "model": "same"}]},  # body passed as is
            "pattern/*": {"routes": [{"upstream": "robust"}]},
            "native": {"routes": [{"upstream": "native", "model": "native-id"}]},
            "claude": {"routes": [{"upstream": "claude", "model": "claude-id"}]},
        },
        "rules": [
            {"when": {"model": "rule-*"}, "use": "m"},
            {"when": {"header": {"x-tier": "free"}}, "use": "m"},
            {"when": {"tools": True, "stream": True}, "use": "cached"},
        ],
        "keys": [{"name": "fuzz", "key": FUZZ_KEY, "limits": {"concurrency": 64}}],
        "retry": {"attempts": 1, "initial_delay": 0.01, "max_delay": 0.05},
        "circuit_breaker": {"failures": 100000},
        "cache": {"backend": "memory"},
        "responses": {"storage": "memory"},
        "admin": {"key": FUZZ_ADMIN_KEY},
    }


@pytest.fixture(scope="session")
def fuzz_upstream() -> Iterator[FuzzUpstream]:
    with FuzzUpstream() as upstream:
        yield upstream


@pytest.fixture(scope="session")
def fuzz_proxy(proxy_launcher: ProxyLauncher, fuzz_upstream: FuzzUpstream) -> RunningProxy:
    return proxy_launcher.start(fuzz_policy(fuzz_upstream))
