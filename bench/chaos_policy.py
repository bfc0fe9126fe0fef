"""The policies of the chaos run: a realistic one (weighted and priority routes, fallbacks,
breakers, key limits, a Redis cache and Redis limits, a native Responses API route, an
Anthropic route, an embeddings model with its per-input cache, stored responses in Redis, the
admin API on a SQLite file the replicas share), the valid change written during the run, and
the invalid file written after it. Every replica of the run reads the same file."""

from __future__ import annotations

import copy
from typing import Any

from bench.chaos_faults import Timeouts

KEYS = {
    "svc": "sk-chaos-svc-0001",
    "tight": "sk-chaos-tight-0002",
    "batch": "sk-chaos-batch-0003",
    "exact": "sk-chaos-exact-0004",  # the replica check's burst alone uses it
}
EXACT_LIMIT = 30  # requests a minute for the "exact" key, across every replica
EXACT_REQUESTS = f"{EXACT_LIMIT}/minute"
UPSTREAM_KEYS = {
    "up-a": "sk-chaos-upstream-A-secret",
    "up-b": "sk-chaos-upstream-B-secret",
    "up-c": "sk-chaos-upstream-C-secret",
    "up-long": "sk-chaos-upstream-L-secret",
    "up-steady": "sk-chaos-upstream-S-secret",
    "up-dead": "sk-chaos-upstream-D-secret",
    "up-native": "sk-chaos-upstream-N-secret",
    "up-claude": "sk-chaos-upstream-K-secret",
}
ADMIN_KEY = "sk-chaos-admin-0005"
DRAIN_TIMEOUT = 12.0  # > retry.deadline + one attempt's total: every JSON request can finish
DEADLINE = 6.0

# The public models a request may name, and the names its answer may carry (fallbacks).
FALLBACKS = {
    "chat-weighted": ("chat-weighted", "chat-backup"),
    "chat-priority": ("chat-priority", "chat-backup"),
    "chat-cached": ("chat-cached",),
    "chat-backup": ("chat-backup",),
    "chat-new": ("chat-new", "chat-backup"),
    "chat-long": ("chat-long",),
    "chat-exact": ("chat-exact",),
    "chat-dead": ("chat-dead",),
    "resp-native": ("resp-native", "chat-backup"),
    "claude-chaos": ("claude-chaos", "chat-backup"),
    "embed-cached": ("embed-cached",),
}


def chaos_policy(
    urls: dict[str, str], redis_url: str, timeouts: Timeouts, admin_store: str
) -> dict[str, Any]:
    """`urls`: upstream name -> its base URL (up-a flaky, up-b slow, up-c backup, up-long;
    up-steady always answers and up-dead always fails, for the replica checks; up-native
    speaks the Responses API; up-claude is Anthropic's Messages API)."""

    def upstream(name: str, **extra: Any) -> dict[str, Any]:
        return {
            "type": "openai",
            "base_url": urls[name],
            "api_key": UPSTREAM_KEYS[name],
            "timeout": timeouts.as_policy(),
            **extra,
        }

    redis_db1 = redis_url.rsplit("/", 1)[0] + "/1"
    return {
        "server": {"drain_timeout": DRAIN_TIMEOUT, "max_stream_seconds": 60},
        "upstreams": {
            "up-a": upstream("up-a"),
            "up-b": upstream("up-b", limits={"requests": "200/second"}),
            "up-c": upstream("up-c"),
            "up-long": upstream(
                "up-long", timeout={"connect": 1, "first_token": 5, "idle": 5, "total": 30}
            ),
            "up-steady": upstream("up-steady"),
            "up-dead": upstream("up-dead"),
            "up-native": upstream("up-native", responses="native"),
            "up-claude": upstream("up-claude", type="anthropic"),
        },
        "models": _models(),
        "keys": [
            {"name": "svc", "key": KEYS["svc"], "limits": {"concurrency": 64}},
            {
                "name": "tight",
                "key": KEYS["tight"],
                "limits": {"requests": "4/second", "tokens": "20000/minute"},
            },
            {"name": "batch", "key": KEYS["batch"], "limits": {"requests": "6000/minute"}},
            {"name": "exact", "key": KEYS["exact"], "limits": {"requests": EXACT_REQUESTS}},
        ],
        "limits": {"storage": redis_url, "on_storage_error": "allow"},
        "cache": {"backend": "redis", "url": redis_db1, "ttl": 300},
        "responses": {"storage": "redis"},  # shared by the replicas, lost when Redis restarts
        "retry": {"attempts": 2, "initial_delay": 0.05, "max_delay": 2.0, "deadline": DEADLINE},
        "circuit_breaker": {
            "failures": 5,
            "window": 10,
            "cooldown": 2,
            "max_cooldown": 8,
            "auth_cooldown": 5,
        },
        "logging": {"level": "INFO"},
        "admin": {"key": ADMIN_KEY, "store": admin_store},
    }


