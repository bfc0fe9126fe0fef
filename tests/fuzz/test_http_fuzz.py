"""Random and garbage methods, paths and headers on every route, sent as raw
bytes so that nothing is cleaned on the way. Every answer comes within ANSWER_TIMEOUT, is
never a 5xx and never carries a stack trace; an error is the OpenAI envelope, unless uvicorn's
parser refused the bytes before the app saw them (its plain-text 400)."""

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
from .conftest import FUZZ_KEY

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
            b"websocket",
            b"trailers",
            b"Bearer sk-" + b"A" * 300,
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
    authorized=st.booleans(),
)
def test_any_method_path_and_headers(
    fuzz_proxy: RunningProxy,
    tally: Tally,
    garbage: bool,
    data: st.DataObject,
    path: str,
    body: bytes,
    authorized: bool,
) -> None:
    method = data.draw(st.one_of(method_clean, method_garbage) if garbage else method_clean)
    headers = data.draw(headers_of(garbage))
    if authorized:
        headers = [(b"Authorization", f"Bearer {FUZZ_KEY}".encode()), *headers]
    request = build(method, path, headers, body)
    try:
        resp = raw_request(fuzz_proxy.port, request, timeout=ANSWER_TIMEOUT)
    except NoAnswer as exc:
        raise AssertionError(f"{exc}\nsent {request[:600]!r}") from None
    tally.statuses[str(resp.status)] += 1
    try:
        check_any_answer(method, resp.status, resp.headers, resp.body)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nsent {request[:600]!r}") from None
