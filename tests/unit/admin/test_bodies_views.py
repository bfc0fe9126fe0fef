"""What the admin API accepts (bodies and query parameters, every problem naming its field) and
what it shows (usage as CSV, the policy with every secret masked)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from proxy.admin.bodies import KeyCreate, KeyPatch, audit_limit, decode, usage_query
from proxy.admin.records import UsageTotal
from proxy.admin.views import masked_policy, usage_csv, usage_rows
from proxy.errors import InvalidRequestError
from proxy.loader import ConfigError, load_dict
from proxy.observability.logging import Redactor

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def test_a_create_body_takes_the_policy_key_fields() -> None:
    body = decode(
        b'{"name": "team-a", "models": ["gpt-*"], "limits": {"requests": "5/second", '
        b'"burst": 10}, "budget": {"usd": 3}, "expires_at": "2027-01-01", "metadata": {"a": "b"}}',
        KeyCreate,
    )
    assert body.limits is not None and body.limits.burst == 10
    assert body.budget is not None and body.budget.period == "month"
    assert decode(b'{"name": "x"}', KeyCreate).models == ["*"]


def test_a_patch_tells_left_out_from_null() -> None:
    patch = decode(b'{"budget": null}', KeyPatch)
    assert patch.budget is None
    assert type(patch.models).__name__ == "UnsetType"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"[]", None),
        (b'{"name": 5}', "name"),
        (b'{"name": "x", "limits": {"concurrency": 0}}', "limits.concurrency"),
        (b'{"name": "x", "limits": {"requests": "often"}}', "limits.requests"),
        (b'{"name": "x", "metadata": {"k": 1}}', "metadata"),
        (b'{"name": "x", "expires_at": "2026-02-30"}', "expires_at"),
    ],
)
def test_bad_bodies_name_the_field(body: bytes, param: str | None) -> None:
    with pytest.raises(InvalidRequestError) as error:
        decode(body, KeyCreate)
    assert error.value.param == param
    assert "$." not in error.value.message


def test_usage_query_defaults_and_dates() -> None:
    query, output = usage_query({}, NOW)
    assert output == "json" and query.group_by == "key"
    assert query.until == NOW.timestamp() and NOW.timestamp() - query.since == 30 * 86400
    query, output = usage_query(
        {"group_by": "day", "since": "2026-12-01", "until": "2026-12-02", "format": "csv"}, NOW
    )
    assert output == "csv"
    assert query.since == datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    assert query.until == datetime(2026, 12, 3, tzinfo=UTC).timestamp(), "a day is taken whole"
    query, _ = usage_query(
        {"since": "2026-12-01T08:00:00+02:00", "until": "2026-12-01T09:00Z"}, NOW
    )
    assert query.until - query.since == 3 * 3600


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"group_by": "hour"}, "group_by"),
        ({"format": "tsv"}, "format"),
        ({"since": "yesterday"}, "since"),
        ({"until": "12/01/2026"}, "until"),
        ({"since": "2026-12-03", "until": "2026-12-01"}, "since"),
    ],
)
def test_bad_usage_parameters(params: dict[str, str], param: str) -> None:
    with pytest.raises(InvalidRequestError) as error:
        usage_query(params, NOW)
    assert error.value.param == param


def test_audit_limit() -> None:
    assert audit_limit({}) == 100 and audit_limit({"limit": "5"}) == 5
    with pytest.raises(InvalidRequestError):
        audit_limit({"limit": "-1"})


def test_usage_as_csv_has_a_header_named_by_the_group() -> None:
    rows = usage_rows("model", [UsageTotal("chat", 2, 10, 20, 0.5)])
    assert rows == [
        {
            "model": "chat",
            "requests": 2,
            "prompt_tokens": 10,
            "completion_tokens": 20,
            "spend_usd": 0.5,
        }
    ]
    assert usage_csv("model", rows) == (
        "model,requests,prompt_tokens,completion_tokens,spend_usd\nchat,2,10,20,0.5\n"
    )


SECRETS = {
    "UPSTREAM": "sk-upstream-0123456789",
    "HEADER": "org-secret-header-value",
    "CLIENT": "client-key-abcdef",
    "ADMIN": "admin-key-abcdef-12345",
    "PASSWORD": "pg-pass-word",
    "REDIS_PASSWORD": "redis-pass-word",
}


def secret_policy() -> dict[str, Any]:
    return {
        "upstreams": {
            "up": {
                "type": "openai",
                "api_key": "${UPSTREAM}",
                "headers": {"OpenAI-Organization": "${HEADER}"},
            }
        },
        "models": {"m": {"routes": [{"upstream": "up"}]}},
        "keys": [{"name": "c", "key": "${CLIENT}"}, {"name": "h", "sha256": "ab" * 32}],
        "limits": {"storage": "redis://:${REDIS_PASSWORD}@redis:6379/0"},
        "admin": {"key": "${ADMIN}", "store": "postgresql://proxy:${PASSWORD}@db:5432/proxy"},
    }


def test_the_policy_is_shown_with_every_secret_masked() -> None:
    loaded = load_dict(secret_policy(), env=SECRETS)
    shown = masked_policy(loaded.config, Redactor(loaded.secrets))
    text = str(shown)
    for secret in (*SECRETS.values(), "ab" * 32):
        assert secret not in text, secret
    assert shown["upstreams"]["up"]["api_key"] == "***"
    assert shown["upstreams"]["up"]["headers"] == {"OpenAI-Organization": "***"}
    assert shown["admin"]["store"] == "postgresql://proxy:***@db:5432/proxy"
    assert shown["limits"]["storage"] == "redis://:***@redis:6379/0"
    assert shown["models"]["m"]["routes"][0]["upstream"] == "up"


def test_admin_config_in_the_policy() -> None:
    loaded = load_dict(secret_policy(), env=SECRETS)
    assert loaded.config.admin.enabled and loaded.config.admin.ui
    assert {SECRETS["ADMIN"], SECRETS["PASSWORD"]} <= set(loaded.secrets)
    off = load_dict({"admin": {"key": "${LLM_PROXY_ADMIN_KEY}"}}, env={})
    assert not off.config.admin.enabled
    assert off.warnings == ["admin is off: environment variable LLM_PROXY_ADMIN_KEY is not set"]
    with pytest.raises(ConfigError) as error:
        load_dict({"admin": {"key": "k", "store": "mysql://db/x"}}, env={})
    assert error.value.problems[0].path == "admin.store"
    with pytest.raises(ConfigError):
        load_dict({"admin": {"key": "k", "stor": "x"}}, env={})
