"""A body fuzzer for the other doors: POST /v1/responses, /v1/messages and its count_tokens
(the key in `x-api-key`, as Anthropic's SDKs send it), /v1/embeddings, and the admin API's key
bodies (POST /admin/keys, PATCH /admin/keys/{name}, with the admin key) and the console's sign-in
(POST /ui/session).

Every answer must be a success in the door's own format (a response object, or an event stream
numbered from 0 that ends with response.completed / incomplete / failed; a message, or a stream
that ends with message_stop or an `error` event; a token count; a list of vectors; an admin
JSON object) or a 4xx in the door's error envelope (Anthropic's under /v1/messages, OpenAI's
elsewhere): never a 5xx, never a hang, never a stack trace. Settings as in
test_chat_body_fuzz.py (FUZZ_SCALE, FUZZ_SHRINK, derandomized in CI).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

pytest.importorskip("hypothesis")

from fakes.proxy_harness import RunningProxy
from hypothesis import given
from hypothesis import strategies as st

from . import door_strategies as d
from . import strategies as s
from .checks import ANSWER_TIMEOUT, CONTENT_TYPES, Tally, check_door_answer, fuzz_settings
from .conftest import FUZZ_ADMIN_KEY, FUZZ_KEY

pytestmark = pytest.mark.timeout(180)

PATCHED_KEY = "fuzz-patched"
DOORS = {  # door -> (path, the headers that carry its key)
    "responses": ("/v1/responses", {"Authorization": f"Bearer {FUZZ_KEY}"}),
    "messages": ("/v1/messages", {"x-api-key": FUZZ_KEY, "anthropic-version": "2023-06-01"}),
    "count_tokens": ("/v1/messages/count_tokens", {"x-api-key": FUZZ_KEY}),
    "embeddings": ("/v1/embeddings", {"Authorization": f"Bearer {FUZZ_KEY}"}),
    "admin": ("/admin/keys", {"Authorization": f"Bearer {FUZZ_ADMIN_KEY}"}),
    "session": ("/ui/session", {}),  # the console's sign-in: the admin key in the body
}


@pytest.fixture(scope="module")
def http(fuzz_proxy: RunningProxy) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzz_proxy.url, timeout=ANSWER_TIMEOUT) as client:
        made = client.post("/admin/keys", json={"name": PATCHED_KEY}, headers=DOORS["admin"][1])
        assert made.status_code == 201, made.text
        yield client


@pytest.fixture(scope="module")
def tally() -> Iterator[Tally]:
    tally = Tally.new()
    yield tally
    print(f"\ndoor body fuzz: {tally.summary()}")


def send(
    http: httpx.Client,
    tally: Tally,
    door: str,
    body: bytes,
    content_type: str = "application/json",
    method: str = "POST",
    path: str | None = None,
) -> None:
    default_path, headers = DOORS[door]
    headers = dict(headers)
    if content_type:
        headers["content-type"] = content_type
    path = path or default_path
    started = time.monotonic()
    try:
        resp = http.request(method, path, content=body, headers=headers)
    except httpx.TimeoutException:
        raise AssertionError(f"no answer within {ANSWER_TIMEOUT}s for {body[:300]!r}") from None
    except httpx.TransportError as exc:
        raise AssertionError(f"connection failed ({exc!r}) for {body[:300]!r}") from None
    tally.statuses[f"{door} {resp.status_code}"] += 1
    try:
        check_door_answer(door, resp.status_code, dict(resp.headers), resp.content)
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\nsent {method} {path} {body[:500]!r}\nafter {time.monotonic() - started:.2f}s"
        ) from None


@fuzz_settings(150)
@given(body=st.one_of(d.responses_bodies(), d.near_valid_responses()))
def test_responses_bodies(http: httpx.Client, tally: Tally, body: bytes) -> None:
    send(http, tally, "responses", body)


@fuzz_settings(150)
@given(body=st.one_of(d.messages_bodies(), d.near_valid_messages()))
def test_messages_bodies(http: httpx.Client, tally: Tally, body: bytes) -> None:
    send(http, tally, "messages", body)


@fuzz_settings(40)
@given(body=st.one_of(d.messages_bodies(), d.near_valid_messages()))
def test_count_tokens_bodies(http: httpx.Client, tally: Tally, body: bytes) -> None:
    send(http, tally, "count_tokens", body)


@fuzz_settings(120)
@given(body=st.one_of(d.embeddings_bodies(), d.near_valid_embeddings()))
def test_embeddings_bodies(http: httpx.Client, tally: Tally, body: bytes) -> None:
    send(http, tally, "embeddings", body)


@fuzz_settings(60)
@given(body=d.admin_key_bodies())
def test_admin_key_bodies(http: httpx.Client, tally: Tally, body: bytes) -> None:
    send(http, tally, "admin", body)


@fuzz_settings(40)
@given(body=d.admin_key_bodies())
def test_admin_key_changes(http: httpx.Client, tally: Tally, body: bytes) -> None:
    send(http, tally, "admin", body, method="PATCH", path=f"/admin/keys/{PATCHED_KEY}")


@fuzz_settings(40)
@given(body=d.session_bodies)
def test_console_sign_in_bodies(http: httpx.Client, tally: Tally, body: bytes) -> None:
    send(http, tally, "session", body)


@fuzz_settings(80)
@given(
    door=st.sampled_from(sorted(DOORS)),
    body=st.one_of(s.mutated(), s.random_bytes, s.invalid_utf8_in_strings(), s.deep(), s.huge()),
    content_type=st.sampled_from(CONTENT_TYPES),
)
def test_broken_bytes_on_every_door(
    http: httpx.Client, tally: Tally, door: str, body: bytes, content_type: str
) -> None:
    send(http, tally, door, body, content_type)


# ---- the bugs the fuzzers found, pinned ------------------------------------------------------


@pytest.mark.parametrize(
    ("door", "method", "path", "body"),
    [
        ("admin", "POST", "/admin/keys", b'{"name": "k", "metadata": {"a\xc0\xafb": "x"}}'),
        ("admin", "PATCH", f"/admin/keys/{PATCHED_KEY}", b'{"metadata": {"\xed\xbf\xbf": "g"}}'),
        ("session", "POST", "/ui/session", b'{"key": "a\xffb"}'),
    ],
    ids=["create-key", "change-key", "console-sign-in"],
)
def test_invalid_utf8_in_an_admin_body_is_a_400(
    http: httpx.Client, door: str, method: str, path: str, body: bytes
) -> None:
    """msgspec raises UnicodeDecodeError, not DecodeError, for invalid UTF-8 inside a string:
    the admin bodies and the console's sign-in let it out as a 500."""
    headers = {"content-type": "application/json", **DOORS[door][1]}
    resp = http.request(method, path, content=body, headers=headers)
    assert resp.status_code == 400, resp.text
    check_door_answer(door, resp.status_code, dict(resp.headers), resp.content)
