"""Declined upgrades: a request with `Connection: Upgrade` the proxy will not perform (h2c, or a
websocket on an HTTP route) is served as an ordinary request, its body read by its own framing.

httptools stops at the end of such a request's headers, so the proxy reads the body itself:
by Content-Length (tests/security/test_headers.py) or chunked, decoded here across packets cut
anywhere. A body whose framing is broken or unknowable is a 400 and never reaches the upstream.
"""

from __future__ import annotations

import itertools
import json
import socket
import time

import pytest
from fakes.openai_upstream import FakeOpenAI
from fakes.proxy_harness import CLIENT_KEY_B, UPSTREAM_KEY, ProxyLauncher, RunningProxy

from proxy.api.protocol import (
    ChunkedBody,
    LengthBody,
    MalformedBodyError,
    body_framing,
)

from .helpers import assert_envelope

pytestmark = pytest.mark.timeout(60)

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "a declined upgrade, chunked"}]


def chunked(body: bytes, sizes: list[int]) -> bytes:
    """`body` in chunks of these sizes (the rest in one), with an extension on the first and a
    trailer field after the last."""
    out, start = b"", 0
    for n, size in enumerate([*sizes, len(body)]):
        part = body[start : start + size]
        start += len(part)
        if part:
            out += b"%x%s\r\n%s\r\n" % (len(part), b";ext=1" if n == 0 else b"", part)
    return out + b"0\r\nX-Trailer: t\r\n\r\n"


def feed_in_pieces(framing: ChunkedBody, wire: bytes, cut: int) -> bytes:
    return b"".join(framing.feed(wire[i : i + cut]) for i in range(0, len(wire), cut))


# ---------------------------------------------------------------------------------------------
# The decoder, on bytes


@pytest.mark.parametrize("cut", [1, 2, 3, 5, 7, 64, 10_000])
def test_a_chunked_body_cut_anywhere_decodes_whole(cut: int) -> None:
    body = b'{"messages": "' + b"x" * 300 + b'"}'
    wire = chunked(body, [1, 17, 100])
    framing = ChunkedBody()
    assert feed_in_pieces(framing, wire, cut) == body
    assert framing.done


