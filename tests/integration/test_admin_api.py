"""The admin API on a real proxy (SQLite store) against the fake OpenAI upstream: runtime keys
(create, list, get, change, delete, rotate) used at once by the OpenAI SDK, every error in
OpenAI's envelope, the usage ledger grouped four ways in JSON and CSV with spend from the
prices, the audit trail, the overview, the masked policy, /health, and the admin key kept
out of every answer and log."""

from __future__ import annotations

import csv
import hashlib
import io
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fakes.openai_upstream import FakeOpenAI
from fakes.proxy_harness import UPSTREAM_KEY, ProxyLauncher, RunningProxy, sha256_hex

from .conftest import USER_MESSAGES, assert_openai_error

ADMIN_KEY = "admin-key-for-the-tests-0123456789"
FILE_KEY = "sk-file-key-for-admin-tests"
HASHED_FILE_KEY = "sk-hashed-file-key-for-admin-tests"
PRICES = {"admin-up-a": (1.0, 2.0), "admin-up-b": (3.0, 5.0)}  # USD per million: in, out
MODELS = {"chat-a": "admin-up-a", "chat-b": "admin-up-b"}


def admin_policy(base_url: str, store: str) -> dict[str, Any]:
    upstream = {"type": "openai", "base_url": base_url, "api_key": UPSTREAM_KEY}
    return {
        "server": {"drain_timeout": 1},
        "upstreams": {"fake": upstream},
        "models": {
            public: {"routes": [{"upstream": "fake", "model": model}]}
            for public, model in MODELS.items()
        },
        "keys": [
            {"name": "file-key", "key": FILE_KEY, "models": ["chat-a"]},
            {"name": "file-hashed", "sha256": sha256_hex(HASHED_FILE_KEY)},
        ],
        "prices": {model: {"input": i, "output": o} for model, (i, o) in PRICES.items()},
        "admin": {"key": "${LLM_PROXY_ADMIN_KEY}", "store": store},
        "retry": {"attempts": 1, "initial_delay": 0.01, "max_delay": 0.05, "deadline": 30},
        "cache": {"backend": "none"},
    }


@pytest.fixture(scope="module")
def admin_proxy(
    proxy_launcher: ProxyLauncher,
    fake_openai_server: FakeOpenAI,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningProxy]:
    store = f"sqlite:///{tmp_path_factory.mktemp('admin') / 'admin.db'}"
    policy = admin_policy(fake_openai_server.base_url, store)
    running = proxy_launcher.start(policy, env={"LLM_PROXY_ADMIN_KEY": ADMIN_KEY})
    yield running
    running.stop()


@pytest.fixture
def admin(admin_proxy: RunningProxy) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=admin_proxy.url, headers=headers, timeout=10) as client:
        yield client


def unique(prefix: str = "k") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def sdk(proxy: RunningProxy, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key=key, max_retries=0, timeout=20)


