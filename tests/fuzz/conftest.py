"""The proxy the fuzzers hit: in front of an upstream that answers every request well, so
that any 5xx, hang or dropped connection is the proxy's own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fakes.proxy_harness import ProxyLauncher, RunningProxy
from security.helpers import RobustUpstream

FUZZ_KEY = "sk-fuzz-client-key"
MAX_BODY_BYTES = 256 * 1024
MAX_MESSAGES = 64


def fuzz_policy(base_url: str) -> dict[str, Any]:
    upstream = {"type": "openai", "base_url": base_url, "api_key": "sk-fuzz-upstream"}
    return {
        "server": {
            "max_body_bytes": MAX_BODY_BYTES,
            "max_messages": MAX_MESSAGES,
            "drain_timeout": 0,
        },
        "upstreams": {"robust": upstream},
        "models": {
            "m": {"routes": [{"upstream": "robust", "model": "robust-id"}]},
            "cached": {
                "routes": [{"upstream": "robust", "model": "robust-cached"}],
                "cache": {"ttl": 60, "deterministic_only": False},
            },
            "same": {"routes": [{"upstream": "robust", "model": "same"}]},  # body passed as is
            "pattern/*": {"routes": [{"upstream": "robust"}]},
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
    }


@pytest.fixture(scope="session")
def robust_upstream() -> Iterator[RobustUpstream]:
    with RobustUpstream() as upstream:
        yield upstream


@pytest.fixture(scope="session")
def fuzz_proxy(proxy_launcher: ProxyLauncher, robust_upstream: RobustUpstream) -> RunningProxy:
    return proxy_launcher.start(fuzz_policy(robust_upstream.base_url))
