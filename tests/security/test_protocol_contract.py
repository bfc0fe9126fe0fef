"""What proxy/api/protocol.py and proxy/api/server.py take from uvicorn and httptools beyond
their public API, checked by name: when a new release moves one of them, these tests say which,
instead of the proxy failing at its first request (or worse, serving an empty body).

pyproject.toml pins uvicorn to the minor release these were checked against; raising the pin
means running these first.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import httptools
import pytest
import uvicorn
from uvicorn.config import Config
from uvicorn.protocols.http import flow_control, httptools_impl
from uvicorn.server import ServerState
from uvicorn.supervisors import Multiprocess

from proxy.api.protocol import HttpProtocol

RECHECK = (
    "uvicorn {version} changed what proxy/api/protocol.py relies on: {missing}. "
    "Re-check the overrides there against this release before widening the pin in pyproject.toml."
)

PROTOCOL_METHODS = (
    "connection_made",
    "connection_lost",
    "data_received",
    "on_message_begin",
    "on_headers_complete",
    "_unset_keepalive_if_required",
    "_should_upgrade",
    "handle_websocket_upgrade",
    "send_400_response",
)
PROTOCOL_ATTRIBUTES = (
    "loop",
    "logger",
    "parser",
    "headers",
    "cycle",
    "transport",
    "flow",
    "pipeline",
    "server_state",
)
CYCLE_ATTRIBUTES = (
    "body",
    "more_body",
    "keep_alive",
    "message_event",
    "response_started",
    "response_complete",
    "disconnected",
)
REQUEST_HEAD = (
    b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


def assert_nothing_missing(missing: list[str]) -> None:
    assert not missing, RECHECK.format(version=uvicorn.__version__, missing=", ".join(missing))


def parameters(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def echo(scope: Any, receive: Any, send: Any) -> None:
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def test_the_private_methods_and_names_are_there() -> None:
    missing = [
        f"HttpToolsProtocol.{name}"
        for name in PROTOCOL_METHODS
        if not callable(getattr(httptools_impl.HttpToolsProtocol, name, None))
    ]
    missing += [
        f"{module.__name__}.{name}"
        for module, name in ((httptools_impl, "STATUS_LINE"), (flow_control, "HIGH_WATER_LIMIT"))
        if not hasattr(module, name)
    ]
    expected = ["self", "config", "server_state", "app_state", "_loop"]
    if parameters(httptools_impl.HttpToolsProtocol.__init__) != expected:
        missing.append(f"HttpToolsProtocol.__init__{expected[1:]}")
    if parameters(uvicorn.Server.startup) != ["self", "sockets"]:
        missing.append("Server.startup(sockets)")
    if parameters(Multiprocess.__init__) != ["self", "config", "sockets"]:
        missing.append("Multiprocess(config, sockets)")
    assert_nothing_missing(missing)


async def test_a_protocol_built_as_uvicorn_builds_it_has_the_attributes_it_uses() -> None:
    """Builds the protocol with the keywords uvicorn's server uses, serves one declined
    upgrade through it, and looks at the per-connection and per-request state it touched."""
    config = Config(app=echo, log_config=None, ws="none", proxy_headers=False, lifespan="off")
    protocol = HttpProtocol(
        config=config,
        server_state=ServerState(),
        app_state={},
        _loop=asyncio.get_running_loop(),
        header_timeout=5,
    )
    transport = RecordingTransport()
    protocol.connection_made(transport)
    missing = [f"HttpToolsProtocol.{a}" for a in PROTOCOL_ATTRIBUTES if not hasattr(protocol, a)]
    protocol.data_received(REQUEST_HEAD + b"3\r\nabc\r\n")
    protocol.data_received(b"0\r\n\r\n")
    missing += [
        f"RequestResponseCycle.{a}" for a in CYCLE_ATTRIBUTES if not hasattr(protocol.cycle, a)
    ]
    assert_nothing_missing(missing)
    await asyncio.wait_for(asyncio.gather(*protocol.server_state.tasks), 5)
    assert transport.written.startswith(b"HTTP/1.1 200 "), bytes(transport.written)
    assert transport.written.endswith(b"\r\n\r\nabc")
    assert transport.closed  # a declined upgrade's connection cannot carry another request
    protocol.connection_lost(None)


def test_httptools_stops_an_upgrade_request_at_the_end_of_its_headers() -> None:
    """The protocol reads a declined upgrade's body itself, from the byte where httptools
    stopped: if httptools ever parses that body, the protocol would wait for it forever."""
    seen: list[bytes] = []

    class Callbacks:
        def on_body(self, body: bytes) -> None:
            seen.append(body)

    parser = httptools.HttpRequestParser(Callbacks())
    with pytest.raises(httptools.HttpParserUpgrade) as stopped:
        parser.feed_data(REQUEST_HEAD + b"3\r\nabc\r\n0\r\n\r\n")
    assert stopped.value.args[0] == len(REQUEST_HEAD), (
        f"httptools {httptools.__version__} no longer stops at the end of an upgrade request's "
        "headers: re-check proxy/api/protocol.py (declined upgrades)"
    )
    assert seen == []
