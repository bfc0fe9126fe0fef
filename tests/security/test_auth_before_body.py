"""The client key is checked from the headers, before the body is read: a client without a
valid key never gets `100 Continue` and never makes the proxy wait for (or hold) a body.

Raw sockets, because an HTTP client library sends the body on its own schedule: here the
headers go alone, with `Expect: 100-continue`, and the body only once the proxy asks for it.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
from fakes.openai_upstream import FakeOpenAI
from fakes.proxy_harness import CLIENT_KEY_B, RunningProxy

BODY = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
ANSWER_WITHIN = 5.0  # seconds; far less than any body read timeout


def headers_only(authorization: str | None, length: int = len(BODY)) -> bytes:
    lines = [
        "POST /v1/chat/completions HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        f"Content-Length: {length}",
        "Expect: 100-continue",
    ]
    if authorization is not None:
        lines.append(f"Authorization: {authorization}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_head(sock: socket.socket, data: bytes = b"") -> tuple[bytes, bytes]:
    """One response head (status line and headers) and what came after it."""
    deadline = time.monotonic() + ANSWER_WITHIN
    while b"\r\n\r\n" not in data:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            piece = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"no answer within {ANSWER_WITHIN}s: {data!r}") from None
        assert piece, f"the connection closed: {data!r}"
        data += piece
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def read_body(sock: socket.socket, head: bytes, rest: bytes) -> bytes:
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    sock.settimeout(ANSWER_WITHIN)
    while len(rest) < length:
        piece = sock.recv(65536)
        assert piece, "the connection closed in the middle of the body"
        rest += piece
    return rest[:length]


@pytest.mark.parametrize(
    "length", [len(BODY), 10 * 1024 * 1024], ids=["small-body", "body-over-the-limit"]
)
@pytest.mark.parametrize(
    "authorization", ["Bearer sk-not-a-key", None], ids=["wrong-key", "missing-key"]
)
def test_no_valid_key_is_a_401_without_100_continue_and_without_the_body(
    proxy: RunningProxy, fake_openai: FakeOpenAI, authorization: str | None, length: int
) -> None:
    """The body is never sent: the 401 comes from the headers alone (even before the
    announced length is judged)."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=ANSWER_WITHIN) as sock:
        started = time.monotonic()
        sock.sendall(headers_only(authorization, length))
        head, rest = read_head(sock)
        assert time.monotonic() - started < ANSWER_WITHIN
        assert head.startswith(b"HTTP/1.1 401 "), head
        assert b"100 Continue" not in head + rest
        error = json.loads(read_body(sock, head, rest))["error"]
        assert error["type"] == "authentication_error"
    assert fake_openai.chat_requests == []


def test_a_valid_key_gets_100_continue_then_its_answer(
    proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=ANSWER_WITHIN) as sock:
        sock.sendall(headers_only(f"Bearer {CLIENT_KEY_B}"))
        head, rest = read_head(sock)
        assert head.startswith(b"HTTP/1.1 100 Continue"), head
        sock.sendall(BODY.encode())
        head, rest = read_head(sock, rest)
        assert head.startswith(b"HTTP/1.1 200 "), head
        answer = json.loads(read_body(sock, head, rest))
    assert answer["model"] == "gpt-4o-mini"
    assert fake_openai.last_request.json["model"] == "upstream-model-id"
