"""Random and garbage methods, paths and headers on every route (every door, the stored
responses, the admin API and the console), sent as raw bytes so that nothing is cleaned on the
way, with no key, the client key (as a bearer token or in `x-api-key`) or the admin key. Every
answer comes within ANSWER_TIMEOUT, is never a 5xx and never carries a stack trace; an error is
the envelope of the path's door (Anthropic's under /v1/messages, OpenAI's elsewhere), unless
uvicorn's parser refused the bytes before the app saw them (its plain-text 400)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

pytest.importorskip("hypothesis")

from fakes.proxy_harness import RunningProxy
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from security.helpers import NoAnswer, raw_request

from .checks import ANSWER_TIMEOUT, Tally, check_any_answer, examples
from .conftest import FUZZ_ADMIN_KEY, FUZZ_KEY

pytestmark = pytest.mark.timeout(180)

ROUTES = [
    "/v1/chat/completions",
    "/v1/models",
    "/v1/models/m",
    "/v1/models/pattern/x",
    "/v1/proxy/keys/me",
    "/health",
    "/health/liveness",
    "/health/readiness",
    "/metrics",
    "/",
    "/v1",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/responses/resp_0123456789abcdef",
    "/v1/responses/resp_0123456789abcdef/input_items",
    "/v1/responses/resp_0123456789abcdef/input_items?order=asc&limit=0&after=x",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/messages/batches",
    "/admin/keys",
    "/admin/keys/fuzz",
    "/admin/keys/k-1",
    "/admin/keys/k-1/rotate",
    "/admin/usage",
    "/admin/usage?group_by=day&format=csv&since=2026-01-01&until=2025-01-01",
    "/admin/audit?limit=-1",
    "/admin/overview?minutes=99",
    "/admin/policy",
    "/ui",
    "/ui/session",
    "/ui/assets/app.css",
    "/openapi.json",
    "/v1/messages?q=" + "x" * 5000,  # past the longest target the proxy takes (414)
    "/v1/responses?q=" + "x" * 5000,
]
# Who the request claims to be: nobody, the client key two ways, the admin key
CREDENTIALS = [
    [],
    [(b"Authorization", f"Bearer {FUZZ_KEY}".encode())],
    [(b"x-api-key", FUZZ_KEY.encode())],
    [(b"Authorization", f"Bearer {FUZZ_ADMIN_KEY}".encode())],
]
METHODS = [
    "GET",
    "POST",
    "PUT",
    "DELETE",
    "PATCH",
    "HEAD",
    "OPTIONS",
    "TRACE",
    "PROPFIND",
    "MKCOL",
    "COPY",
    "MOVE",
    "LOCK",
    "UNLOCK",
    "SEARCH",
    "PURGE",
    "REPORT",
    "MERGE",
    "M-SEARCH",
    "NOTIFY",
    "SUBSCRIBE",
    "LINK",
    "UNLINK",
    "SOURCE",
    "QUERY",
    "ACL",
    "BIND",
]
# Set by the fuzzer itself (framing must stay right, or the server rightly waits for bytes)
FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection", b"expect", b"host"})
SPECIAL = [
    b"authorization",
    b"content-type",
    b"x-request-id",
    b"cache-control",
    b"x-tier",
    b"accept-encoding",
    b"content-encoding",
    b"cookie",
    b"origin",
    b"range",
    b"if-none-match",
    b"accept",
    b"upgrade",
    b"te",
    b"x-forwarded-for",
    b"forwarded",
    b"x-api-key",
    b"anthropic-version",
    b"anthropic-beta",
    b"x-csrf-token",
]

TOKEN = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
PRINTABLE = bytes(range(0x20, 0x7F)) + b"\t" + bytes(range(0x80, 0x100))
name_token = st.one_of(
    st.sampled_from(SPECIAL), st.text(TOKEN, min_size=1, max_size=30).map(str.encode)
)
value_printable = st.one_of(
    st.sampled_from(
        [
            b"",
            b"Bearer",
            b"Bearer ",
            f"Bearer {FUZZ_KEY}".encode(),
            b"Basic Og==",
            b"max-age=abc",
            b"no-cache, no-store, max-age=99999999999999999999",
            b"gzip",
            b"free",
            b"bytes=0-1",
            b"application/json; charset=utf-16",
            b"\xff\xfe",
            b"a\tb",
            b" leading",
            b"x" * 9000,
            b"x" * 70_000,  # past max_header_bytes (431)
            b"websocket",
            b"trailers",
            b"Bearer sk-" + b"A" * 300,
            FUZZ_KEY.encode(),
            f"Bearer {FUZZ_ADMIN_KEY}".encode(),
            b"llm_proxy_console=x.1.y",
            b"2023-06-01",
        ]
    ),
    st.lists(st.sampled_from(list(PRINTABLE)), max_size=60).map(bytes),
)
# Bytes that are no token / no field value: the parser's to refuse (a plain 400 is fine)
name_garbage = st.binary(min_size=1, max_size=12)
value_garbage = st.binary(max_size=64)
method_clean = st.sampled_from(METHODS)
method_garbage = st.one_of(
    st.text(TOKEN, min_size=1, max_size=12),
    st.binary(min_size=1, max_size=8).map(lambda b: b.decode("latin-1")),
)


def _no_framing(pair: tuple[bytes, bytes]) -> bool:
    name, value = pair
    return name.lower() not in FRAMING and not {13, 10} & set(name + value)


@st.composite
def headers_of(draw: st.DrawFn, garbage: bool) -> list[tuple[bytes, bytes]]:
    names = st.one_of(name_token, name_garbage) if garbage else name_token
    values = st.one_of(value_printable, value_garbage) if garbage else value_printable
    return draw(st.lists(st.tuples(names, values).filter(_no_framing), max_size=8))


path = st.one_of(
    st.sampled_from(ROUTES),
    st.tuples(st.sampled_from(ROUTES), st.text(max_size=20)).map(
        lambda rp: rp[0] + "".join(ch if ch.isalnum() else f"%{ord(ch) % 256:02X}" for ch in rp[1])
    ),
    st.tuples(
        st.sampled_from(ROUTES),
        st.sampled_from(["?", "?a=1&a=2", "?%zz", "/..", "//", "/%2e%2e/", "#frag", ";x=1"]),
    ).map("".join),
)
body = st.one_of(
    st.just(b""),
    st.just(b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'),
    st.just(b'{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}'),
    st.just(b'{"model":"m","input":"hi"}'),
    st.just(b'{"model":"native","input":"hi","stream":true}'),
    st.just(b'{"model":"claude","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}'),
    st.just(
        b'{"model":"m","max_tokens":8,"stream":true,"messages":[{"role":"user","content":"x"}]}'
    ),
    st.just(b'{"name":"k-1","models":["m"]}'),
    st.just(b'{"key":"' + FUZZ_ADMIN_KEY.encode() + b'"}'),
    st.binary(max_size=200),
)


def build(method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode("latin-1", "replace"), b"Host: 127.0.0.1"]
    lines += [name + b": " + value for name, value in headers]
    lines += [b"Content-Length: %d" % len(body), b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@pytest.fixture(scope="module")
def tally() -> Iterator[Tally]:
    tally = Tally.new()
    yield tally
    print(f"\nhttp fuzz: {tally.summary()}")


@settings(
    max_examples=examples(250),
    deadline=None,
    database=None,
    derandomize=bool(os.environ.get("CI")),
    phases=[Phase.explicit, Phase.reuse, Phase.generate]
    + ([Phase.shrink] if os.environ.get("FUZZ_SHRINK") else []),
    suppress_health_check=list(HealthCheck),
)
@given(
    garbage=st.integers(0, 4).map(lambda n: n == 0),  # one request in five has bad bytes
    data=st.data(),
    path=path,
    body=body,
    credentials=st.sampled_from(CREDENTIALS),
)
def test_any_method_path_and_headers(
    fuzz_proxy: RunningProxy,
    tally: Tally,
    garbage: bool,
    data: st.DataObject,
    path: str,
    body: bytes,
    credentials: list[tuple[bytes, bytes]],
) -> None:
    method = data.draw(st.one_of(method_clean, method_garbage) if garbage else method_clean)
    headers = [*credentials, *data.draw(headers_of(garbage))]
    request = build(method, path, headers, body)
    try:
        resp = raw_request(fuzz_proxy.port, request, timeout=ANSWER_TIMEOUT)
    except NoAnswer as exc:
        raise AssertionError(f"{exc}\nsent {request[:600]!r}") from None
    tally.statuses[str(resp.status)] += 1
    try:
        check_any_answer(method, resp.status, resp.headers, resp.body, path)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nsent {request[:600]!r}") from None


# ---- the bugs the fuzzers found, pinned ------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "header", "status"),
    [
        ("/v1/messages?q=" + "x" * 5000, b"", 414),
        ("/v1/messages/count_tokens", b"x" * 70_000, 431),
        ("/v1/chat/completions?q=" + "x" * 5000, b"", 414),
        ("/v1/responses", b"x" * 70_000, 431),
    ],
    ids=["messages-414", "count-tokens-431", "chat-414", "responses-431"],
)
def test_the_header_guard_answers_in_the_envelope_of_the_door(
    fuzz_proxy: RunningProxy, path: str, header: bytes, status: int
) -> None:
    """The guard in front of the app answered its 414 and 431 in OpenAI's envelope on every
    path, Anthropic's Messages API included."""
    headers = [(b"x-api-key", FUZZ_KEY.encode()), (b"x-padding", header)] if header else []
    resp = raw_request(fuzz_proxy.port, build("POST", path, headers, b"{}"), ANSWER_TIMEOUT)
    assert resp.status == status, resp.body[:300]
    check_any_answer("POST", resp.status, resp.headers, resp.body, path)