def create(admin: httpx.Client, **body: Any) -> dict[str, Any]:
    body.setdefault("name", unique())
    response = admin.post("/admin/keys", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return assert_openai_error(response.json())


def eventually(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


# -- admin off, and who may call ---------------------------------------------------------------


def test_admin_is_404_when_off(proxy: RunningProxy) -> None:
    with httpx.Client(base_url=proxy.url, timeout=10) as http:
        for method, path in (
            ("GET", "/admin/keys"),
            ("POST", "/admin/keys"),
            ("GET", "/admin/usage"),
        ):
            response = http.request(method, path, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
            error_of(response, 404)


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (None, 401),
        ("Basic YWRtaW46YWRtaW4=", 401),
        ("Bearer", 401),
        ("Bearer not-the-admin-key", 403),
        (f"Bearer {FILE_KEY}", 403),
        (f"Bearer {ADMIN_KEY}x", 403),
    ],
)
def test_admin_calls_need_the_admin_key(
    admin_proxy: RunningProxy, authorization: str | None, status: int
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    with httpx.Client(base_url=admin_proxy.url, headers=headers, timeout=10) as http:
        for method, path in (
            ("GET", "/admin/keys"),
            ("POST", "/admin/keys"),
            ("GET", "/admin/audit"),
        ):
            error = error_of(http.request(method, path, json={"name": "x"}), status)
            assert ADMIN_KEY not in str(error)


def test_the_admin_key_is_not_a_client_key(admin_proxy: RunningProxy) -> None:
    with sdk(admin_proxy, ADMIN_KEY) as client, pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="chat-a", messages=USER_MESSAGES)


def test_wrong_method_and_unknown_admin_path(admin: httpx.Client) -> None:
    error_of(admin.put("/admin/keys", json={}), 405)
    error_of(admin.get("/admin/nothing-here"), 404)


# -- creating keys ---------------------------------------------------------------------------


def test_a_created_key_works_at_once_and_its_secret_is_shown_once(
    admin: httpx.Client, admin_proxy: RunningProxy
) -> None:
    created = create(admin, models=["chat-*"], metadata={"team": "search"})
    secret, name = created["key"], created["name"]
    assert secret.startswith("sk-") and len(secret) > 40
    assert created["source"] == "runtime" and created["metadata"] == {"team": "search"}
    with sdk(admin_proxy, secret) as client:
        reply = client.chat.completions.create(model="chat-a", messages=USER_MESSAGES)
    assert reply.choices[0].message.content
    shown = admin.get(f"/admin/keys/{name}")
    assert shown.status_code == 200 and shown.json()["name"] == name
    listing = admin.get("/admin/keys")
    assert listing.headers["cache-control"] == "no-store"
    for text in (shown.text, listing.text):
        assert "key" not in shown.json() and secret not in text
        assert hashlib.sha256(secret.encode()).hexdigest() not in text
        assert sha256_hex(HASHED_FILE_KEY) not in text and FILE_KEY not in text
    sources = {key["name"]: key["source"] for key in listing.json()["data"]}
    assert sources[name] == "runtime"
    assert sources["file-key"] == sources["file-hashed"] == "file"
    file_key = admin.get("/admin/keys/file-key").json()
    assert file_key["source"] == "file" and file_key["models"] == ["chat-a"]
    assert file_key["created_at"] is None and file_key["limits_state"] == []


def test_a_created_key_takes_the_policy_key_fields(
    admin: httpx.Client, admin_proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    created = create(admin, models=["chat-b"], limits={"requests": "1/minute"})
    assert created["limits"] == {"requests": "1/minute"}
    with sdk(admin_proxy, created["key"]) as client:
        with pytest.raises(openai.PermissionDeniedError):
            client.chat.completions.create(model="chat-a", messages=USER_MESSAGES)
        client.chat.completions.create(model="chat-b", messages=USER_MESSAGES)
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="chat-b", messages=USER_MESSAGES)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "has space"}, "name"),
        ({"name": "a/b"}, "name"),
        ({"name": "ok", "color": "red"}, "color"),
        ({"name": "ok", "models": "chat-a"}, "models"),
        ({"name": "ok", "limits": {"requests": "lots"}}, "limits.requests"),
        ({"name": "ok", "limits": {"tokens": "10/fortnight"}}, "limits.tokens"),
        ({"name": "ok", "limits": {"burst": 5}}, "limits.burst"),
        ({"name": "ok", "limits": {"requests": "1/second", "spare": 1}}, "limits.spare"),
        ({"name": "ok", "budget": {"usd": -1}}, "budget.usd"),
        ({"name": "ok", "budget": {"usd": 5, "period": "year"}}, "budget.period"),
        ({"name": "ok", "expires_at": "tomorrow"}, "expires_at"),
        ({"name": "ok", "expires_at": "2026-13-45"}, "expires_at"),
        ({"name": "ok", "metadata": {"team": 7}}, "metadata"),
    ],
)
def test_create_names_the_bad_field(admin: httpx.Client, body: dict[str, Any], param: str) -> None:
    error = error_of(admin.post("/admin/keys", json=body), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param, error


def test_create_with_a_body_that_is_not_json(admin: httpx.Client) -> None:
    error = error_of(admin.post("/admin/keys", content=b"{name: nope"), 400)
    assert "JSON" in error["message"]


def test_names_are_unique_across_file_and_runtime_keys(admin: httpx.Client) -> None:
    error = error_of(admin.post("/admin/keys", json={"name": "file-key"}), 409)
    assert error["param"] == "name"
    name = create(admin)["name"]
    error_of(admin.post("/admin/keys", json={"name": name}), 409)


def test_an_expired_key_is_refused(admin: httpx.Client, admin_proxy: RunningProxy) -> None:
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    created = create(admin, expires_at=past)
    assert created["expired"] is True and created["active"] is False
    with (
        sdk(admin_proxy, created["key"]) as client,
        pytest.raises(openai.AuthenticationError) as exc,
    ):
        client.chat.completions.create(model="chat-a", messages=USER_MESSAGES)
    assert exc.value.code == "expired_api_key"


# -- changing keys ---------------------------------------------------------------------------


def test_patch_changes_and_null_clears(admin: httpx.Client, admin_proxy: RunningProxy) -> None:
    created = create(admin, models=["chat-b"], budget={"usd": 5, "period": "day"})
    name, secret = created["name"], created["key"]
    changed = admin.patch(
        f"/admin/keys/{name}", json={"models": ["chat-a"], "metadata": {"owner": "ops"}}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["models"] == ["chat-a"] and changed.json()["metadata"] == {"owner": "ops"}
    assert changed.json()["budget"] == {"usd": 5.0, "period": "day"}  # left out: unchanged
    with sdk(admin_proxy, secret) as client:
        client.chat.completions.create(model="chat-a", messages=USER_MESSAGES)
        with pytest.raises(openai.PermissionDeniedError):
            client.chat.completions.create(model="chat-b", messages=USER_MESSAGES)
    cleared = admin.patch(f"/admin/keys/{name}", json={"models": None, "budget": None})
    assert cleared.json()["models"] == ["*"] and cleared.json()["budget"] is None
    with sdk(admin_proxy, secret) as client:
        client.chat.completions.create(model="chat-b", messages=USER_MESSAGES)
    expired = admin.patch(f"/admin/keys/{name}", json={"expires_at": "2001-01-01T00:00:00Z"})
    assert expired.json()["expired"] is True
    with sdk(admin_proxy, secret) as client, pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="chat-b", messages=USER_MESSAGES)


def test_patch_errors(admin: httpx.Client) -> None:
    name = create(admin)["name"]
    assert error_of(admin.patch(f"/admin/keys/{name}", json={"name": "x"}), 400)["param"] == "name"
    bad = admin.patch(f"/admin/keys/{name}", json={"limits": {"requests": "x"}})
    assert error_of(bad, 400)["param"] == "limits.requests"
    error_of(admin.patch(f"/admin/keys/{unique('missing')}", json={"models": ["*"]}), 404)
    error_of(admin.patch("/admin/keys/file-key", json={"models": ["*"]}), 409)


def test_delete_refuses_the_key_at_once(admin: httpx.Client, admin_proxy: RunningProxy) -> None:
    created = create(admin)
    name = created["name"]
    with sdk(admin_proxy, created["key"]) as client:
        client.chat.completions.create(model="chat-a", messages=USER_MESSAGES)
        deleted = admin.delete(f"/admin/keys/{name}")
        assert deleted.status_code == 200 and deleted.json() == {"name": name, "deleted": True}
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="chat-a", messages=USER_MESSAGES)
    error_of(admin.get(f"/admin/keys/{name}"), 404)
    error_of(admin.delete(f"/admin/keys/{name}"), 404)
    error_of(admin.delete("/admin/keys/file-hashed"), 409)
    assert name not in {k["name"] for k in admin.get("/admin/keys").json()["data"]}