def _models() -> dict[str, Any]:
    """The public models: the load's (weighted, priority, cached, the backup, a native Responses
    API route, an Anthropic route, embeddings), the shutdown's (chat-long) and the replica
    checks' (chat-exact, chat-dead)."""
    return {
        "chat-weighted": {
            "strategy": "weighted",
            "routes": [
                {"upstream": "up-a", "model": "a-weighted", "weight": 3},
                {"upstream": "up-b", "model": "b-weighted", "weight": 1},
            ],
            "fallbacks": ["chat-backup"],
        },
        "chat-priority": {
            "strategy": "priority",
            "routes": [
                {"upstream": "up-b", "model": "b-priority"},
                {"upstream": "up-a", "model": "a-priority"},
            ],
            "fallbacks": ["chat-backup"],
        },
        "chat-cached": {
            "strategy": "priority",
            "routes": [
                {"upstream": "up-a", "model": "a-cached"},
                {"upstream": "up-c", "model": "c-cached"},
            ],
            "cache": {"ttl": 300},
        },
        "chat-backup": {"routes": [{"upstream": "up-c", "model": "c-backup"}]},
        "chat-long": {"routes": [{"upstream": "up-long", "model": "long"}]},
        "chat-exact": {"routes": [{"upstream": "up-steady", "model": "steady"}]},
        "chat-dead": {"routes": [{"upstream": "up-dead", "model": "dead"}]},
        "resp-native": {
            "routes": [{"upstream": "up-native", "model": "n-native"}],
            "fallbacks": ["chat-backup"],
        },
        "claude-chaos": {
            "routes": [{"upstream": "up-claude", "model": "claude-fake"}],
            "fallbacks": ["chat-backup"],
        },
        "embed-cached": {
            "strategy": "priority",
            "routes": [
                {"upstream": "up-a", "model": "a-embed"},
                {"upstream": "up-c", "model": "c-embed"},
            ],
            "cache": {"ttl": 300},
        },
    }


def changed_policy(policy: dict[str, Any]) -> dict[str, Any]:
    """The valid edit: a new model, and the weighted split turned 1:1."""
    changed = copy.deepcopy(policy)
    changed["models"]["chat-new"] = {
        "routes": [{"upstream": "up-c", "model": "c-new"}],
        "fallbacks": ["chat-backup"],
    }
    for route in changed["models"]["chat-weighted"]["routes"]:
        route["weight"] = 1
    return changed


def invalid_policy(policy: dict[str, Any]) -> dict[str, Any]:
    """The bad edit: a route to an upstream that does not exist and a timeout that is text."""
    invalid = copy.deepcopy(policy)
    invalid["models"]["chat-new"]["routes"].append({"upstream": "nowhere", "model": "x"})
    invalid["upstreams"]["up-a"]["timeout"] = {"total": "soon"}
    return invalid
