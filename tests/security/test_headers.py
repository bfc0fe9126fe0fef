"""Header hygiene in both directions.

Towards the upstream only the proxy's own headers go: hop-by-hop headers, credentials and
anything else a client sends never reach it (an allow-list, not a deny-list: the recorded
upstream headers are checked against what the proxy itself sets). Towards the client, text the
client chose never reaches a response header unescaped.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from fakes.openai_upstream import FakeOpenAI
from fakes.proxy_harness import CLIENT_KEY_B, UPSTREAM_KEY, ProxyLauncher, RunningProxy

from .helpers import assert_envelope

pytestmark = pytest.mark.timeout(90)

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "headers"}]
MARK = "Zq9mark"  # in every value a client sends: it must appear nowhere upstream

# What the proxy itself sends upstream (aiohttp adds host, accept, accept-encoding and
# content-length), plus the policy's configured `headers` of that upstream.
PROXY_SET = frozenset(
    {
        "host",
        "content-type",
        "content-length",
        "authorization",
        "x-request-id",
        "accept",
        "accept-encoding",
    }
)
CONFIGURED = {"OpenAI-Organization": "org-configured", "X-HF-Bill-To": "configured-bill"}

CLIENT_HEADERS = {
    # credentials in every spelling a provider uses
    "cookie": f"session={MARK}-cookie",
    "proxy-authorization": f"Basic {MARK}proxyauth",
    "x-api-key": f"{MARK}-x-api-key",
    "api-key": f"{MARK}-azure-api-key",
    "x-goog-api-key": f"{MARK}-goog",
    "anthropic-api-key": f"{MARK}-anthropic",
    "x-amz-security-token": f"{MARK}-amz",
    "openai-organization": f"org-{MARK}",
    "openai-project": f"proj_{MARK}",
    "x-hf-bill-to": f"{MARK}-bill",
    "x-wait-for-model": f"{MARK}-wait",
    # hop-by-hop (RFC 9110 7.6.1), including one named by Connection
    "connection": f"keep-alive, x-{MARK}-hop",
    f"x-{MARK}-hop": f"{MARK}-hop",
    "keep-alive": f"timeout=5, max={MARK}",
    "te": "trailers",
    "trailer": f"x-{MARK}-trailer",
    "proxy-connection": f"keep-alive-{MARK}",
    "via": f"1.1 {MARK}-via",
    "x-forwarded-for": f"{MARK}-xff",
    "forwarded": f"for={MARK}",
    # ordinary client headers: none is the upstream's business
    "user-agent": f"{MARK}-agent/1.0",
    "accept": f"application/{MARK}",
    "accept-encoding": f"br, {MARK}",
    "accept-language": f"fr-{MARK}",
    "origin": f"http://{MARK}.example",
    "referer": f"http://{MARK}.example/",
    "x-stainless-os": f"{MARK}-os",
    "cache-control": "no-store",
    f"x-{MARK}-custom": f"{MARK}-custom",
}


@pytest.fixture(scope="module")
def header_proxy(proxy_launcher: ProxyLauncher, fake_openai_server: FakeOpenAI) -> RunningProxy:
    upstream = {"type": "openai", "base_url": fake_openai_server.base_url, "api_key": UPSTREAM_KEY}
    policy = {
        "upstreams": {"plain": upstream, "org": {**upstream, "headers": CONFIGURED}},
        "models": {
            "plain": {"routes": [{"upstream": "plain", "model": "plain-id"}]},
            "org": {"routes": [{"upstream": "org", "model": "org-id"}]},
            "pattern/*": {"routes": [{"upstream": "plain"}]},
        },
        "keys": [{"name": "b", "key": CLIENT_KEY_B}],
        "retry": {"attempts": 1},
        "cache": {"backend": "none"},
    }
    return proxy_launcher.start(policy)


@pytest.fixture
def http(header_proxy: RunningProxy) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=header_proxy.url, timeout=20, headers={"Authorization": f"Bearer {CLIENT_KEY_B}"}
    ) as client:
        yield client


def assert_only_proxy_headers(headers: dict[str, str], configured: dict[str, str]) -> None:
    allowed = PROXY_SET | {name.lower() for name in configured}
    assert set(headers) <= allowed, sorted(set(headers) - allowed)
    assert headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert MARK.lower() not in str(headers).lower(), headers
    assert CLIENT_KEY_B not in str(headers)
    for name, value in configured.items():
        assert headers[name.lower()] == value


@pytest.mark.parametrize("model", ["plain", "org"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_client_headers_never_reach_the_upstream(
    http: httpx.Client, fake_openai: FakeOpenAI, model: str, stream: bool
) -> None:
    body = {"model": model, "messages": MESSAGES, "stream": stream}
    resp = http.post(CHAT, json=body, headers=CLIENT_HEADERS)
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-llm-proxy-cache"] == "bypass"  # cache-control was read, not sent
    configured = CONFIGURED if model == "org" else {}
    assert_only_proxy_headers(fake_openai.last_request.headers, configured)


def test_the_sdk_headers_never_reach_the_upstream(
    header_proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    """The SDK's own x-stainless-*, user agent, retry count, plus its `organization` and
    `project` options (sent as OpenAI-Organization / OpenAI-Project)."""
    with openai.OpenAI(
        base_url=header_proxy.base_url,
        api_key=CLIENT_KEY_B,
        organization=f"org-{MARK}",
        project=f"proj_{MARK}",
        default_headers={"x-api-key": f"{MARK}-default"},
        max_retries=0,
    ) as client:
        client.chat.completions.create(model="org", messages=MESSAGES)  # type: ignore[arg-type]
        for _ in client.chat.completions.create(model="plain", messages=MESSAGES, stream=True):  # type: ignore[arg-type]
            pass
    org, plain = fake_openai.chat_requests[-2:]
    assert_only_proxy_headers(org.headers, CONFIGURED)
    assert_only_proxy_headers(plain.headers, {})


@pytest.mark.parametrize("upgrade", ["websocket", "h2c"])
def test_upgrade_requests_get_an_answer_and_never_reach_the_upstream(
    http: httpx.Client, fake_openai: FakeOpenAI, upgrade: str
) -> None:
    headers = {
        "connection": "Upgrade, HTTP2-Settings",
        "upgrade": upgrade,
        "http2-settings": "AAMAAABkAARAAAAAAAIAAAAA",
    }
    resp = http.post(CHAT, json={"model": "plain", "messages": MESSAGES}, headers=headers)
    # an upgrade the proxy will not perform leaves an ordinary request: body and all
    assert resp.status_code == 200, resp.text
    assert resp.json()["object"] == "chat.completion"
    assert resp.headers.get("connection") == "close"
    (rec,) = fake_openai.chat_requests
    assert json.loads(rec.body)["messages"] == MESSAGES
    assert_only_proxy_headers(rec.headers, {})
    after = http.post(CHAT, json={"model": "plain", "messages": MESSAGES})  # a new connection
    assert after.status_code == 200


def test_a_declined_upgrade_whose_body_comes_later_is_read_whole(
    header_proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    body = json.dumps({"model": "plain", "messages": MESSAGES}).encode()
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
        f"Authorization: Bearer {CLIENT_KEY_B}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", header_proxy.port), timeout=10) as sock:
        sock.sendall(head + body[:7])  # the body in three packets
        time.sleep(0.1)
        sock.sendall(body[7:20])
        time.sleep(0.1)
        sock.sendall(body[20:])
        answer = b""
        while chunk := sock.recv(65536):  # the proxy closes the connection after answering
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert b'"chat.completion"' in answer
    assert json.loads(fake_openai.chat_requests[-1].body)["messages"] == MESSAGES


@pytest.mark.parametrize(
    "sent",
    ["has space", "x" * 129, "semi;colon", 'quote"d', f"{MARK}\tTab"],
)
def test_an_unsafe_request_id_is_replaced_not_forwarded(
    http: httpx.Client, fake_openai: FakeOpenAI, sent: str
) -> None:
    resp = http.post(
        CHAT, json={"model": "plain", "messages": MESSAGES}, headers={"x-request-id": sent}
    )
    assert resp.status_code == 200
    forwarded = fake_openai.last_request.headers["x-request-id"]
    assert forwarded != sent and resp.headers["x-request-id"] == forwarded
    assert forwarded.startswith("req_")


@pytest.mark.parametrize(
    "model",
    [
        "pattern/a\nb",
        "pattern/\r\nx-injected: 1",
        "pattern/a\x00b",
        "pattern/a\x7fb",
        "pattern/日本語",
    ],
    ids=["lf", "crlf-injection", "nul", "del", "non-latin-1"],
)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_model_text_never_breaks_the_response_headers(
    http: httpx.Client, fake_openai: FakeOpenAI, model: str, stream: bool
) -> None:
    """The client chose this text: it may be refused (400) or served (with the route header
    escaped), but the client always gets a well-formed answer, and never a header it wrote."""
    resp: Any = http.post(CHAT, json={"model": model, "messages": MESSAGES, "stream": stream})
    assert "x-injected" not in resp.headers
    if resp.status_code == 200:
        assert all(ch.isprintable() for ch in resp.headers["x-llm-proxy-route"])
        assert resp.headers["x-llm-proxy-route"].isascii()
    else:
        assert resp.status_code == 400, resp.text
        assert_envelope(resp.json())