def test_rotate_replaces_the_secret_at_once(admin: httpx.Client, admin_proxy: RunningProxy) -> None:
    created = create(admin)
    rotated = admin.post(f"/admin/keys/{created['name']}/rotate")
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["key"]
    assert new.startswith("sk-") and new != created["key"]
    with sdk(admin_proxy, created["key"]) as old, pytest.raises(openai.AuthenticationError):
        old.chat.completions.create(model="chat-a", messages=USER_MESSAGES)
    with sdk(admin_proxy, new) as client:
        client.chat.completions.create(model="chat-a", messages=USER_MESSAGES)
    error_of(admin.post("/admin/keys/file-key/rotate"), 409)
    error_of(admin.post(f"/admin/keys/{unique('missing')}/rotate"), 404)


# -- budgets, usage, audit ---------------------------------------------------------------------


def spend_of(usage: Any, model: str) -> float:
    price_in, price_out = PRICES[MODELS[model]]
    return float(usage.prompt_tokens * price_in + usage.completion_tokens * price_out) / 1e6


def test_spend_against_budget_comes_from_the_limiter(
    admin: httpx.Client, admin_proxy: RunningProxy
) -> None:
    created = create(admin, budget={"usd": 1, "period": "month"})
    with sdk(admin_proxy, created["key"]) as client:
        reply = client.chat.completions.create(model="chat-b", messages=USER_MESSAGES)
    shown = admin.get(f"/admin/keys/{created['name']}").json()
    assert shown["spend"]["spent_usd"] == pytest.approx(spend_of(reply.usage, "chat-b"))
    assert shown["spend"]["remaining_usd"] == pytest.approx(1 - spend_of(reply.usage, "chat-b"))
    listed = next(
        k for k in admin.get("/admin/keys").json()["data"] if k["name"] == created["name"]
    )
    assert listed["spend"] == shown["spend"]