def test_bytes_after_the_last_chunk_are_not_body() -> None:
    framing = ChunkedBody()
    assert framing.feed(b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n") == b"abc"
    assert framing.done
    assert framing.feed(b"more") == b""


def test_an_unfinished_chunked_body_is_not_done() -> None:
    framing = ChunkedBody()
    assert framing.feed(b"5\r\nab") == b"ab"
    assert not framing.done
    assert framing.feed(b"cde\r\n0\r\n") == b"cde"
    assert not framing.done  # the trailer section's empty line is still due
    assert framing.feed(b"\r\n") == b""
    assert framing.done


@pytest.mark.parametrize(
    "wire",
    [
        b"zz\r\nab\r\n",  # not hexadecimal
        b"-1\r\n",
        b"\r\nab\r\n",  # no size at all
        b"2\r\nabc\r\n",  # more data than the size says
        b"1" * 17 + b"\r\n",  # a size beyond 16 hex digits
        b"2;" + b"e" * 5000,  # a size line that never ends
        b"0\r\nX-T: " + b"t" * 5000,  # a trailer field that never ends
    ],
    ids=["not-hex", "negative", "empty", "overlong-data", "huge-size", "endless-line", "trailer"],
)
def test_broken_chunked_framing_is_an_error(wire: bytes) -> None:
    with pytest.raises(MalformedBodyError):
        ChunkedBody().feed(wire)


@pytest.mark.parametrize(
    ("headers", "kind"),
    [
        ([(b"transfer-encoding", b"chunked")], ChunkedBody),
        ([(b"transfer-encoding", b"gzip, chunked")], ChunkedBody),
        ([(b"transfer-encoding", b"gzip"), (b"transfer-encoding", b"Chunked")], ChunkedBody),
        ([(b"content-length", b"12")], LengthBody),
        ([], LengthBody),
    ],
)
def test_the_framing_follows_the_headers(headers: list[tuple[bytes, bytes]], kind: type) -> None:
    assert isinstance(body_framing(headers), kind)


def test_a_body_without_framing_headers_is_empty() -> None:
    assert body_framing([]).done
    assert not body_framing([(b"content-length", b"3")]).done


@pytest.mark.parametrize(
    "headers",
    [
        [(b"transfer-encoding", b"gzip")],
        [(b"transfer-encoding", b"chunked, gzip")],
        [(b"content-length", b"abc")],
    ],
)
def test_unknowable_framing_is_an_error(headers: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(MalformedBodyError):
        body_framing(headers)


# ---------------------------------------------------------------------------------------------
# Against the proxy, with raw sockets


@pytest.fixture(scope="module")
def upgrade_proxy(proxy_launcher: ProxyLauncher, fake_openai_server: FakeOpenAI) -> RunningProxy:
    upstream = {"type": "openai", "base_url": fake_openai_server.base_url, "api_key": UPSTREAM_KEY}
    policy = {
        "upstreams": {"plain": upstream},
        "models": {"plain": {"routes": [{"upstream": "plain", "model": "plain-id"}]}},
        "keys": [{"name": "b", "key": CLIENT_KEY_B}],
        "retry": {"attempts": 1},
        "cache": {"backend": "none"},
    }
    return proxy_launcher.start(policy)


def upgrade_head(upgrade: str, framing: str) -> bytes:
    return (
        f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n"
        f"Upgrade: {upgrade}\r\nAuthorization: Bearer {CLIENT_KEY_B}\r\n"
        f"Content-Type: application/json\r\n{framing}\r\n\r\n"
    ).encode()


def exchange(proxy: RunningProxy, packets: list[bytes]) -> bytes:
    """Sends each packet apart, then reads until the proxy closes the connection."""
    answer = b""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=15) as sock:
        for packet in packets:
            sock.sendall(packet)
            time.sleep(0.05)
        try:
            while piece := sock.recv(65536):
                answer += piece
        except ConnectionResetError:
            pass
    return answer


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@pytest.mark.parametrize("upgrade", ["h2c", "websocket"])
def test_a_declined_upgrade_with_a_chunked_body_across_packets_is_served(
    upgrade_proxy: RunningProxy, fake_openai: FakeOpenAI, upgrade: str
) -> None:
    body = json.dumps({"model": "plain", "messages": MESSAGES}).encode()
    wire = chunked(body, [5, 30])
    head = upgrade_head(upgrade, "Transfer-Encoding: chunked")
    # cut in the headers' end, a size line, a chunk's data, a CRLF and the trailer section
    cuts = [len(head) - 2, len(head) + 1, len(head) + 12, len(head) + 50, len(head + wire) - 3]
    answer = exchange(upgrade_proxy, split_at(head + wire, cuts))
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
    assert b"connection: close" in answer.lower()
    assert b'"chat.completion"' in answer
    assert json.loads(fake_openai.chat_requests[-1].body)["messages"] == MESSAGES


def test_a_declined_upgrade_with_a_large_chunked_body_is_read_whole(
    upgrade_proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    """Larger than uvicorn's read high-water mark, so reading pauses and resumes mid-body."""
    messages = [{"role": "user", "content": "y" * 100_000}]
    body = json.dumps({"model": "plain", "messages": messages}).encode()
    wire = chunked(body, [4096] * 10)
    head = upgrade_head("h2c", "Transfer-Encoding: chunked")
    answer = exchange(upgrade_proxy, split_at(head + wire, list(range(1000, len(wire), 30_000))))
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
    assert json.loads(fake_openai.chat_requests[-1].body)["messages"] == messages


@pytest.mark.parametrize(
    ("framing", "wire"),
    [
        ("Transfer-Encoding: chunked", b"zz\r\n{}\r\n0\r\n\r\n"),
        ("Transfer-Encoding: chunked", b"2\r\n{}}}\r\n0\r\n\r\n"),
        ("Transfer-Encoding: gzip", b'{"model": "plain"}'),
    ],
    ids=["bad-size", "overlong-chunk", "not-chunked"],
)
def test_a_declined_upgrade_with_broken_framing_is_a_400(
    upgrade_proxy: RunningProxy, fake_openai: FakeOpenAI, framing: str, wire: bytes
) -> None:
    answer = exchange(upgrade_proxy, [upgrade_head("h2c", framing), wire])
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer[:300]
    assert b"connection: close" in head.lower()
    error = assert_envelope(body)
    assert error["type"] == "invalid_request_error"
    assert "framing" in error["message"]  # the proxy's reading refused it, not the app's
    assert fake_openai.chat_requests == []
