"""Every error class the proxy produces reaches the SDK as the exception OpenAI itself would
cause, in the OpenAI envelope, never as a 422 or a stack trace (docs/semantics.md, "Statuses")."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from fakes.openai_upstream import (
    CONTEXT_LENGTH_MESSAGE,
    FakeOpenAI,
    context_length_exceeded,
    drop_before_response,
    garbage,
    hang,
    invalid_api_key,
    rate_limited,
    status,
)
from fakes.proxy_harness import (
    CLIENT_KEY_A,
    CLIENT_KEY_B,
    MAX_BODY_BYTES,
    MISSING_ENV_VAR,
    UPSTREAM_AUTH_KEY,
    UPSTREAM_KEY,
    RunningProxy,
)

from .conftest import USER_MESSAGES, assert_openai_error


def error_of(exc: openai.APIStatusError) -> dict[str, Any]:
    """The full envelope the proxy sent, checked for shape."""
    return assert_openai_error(exc.response.json())


def kind_of(error: dict[str, Any]) -> set[Any]:
    """The statuses table (docs/semantics.md) names a type or a code; accept either field."""
    return {error.get("type"), error.get("code")}


# ---- our own refusals: auth, permission, model


def test_no_key_is_401(http: httpx.Client, fake_openai: FakeOpenAI) -> None:
    request = http.build_request(
        "POST", "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": USER_MESSAGES}
    )
    del request.headers["Authorization"]
    resp = http.send(request)
    assert resp.status_code == 401
    assert "authentication_error" in kind_of(assert_openai_error(resp.json()))
    assert fake_openai.chat_requests == []


def test_wrong_key_is_authentication_error(proxy: RunningProxy, fake_openai: FakeOpenAI) -> None:
    with openai.OpenAI(base_url=proxy.base_url, api_key="sk-wrong", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError) as exc:
            bad.chat.completions.create(model="gpt-4o-mini", messages=USER_MESSAGES)
        assert exc.value.status_code == 401
        assert "authentication_error" in kind_of(error_of(exc.value))
        assert "sk-wrong" not in exc.value.response.text
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
    assert fake_openai.chat_requests == []


def test_key_allow_list_is_403(proxy: RunningProxy, fake_openai: FakeOpenAI) -> None:
    with openai.OpenAI(base_url=proxy.base_url, api_key=CLIENT_KEY_A, max_retries=0) as team_a:
        assert team_a.chat.completions.create(model="gpt-4o-mini", messages=USER_MESSAGES)
        with pytest.raises(openai.PermissionDeniedError) as exc:
            team_a.chat.completions.create(model="chat-b", messages=USER_MESSAGES)
    assert exc.value.status_code == 403
    assert "permission_denied" in kind_of(error_of(exc.value))
    assert len(fake_openai.chat_requests) == 1


def test_unknown_model_is_404(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="no-such-model", messages=USER_MESSAGES)
    error = error_of(exc.value)
    assert error["code"] == "model_not_found"
    assert exc.value.code == "model_not_found"
    assert "no-such-model" in error["message"]
    assert fake_openai.chat_requests == []


def test_unknown_model_is_404_for_a_stream_too(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="no-such-model", messages=USER_MESSAGES, stream=True)
    assert error_of(exc.value)["code"] == "model_not_found"


def test_too_many_messages_is_400(http: httpx.Client, fake_openai: FakeOpenAI) -> None:
    messages = [{"role": "user", "content": "hi"}] * 2049  # server.max_messages: 2048
    resp = http.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": messages})
    assert resp.status_code == 400, resp.text[:500]
    assert assert_openai_error(resp.json())["param"] == "messages"
    assert fake_openai.chat_requests == []


def test_errors_carry_a_request_id(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(
            model="no-such-model",
            messages=USER_MESSAGES,
            extra_headers={"x-request-id": "err-req-1"},
        )
    assert exc.value.request_id == "err-req-1"


# ---- bad requests


def test_missing_messages_is_400(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.post("/chat/completions", body={"model": "gpt-4o-mini"}, cast_to=object)
    error = error_of(exc.value)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "messages"
    assert fake_openai.chat_requests == []


@pytest.mark.parametrize(
    ("field", "value"),
    [("messages", "hello"), ("model", 123), ("stream", "yes"), ("messages", [42])],
)
def test_wrong_type_names_the_field(
    client: openai.OpenAI, fake_openai: FakeOpenAI, field: str, value: Any
) -> None:
    body = {"model": "gpt-4o-mini", "messages": USER_MESSAGES, field: value}
    with pytest.raises(openai.BadRequestError) as exc:
        client.post("/chat/completions", body=body, cast_to=object)
    error = error_of(exc.value)
    assert error["type"] == "invalid_request_error"
    assert error["param"] is not None and error["param"].split("[")[0].split(".")[0] == field
    assert fake_openai.chat_requests == []


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"",
        b"[1, 2, 3]",
        b'"just a string"',
        b"\xff\xfe\x00garbage",
        b'{"model": "gpt-4o-mini", "messages": [}',
    ],
    ids=["broken", "empty", "array", "string", "binary", "truncated"],
)
def test_body_not_a_json_object_is_400(
    http: httpx.Client, fake_openai: FakeOpenAI, content: bytes
) -> None:
    resp = http.post(
        "/v1/chat/completions", content=content, headers={"content-type": "application/json"}
    )
    assert resp.status_code == 400, resp.text
    assert assert_openai_error(resp.json())["type"] == "invalid_request_error"
    assert fake_openai.chat_requests == []


def test_deeply_nested_body_is_400(http: httpx.Client, fake_openai: FakeOpenAI) -> None:
    """Valid JSON under the size limit that no sane request has: a 400, not a crash."""
    depth = 50_000
    content = (
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "deep": '
        + b"[" * depth
        + b"]" * depth
        + b"}"
    )
    resp = http.post(
        "/v1/chat/completions", content=content, headers={"content-type": "application/json"}
    )
    assert resp.status_code == 400, resp.text
    assert assert_openai_error(resp.json())["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"messages": USER_MESSAGES},
        {"model": "gpt-4o-mini", "messages": None},
        {"model": "gpt-4o-mini", "messages": USER_MESSAGES, "max_tokens": "many"},
        {
            "model": "gpt-4o-mini",
            "messages": USER_MESSAGES,
            "stream_options": "yes",
            "stream": True,
        },
        {"model": None, "messages": USER_MESSAGES},
    ],
    ids=[
        "empty",
        "no-model",
        "null-messages",
        "max-tokens-str",
        "stream-options-str",
        "null-model",
    ],
)
def test_never_422_never_a_stack_trace(http: httpx.Client, body: dict[str, Any]) -> None:
    resp = http.post("/v1/chat/completions", json=body)
    assert resp.status_code == 400, resp.text
    assert_openai_error(resp.json())


def test_unknown_path_is_404_envelope(http: httpx.Client) -> None:
    for method, path in (
        ("GET", "/v1/nope"),
        ("POST", "/v1/completions-typo"),
        ("GET", "/definitely/not/here"),
    ):
        resp = http.request(method, path)
        assert resp.status_code == 404, (method, path, resp.text)
        assert_openai_error(resp.json())


def test_wrong_method_is_405_envelope(http: httpx.Client) -> None:
    for method, path in (
        ("GET", "/v1/chat/completions"),
        ("DELETE", "/v1/chat/completions"),
        ("POST", "/v1/models"),
    ):
        resp = http.request(method, path)
        assert resp.status_code == 405, (method, path, resp.text)
        assert_openai_error(resp.json())


def test_body_too_large_is_413(http: httpx.Client, fake_openai: FakeOpenAI) -> None:
    big = "x" * (MAX_BODY_BYTES + 1024)
    resp = http.post(
        "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": big}]},
    )
    assert resp.status_code == 413, resp.text[:500]
    assert_openai_error(resp.json())
    assert fake_openai.chat_requests == []


def test_chunked_body_too_large_is_413(http: httpx.Client, fake_openai: FakeOpenAI) -> None:
    """No content-length to trust: the limit must hold while reading."""

    def body() -> Iterator[bytes]:
        yield b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "'
        for _ in range(MAX_BODY_BYTES // 4096 + 2):
            yield b"x" * 4096
        yield b'"}]}'

    resp = http.post(
        "/v1/chat/completions", content=body(), headers={"content-type": "application/json"}
    )
    assert resp.status_code == 413, resp.text[:500]
    assert_openai_error(resp.json())
    assert fake_openai.chat_requests == []


def test_body_just_under_the_limit_passes(http: httpx.Client, fake_openai: FakeOpenAI) -> None:
    resp = http.post(
        "/v1/chat/completions",
        json={
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "x" * (MAX_BODY_BYTES // 2)}],
        },
    )
    assert resp.status_code == 200, resp.text[:500]


# ---- upstream failures


def test_upstream_400_message_passed_on(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(context_length_exceeded())
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="err-400", messages=USER_MESSAGES)
    error = error_of(exc.value)
    assert CONTEXT_LENGTH_MESSAGE in error["message"]
    assert error["type"] == "invalid_request_error"
    assert len(fake_openai.chat_requests) == 1  # a client error: no retry


def test_upstream_422_becomes_400(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(status(422, message="Input validation error: `top_k` must be positive"))
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="err-400", messages=USER_MESSAGES)
    assert "`top_k` must be positive" in error_of(exc.value)["message"]


def test_upstream_500_is_502(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(status(500))
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="err-500", messages=USER_MESSAGES)
    assert exc.value.status_code == 502
    assert error_of(exc.value)["type"] == "upstream_error"
    assert fake_openai.last_request.json["model"] == "up-err-500"


def test_upstream_404_is_a_route_failure_502(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    """The route's model id is wrong at the upstream: not the client's 404."""
    fake_openai.script(status(404))
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="err-404", messages=USER_MESSAGES)
    assert exc.value.status_code == 502
    assert error_of(exc.value)["type"] == "upstream_error"


def test_upstream_401_is_502_without_its_message(
    client: openai.OpenAI, fake_openai: FakeOpenAI, proxy: RunningProxy
) -> None:
    fake_openai.script(invalid_api_key())
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="err-auth", messages=USER_MESSAGES)
    assert exc.value.status_code == 502
    error = error_of(exc.value)
    assert "upstream_auth_error" in kind_of(error)
    rec = fake_openai.last_request
    assert rec.headers["authorization"] == f"Bearer {UPSTREAM_AUTH_KEY}"
    answer = exc.value.response.text + str(exc.value.response.headers)
    assert UPSTREAM_AUTH_KEY not in answer
    assert "AUTHFAIL" not in answer and "Incorrect API key" not in answer
    assert UPSTREAM_AUTH_KEY not in proxy.log(), "upstream key written to the log unredacted"


def test_upstream_429_is_429_with_retry_after(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(rate_limited(retry_after=30))
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="err-ratelimit", messages=USER_MESSAGES)
    assert time.monotonic() - started < 5, "waited for a Retry-After longer than max_delay"
    assert exc.value.status_code == 429
    assert "rate_limit_exceeded" in kind_of(error_of(exc.value))
    retry_after = exc.value.response.headers.get("retry-after")
    assert retry_after is not None and 1 <= float(retry_after) <= 30


def test_upstream_hang_past_total_is_504(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(hang(10))
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as exc:
        client.chat.completions.create(model="slow", messages=USER_MESSAGES)
    elapsed = time.monotonic() - started
    assert exc.value.status_code == 504
    assert "timeout" in kind_of(error_of(exc.value))
    assert 1.5 <= elapsed < 5, elapsed  # timeout.total is 2 s on this upstream
    rec = fake_openai.last_request
    assert rec.wait_done(2) and rec.outcome == "cancelled", "upstream request left hanging"


def test_connection_dropped_before_response_is_502(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(drop_before_response())
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="err-drop", messages=USER_MESSAGES)
    assert exc.value.status_code == 502
    assert error_of(exc.value)["type"] == "upstream_error"


def test_garbage_upstream_body_is_502(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(garbage())
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="err-garbage", messages=USER_MESSAGES)
    assert exc.value.status_code == 502
    assert error_of(exc.value)["type"] == "upstream_error"
    assert "<html>" not in exc.value.response.text


def test_unconfigured_upstream_is_503_naming_the_variable(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="unconfigured-model", messages=USER_MESSAGES)
    assert exc.value.status_code == 503
    error = error_of(exc.value)
    assert error["code"] == "upstream_not_configured"
    assert MISSING_ENV_VAR in error["message"]
    assert fake_openai.chat_requests == []


def test_stream_request_errors_before_streaming_are_plain_json(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(status(500))
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="err-500", messages=USER_MESSAGES, stream=True)
    assert exc.value.status_code == 502
    assert error_of(exc.value)["type"] == "upstream_error"


def test_client_key_never_reaches_upstream(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    client.chat.completions.create(model="gpt-4o-mini", messages=USER_MESSAGES)
    rec = fake_openai.last_request
    assert rec.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert CLIENT_KEY_B not in str(rec.headers) and CLIENT_KEY_B.encode() not in rec.body