def usage_rows(admin: httpx.Client, group_by: str, **params: str) -> list[dict[str, Any]]:
    response = admin.get("/admin/usage", params={"group_by": group_by, **params})
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["data"]
    return rows


def test_usage_grouped_by_key_model_route_and_day(
    admin: httpx.Client, admin_proxy: RunningProxy
) -> None:
    first, second = create(admin), create(admin)
    spent: dict[str, float] = {first["name"]: 0.0, second["name"]: 0.0}
    tokens = {first["name"]: [0, 0], second["name"]: [0, 0]}
    for key, models in ((first, ["chat-a", "chat-b", "chat-b"]), (second, ["chat-a"])):
        with sdk(admin_proxy, key["key"]) as client:
            for model in models:
                reply = client.chat.completions.create(model=model, messages=USER_MESSAGES)
                assert reply.usage is not None
                spent[key["name"]] += spend_of(reply.usage, model)
                tokens[key["name"]][0] += reply.usage.prompt_tokens
                tokens[key["name"]][1] += reply.usage.completion_tokens
    with sdk(admin_proxy, second["key"]) as client:  # a stream is one row too, spend included
        chunks = client.chat.completions.create(
            model="chat-b",
            messages=USER_MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        streamed = [chunk.usage for chunk in chunks if chunk.usage is not None][-1]
    spent[second["name"]] += spend_of(streamed, "chat-b")
    tokens[second["name"]][0] += streamed.prompt_tokens
    tokens[second["name"]][1] += streamed.completion_tokens

    def by_key() -> dict[str, dict[str, Any]]:
        rows = {row["key"]: row for row in usage_rows(admin, "key")}
        complete = second["name"] in rows and rows[second["name"]]["requests"] == 2
        return rows if complete and rows[first["name"]]["requests"] == 3 else {}

    with sdk(admin_proxy, "sk-not-a-key") as stranger, pytest.raises(openai.AuthenticationError):
        stranger.chat.completions.create(model="chat-a", messages=USER_MESSAGES)
    rows = eventually(by_key)
    assert rows, "the ledger did not show the requests within 5 s"
    assert "-" not in rows, "a request without a valid key is no one's usage"
    for name, row in ((first["name"], rows[first["name"]]), (second["name"], rows[second["name"]])):
        assert set(row) == {"key", "requests", "prompt_tokens", "completion_tokens", "spend_usd"}
        assert [row["prompt_tokens"], row["completion_tokens"]] == tokens[name]
        assert row["spend_usd"] == pytest.approx(spent[name])
    models = {row["model"]: row for row in usage_rows(admin, "model")}
    assert {"chat-a", "chat-b"} <= set(models) and models["chat-b"]["requests"] >= 3
    routes = {row["route"] for row in usage_rows(admin, "route")}
    assert {"fake/admin-up-a", "fake/admin-up-b"} <= routes
    today = datetime.now(UTC).date().isoformat()
    days = {row["day"]: row for row in usage_rows(admin, "day")}
    assert days[today]["requests"] >= 5


def test_usage_as_csv_and_within_dates(admin: httpx.Client, admin_proxy: RunningProxy) -> None:
    created = create(admin)
    with sdk(admin_proxy, created["key"]) as client:
        client.chat.completions.create(model="chat-a", messages=USER_MESSAGES)
    assert eventually(lambda: created["name"] in {r["key"] for r in usage_rows(admin, "key")})
    response = admin.get("/admin/usage", params={"group_by": "key", "format": "csv"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(response.text)))
    assert table[0] == ["key", "requests", "prompt_tokens", "completion_tokens", "spend_usd"]
    row = next(r for r in table[1:] if r[0] == created["name"])
    assert row[1] == "1" and float(row[4]) > 0
    today = datetime.now(UTC).date()
    yesterday = (today - timedelta(days=1)).isoformat()
    assert not usage_rows(admin, "key", since="2020-01-01", until=yesterday)
    within = usage_rows(admin, "key", since=yesterday, until=today.isoformat())
    assert created["name"] in {r["key"] for r in within}, "a date as `until` takes in that day"
    an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert created["name"] in {r["key"] for r in usage_rows(admin, "key", since=an_hour_ago)}
    before = usage_rows(admin, "key", until=an_hour_ago.replace("+00:00", "Z"))
    assert created["name"] not in {r["key"] for r in before}


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"group_by": "team"}, "group_by"),
        ({"format": "xml"}, "format"),
        ({"since": "last week"}, "since"),
        ({"until": "2026-02-30"}, "until"),
        ({"since": "2026-12-02", "until": "2026-12-01"}, "since"),
    ],
)
def test_usage_names_the_bad_parameter(
    admin: httpx.Client, params: dict[str, str], param: str
) -> None:
    assert error_of(admin.get("/admin/usage", params=params), 400)["param"] == param


