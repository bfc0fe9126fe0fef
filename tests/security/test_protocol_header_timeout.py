"""`server.header_timeout`: a connection whose request headers are not all in on time is closed.

The clock runs from the connection's opening for its first request and from the first byte of
each later request on a keep-alive connection; idle time between requests is uvicorn's
keep-alive timeout (5 s), and the body is not on this clock. Raw sockets against the real
proxy, started with a one-second header timeout.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
from fakes.openai_upstream import FakeOpenAI
from fakes.proxy_harness import CLIENT_KEY_B, UPSTREAM_KEY, ProxyLauncher, RunningProxy

from .helpers import assert_envelope

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 1.0
EARLIEST = TIMEOUT * 0.8  # timer slack on a loaded machine, either side
LATEST = TIMEOUT + 2.0
CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "header timeout"}]
READINESS = b"GET /health/readiness HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@pytest.fixture(scope="module")
def timed_proxy(proxy_launcher: ProxyLauncher, fake_openai_server: FakeOpenAI) -> RunningProxy:
    upstream = {"type": "openai", "base_url": fake_openai_server.base_url, "api_key": UPSTREAM_KEY}
    policy = {
        "server": {"header_timeout": TIMEOUT},
        "upstreams": {"plain": upstream},
        "models": {"plain": {"routes": [{"upstream": "plain", "model": "plain-id"}]}},
        "keys": [{"name": "b", "key": CLIENT_KEY_B}],
        "retry": {"attempts": 1},
        "cache": {"backend": "none"},
    }
    return proxy_launcher.start(policy)


def connect(proxy: RunningProxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=LATEST + 5)


def until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the proxy sends until it closes the connection, and how long that took."""
    started = time.monotonic()
    data = b""
    try:
        while piece := sock.recv(65536):
            data += piece
    except ConnectionResetError:
        pass
    return data, time.monotonic() - started


def one_answer(sock: socket.socket) -> tuple[int, bytes]:
    """One Content-Length answer on a connection that stays open: (status, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        assert piece, f"the connection closed mid-answer: {data!r}"
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(
        int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        piece = sock.recv(65536)
        assert piece, "the connection closed mid-body"
        body += piece
    return int(lines[0].split(b" ")[1]), body


def chat_request(body: bytes) -> tuple[bytes, bytes]:
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {CLIENT_KEY_B}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head, body


def assert_timed_out(data: bytes, seconds: float) -> None:
    assert EARLIEST <= seconds <= LATEST, f"closed after {seconds:.2f}s, not ~{TIMEOUT}s"
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), data[:300]
    assert b"connection: close" in head.lower()
    assert assert_envelope(body)["code"] == "request_timeout"


def test_half_a_header_line_then_silence_is_closed_with_a_408(timed_proxy: RunningProxy) -> None:
    with connect(timed_proxy) as sock:
        sock.sendall(b"GET /health/readiness HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ab")
        data, seconds = until_closed(sock)
    assert_timed_out(data, seconds)


def test_a_slowloris_trickling_bytes_is_closed_on_time(timed_proxy: RunningProxy) -> None:
    """Each byte arrives well within the timeout; the headers never end: the clock is not
    reset by activity."""
    with connect(timed_proxy) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /health/readiness HTTP/1.1\r\n")
        closed = False
        while time.monotonic() - started < LATEST and not closed:
            time.sleep(0.2)
            try:
                sock.sendall(b"X-a: b\r\n")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
        data, _ = until_closed(sock)
        seconds = time.monotonic() - started
    assert data.startswith(b"HTTP/1.1 408 "), data[:300]
    assert seconds <= LATEST + 0.5, f"still open after {seconds:.2f}s"


def test_a_connection_that_never_sends_is_closed_silently(timed_proxy: RunningProxy) -> None:
    with connect(timed_proxy) as sock:
        data, seconds = until_closed(sock)
    assert data == b""
    assert EARLIEST <= seconds <= LATEST, f"closed after {seconds:.2f}s"


def test_slow_headers_within_the_timeout_and_a_later_body_are_served(
    timed_proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    """Headers in pieces over half the timeout; the body after more than the timeout: the body
    is not on the header clock."""
    head, body = chat_request(json.dumps({"model": "plain", "messages": MESSAGES}).encode())
    with connect(timed_proxy) as sock:
        for start in range(0, len(head), len(head) // 4 + 1):
            sock.sendall(head[start : start + len(head) // 4 + 1])
            time.sleep(TIMEOUT / 8)
        time.sleep(TIMEOUT * 1.5)
        sock.sendall(body)
        status, answer = one_answer(sock)
    assert status == 200, answer
    assert json.loads(answer)["object"] == "chat.completion"
    assert json.loads(fake_openai.chat_requests[-1].body)["messages"] == MESSAGES


def test_a_keep_alive_connection_gets_a_fresh_clock_for_each_request(
    timed_proxy: RunningProxy,
) -> None:
    """Idle time between requests (here longer than the header timeout, shorter than the
    keep-alive timeout) does not count against the next request's headers."""
    with connect(timed_proxy) as sock:
        for _ in range(3):
            sock.sendall(READINESS)
            status, _ = one_answer(sock)
            assert status == 200
            time.sleep(TIMEOUT * 1.3)


def test_a_keep_alive_request_that_stalls_after_its_first_bytes_is_closed(
    timed_proxy: RunningProxy,
) -> None:
    with connect(timed_proxy) as sock:
        sock.sendall(READINESS)
        status, _ = one_answer(sock)
        assert status == 200
        time.sleep(TIMEOUT / 2)
        sock.sendall(READINESS[:20])  # the second request's first bytes, then nothing
        data, seconds = until_closed(sock)
    assert_timed_out(data, seconds)
