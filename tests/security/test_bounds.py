"""What one client can make the proxy hold is bounded (proxy.reference.yaml
`server.max_body_bytes`, `max_header_bytes`, `max_messages`, `max_stream_seconds`).

test_errors.py already covers a body over the limit (sized and chunked) and the default
message count; here: a declared length over the limit is refused before any body arrives,
the limit counts bytes not characters, oversized headers, the message-count boundary of a
configured limit, and the stream-duration limit for a stream that trickles and one that stalls.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from fakes.openai_upstream import FakeOpenAI, slow_stream, stall_after
from fakes.proxy_harness import ProxyLauncher, RunningProxy

from .helpers import assert_envelope, raw_request

pytestmark = pytest.mark.timeout(90)

CHAT = "/v1/chat/completions"
MAX_BODY = 64 * 1024
MAX_HEADER = 16 * 1024
MAX_MESSAGES = 8
MAX_STREAM_SECONDS = 1.5
SLACK = 3.0  # a loaded 2-core machine: what the bounds may be late by


@pytest.fixture(scope="module")
def bounded(proxy_launcher: ProxyLauncher, fake_openai_server: FakeOpenAI) -> RunningProxy:
    upstream = {"type": "openai", "base_url": fake_openai_server.base_url, "api_key": "sk-bounds"}
    policy = {
        "server": {
            "max_body_bytes": MAX_BODY,
            "max_header_bytes": MAX_HEADER,
            "max_messages": MAX_MESSAGES,
            "max_stream_seconds": MAX_STREAM_SECONDS,
            "drain_timeout": 0,
        },
        "upstreams": {"fake": upstream},
        "models": {"m": {"routes": [{"upstream": "fake", "model": "bounded-id"}]}},
        "retry": {"attempts": 1},
        "cache": {"backend": "none"},
    }
    return proxy_launcher.start(policy)


@pytest.fixture
def http(bounded: RunningProxy) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=bounded.url, timeout=30) as client:
        yield client


def messages(n: int, text: str = "hi") -> list[dict[str, str]]:
    return [{"role": "user", "content": text} for _ in range(n)]


# ---- body size -------------------------------------------------------------------------------


def test_a_declared_length_over_the_limit_is_413_before_any_body(
    bounded: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (MAX_BODY + 1)
    )  # and no body at all: the proxy must not wait for it
    resp = raw_request(bounded.port, request, timeout=10)
    assert resp.status == 413, resp
    assert resp.seconds < SLACK
    assert_envelope(resp.body)
    assert fake_openai.chat_requests == []


def test_the_body_limit_counts_bytes_not_characters(
    http: httpx.Client, fake_openai: FakeOpenAI
) -> None:
    text = "é" * (MAX_BODY * 3 // 4)  # 3/4 of the limit in characters, 1.5x in bytes
    body = json.dumps({"model": "m", "messages": messages(1, text)}, ensure_ascii=False)
    resp = http.post(CHAT, content=body.encode(), headers={"content-type": "application/json"})
    assert resp.status_code == 413, resp.text[:300]
    assert_envelope(resp.json())
    assert fake_openai.chat_requests == []


# ---- header size -----------------------------------------------------------------------------


def test_a_huge_header_is_answered_without_hanging(http: httpx.Client) -> None:
    """Far past any sane size: some answer comes, quickly, and it is not a 5xx."""
    started = time.monotonic()
    resp = http.post(
        CHAT, json={"model": "m", "messages": messages(1)}, headers={"x-big": "a" * 1_000_000}
    )
    assert time.monotonic() - started < 10
    assert resp.status_code < 500, resp.text[:300]


@pytest.mark.parametrize("shape", ["one-large", "many-small"])
def test_headers_over_max_header_bytes_are_a_4xx(
    http: httpx.Client, fake_openai: FakeOpenAI, shape: str
) -> None:
    if shape == "one-large":
        headers = {"x-big": "a" * (2 * MAX_HEADER)}
    else:
        headers = {f"x-h{i}": "v" * 100 for i in range(2 * MAX_HEADER // 100)}
    resp = http.post(CHAT, json={"model": "m", "messages": messages(1)}, headers=headers)
    assert resp.status_code in (400, 413, 431), resp.status_code
    assert_envelope(resp.json())
    assert fake_openai.chat_requests == []


# ---- message count ---------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_the_configured_message_count_is_the_boundary(
    http: httpx.Client, fake_openai: FakeOpenAI, stream: bool
) -> None:
    resp = http.post(
        CHAT, json={"model": "m", "messages": messages(MAX_MESSAGES), "stream": stream}
    )
    assert resp.status_code == 200, resp.text
    over = {"model": "m", "messages": messages(MAX_MESSAGES + 1), "stream": stream}
    resp = http.post(CHAT, json=over)
    assert resp.status_code == 400, resp.text
    error = assert_envelope(resp.json())
    assert error["param"] == "messages"
    assert len(fake_openai.chat_requests) == 1


# ---- stream duration -------------------------------------------------------------------------


def read_stream(http: httpx.Client, body: dict[str, object]) -> tuple[list[str], float]:
    started = time.monotonic()
    with http.stream("POST", CHAT, json=body) as resp:
        assert resp.status_code == 200
        data = [line[5:].strip() for line in resp.iter_lines() if line.startswith("data:")]
    return data, time.monotonic() - started


def assert_ended_in_band(data: list[str]) -> None:
    assert data[-1] == "[DONE]", data[-3:]
    error = assert_envelope(json.loads(data[-2]))
    assert "longer" in error["message"] or error["type"] == "timeout", error


def test_a_trickling_stream_is_ended_in_band_after_max_stream_seconds(
    http: httpx.Client, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply = " ".join(f"w{i}" for i in range(200))
    fake_openai.script(slow_stream(0.1))  # 20 s of stream, a chunk every 0.1 s
    data, seconds = read_stream(http, {"model": "m", "messages": messages(1), "stream": True})
    assert MAX_STREAM_SECONDS <= seconds < MAX_STREAM_SECONDS + SLACK
    assert_ended_in_band(data)


def test_a_stalled_stream_is_ended_in_band_at_max_stream_seconds(
    http: httpx.Client, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(stall_after(2, 6.0))  # two chunks, then 6 s of silence (idle is 30 s)
    data, seconds = read_stream(http, {"model": "m", "messages": messages(1), "stream": True})
    assert seconds < MAX_STREAM_SECONDS + SLACK, seconds
    assert_ended_in_band(data)