def test_audit_lists_changes_newest_first_without_secrets(admin: httpx.Client) -> None:
    created = create(admin, budget={"usd": 2})
    name = created["name"]
    admin.patch(f"/admin/keys/{name}", json={"models": ["chat-a"]})
    rotated = admin.post(f"/admin/keys/{name}/rotate").json()
    admin.delete(f"/admin/keys/{name}")
    response = admin.get("/admin/audit", params={"key": name})
    assert response.status_code == 200
    entries = response.json()["data"]
    assert [e["action"] for e in entries] == ["delete", "rotate", "update", "create"]
    assert entries[2]["changes"] == {"models": ["chat-a"]}
    assert entries[3]["changes"]["budget"] == {"usd": 2.0, "period": "month"}
    assert all(e["key"] == name and e["at"].endswith("Z") for e in entries)
    for secret in (created["key"], rotated["key"]):
        assert secret not in response.text
        assert hashlib.sha256(secret.encode()).hexdigest() not in response.text
    assert len(admin.get("/admin/audit", params={"limit": "2"}).json()["data"]) == 2
    for bad in ("0", "abc", "100000"):
        assert error_of(admin.get("/admin/audit", params={"limit": bad}), 400)["param"] == "limit"


# -- overview, policy, health, secrets ----------------------------------------------------------


def test_overview(admin: httpx.Client, admin_proxy: RunningProxy, fake_openai: FakeOpenAI) -> None:
    created = create(admin)
    with sdk(admin_proxy, created["key"]) as client:
        for _ in range(3):
            client.chat.completions.create(model="chat-a", messages=USER_MESSAGES)
    overview = admin.get("/admin/overview", params={"minutes": "2"}).json()
    traffic = overview["traffic"]
    assert traffic["window_seconds"] == 120 and traffic["requests"] >= 3
    assert (
        traffic["latency_ms"]["p50"] > 0
        and traffic["latency_ms"]["p95"] >= traffic["latency_ms"]["p50"]
    )
    assert traffic["requests_per_second"] > 0 and traffic["per_minute"]
    assert {m["name"]: m["routes"] for m in overview["models"]}["chat-a"] == ["fake/admin-up-a"]
    assert overview["routes"]["fake/admin-up-a"]["state"] == "closed"
    assert overview["policy"]["version"] and overview["keys"]["file"] == 2
    assert overview["storage"]["admin"]["reachable"] is True
    assert (
        error_of(admin.get("/admin/overview", params={"minutes": "60"}), 400)["param"] == "minutes"
    )


def test_policy_is_shown_with_every_secret_masked(admin: httpx.Client) -> None:
    response = admin.get("/admin/policy")
    assert response.status_code == 200
    shown = response.json()
    policy = shown["policy"]
    assert policy["upstreams"]["fake"]["api_key"] == "***"
    assert policy["keys"][0]["key"] == "***" and policy["keys"][1]["sha256"] == "***"
    assert policy["admin"]["key"] == "***"
    assert policy["models"]["chat-a"]["routes"][0]["model"] == "admin-up-a"
    for secret in (ADMIN_KEY, UPSTREAM_KEY, FILE_KEY, sha256_hex(HASHED_FILE_KEY)):
        assert secret not in response.text
    assert shown["version"] and "last_reload" in shown
    assert shown["admin_store"].startswith("sqlite:///") and shown["admin_store"].endswith(
        "admin.db"
    )


def test_health_shows_the_store_and_the_ledger(
    admin: httpx.Client, admin_proxy: RunningProxy
) -> None:
    with httpx.Client(base_url=admin_proxy.url, timeout=10) as http:
        response = http.get("/health")
    entry = response.json()["storage"]["admin"]
    assert entry["store"] == "sqlite" and entry["reachable"] is True
    assert entry["keys_loaded"] >= 0 and entry["last_refresh"] > 0
    assert {"queued", "dropped", "written"} <= set(entry["ledger"])
    assert ADMIN_KEY not in response.text


def test_no_secret_reaches_the_log(admin: httpx.Client, admin_proxy: RunningProxy) -> None:
    created = create(admin)
    rotated = admin.post(f"/admin/keys/{created['name']}/rotate").json()
    with sdk(admin_proxy, rotated["key"]) as client:
        client.chat.completions.create(model="chat-a", messages=USER_MESSAGES)
    admin.get("/admin/keys", headers={"Authorization": "Bearer wrong-admin-key-123"})
    log = admin_proxy.wait_for_log(f"key={created['name']}")  # the access line names the key...
    for secret in (ADMIN_KEY, created["key"], rotated["key"]):
        assert secret not in log  # ...never its secret


def test_unset_admin_key_leaves_admin_off_with_a_warning(
    start_proxy: Callable[..., RunningProxy], fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    policy = admin_policy(fake_openai.base_url, f"sqlite:///{tmp_path / 'off.db'}")
    running = start_proxy(policy)  # LLM_PROXY_ADMIN_KEY is not set
    assert "admin is off: environment variable LLM_PROXY_ADMIN_KEY is not set" in running.log()
    with httpx.Client(base_url=running.url, timeout=10) as http:
        error_of(http.get("/admin/keys", headers={"Authorization": "Bearer x"}), 404)
        assert "admin" not in http.get("/health").json()["storage"]
    assert not (tmp_path / "off.db").exists()
