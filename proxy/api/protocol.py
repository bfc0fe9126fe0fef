"""uvicorn's httptools protocol with two changes: request headers must arrive in time, and an
upgrade the proxy will not perform leaves an ordinary request.

Header timeout: a connection is closed when a request's headers are not all in within
`header_timeout` seconds, counted from the opening of the connection for its first request and
from the first byte of each later one (uvicorn's keep-alive timeout covers the idle time between
requests). A client that sent part of a request gets a 408 first; an answer still in flight is
finished before the connection closes.

Declined upgrades: a request carrying `Connection: Upgrade` (`Upgrade: h2c` from HTTP/2-curious
clients, or a websocket the proxy does not serve) stops httptools at the end of its headers, and
uvicorn would hand the app an empty body. Here the body is read by its own framing (chunked, or
Content-Length) and reaches the app; the connection closes after the answer, since the parser
cannot read another request on it.

A lost connection calls the hook the app left in the request's scope (`ON_DISCONNECT`), so a
stream relayed without Litestar stops when its client leaves.

All three reach into private parts of uvicorn's HttpToolsProtocol: pyproject.toml pins the uvicorn
minor release they were checked against, and tests/security/test_protocol_contract.py names
what moved when that pin is raised.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, Literal, Protocol

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from proxy.errors import InvalidRequestError, ProxyError

DEFAULT_HEADER_TIMEOUT = 10.0
# a request's scope may hold a callable under ON_DISCONNECT: called when the connection is lost
# before the answer ended (the app learns of it at once, not at its next write)
ON_DISCONNECT = "llm_proxy.on_disconnect"
DISCONNECT_HOOK = "llm_proxy.disconnect_hook"
MAX_FRAMING_LINE = 4096  # a chunk-size line (extensions included) or one trailer field
CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")


class RequestTimeoutError(ProxyError):
    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class MalformedBodyError(ValueError):
    """The body's framing is broken: where the request ends cannot be known."""


class BodyFraming(Protocol):
    @property
    def done(self) -> bool: ...

    def feed(self, data: bytes) -> bytes:
        """The body bytes in `data`; what follows the body's end is dropped."""
        ...


class LengthBody:
    """A body of Content-Length bytes."""

    def __init__(self, length: int) -> None:
        self.remaining = length

    @property
    def done(self) -> bool:
        return self.remaining == 0

    def feed(self, data: bytes) -> bytes:
        part = data[: self.remaining]
        self.remaining -= len(part)
        return part


class ChunkedBody:
    """A chunked body (RFC 9112, section 7.1) fed in pieces cut anywhere; chunk extensions
    and trailer fields are read and dropped."""

    def __init__(self) -> None:
        self._pending = bytearray()
        self._state: Literal["size", "data", "data-end", "trailer", "done"] = "size"
        self._remaining = 0  # bytes of the current chunk's data still to come

    @property
    def done(self) -> bool:
        return self._state == "done"

    def feed(self, data: bytes) -> bytes:
        if self.done:
            return b""
        body = bytearray()
        self._pending += data
        while self._pending and not self.done and self._step(body):
            pass
        return bytes(body)

    def _step(self, body: bytearray) -> bool:
        """Reads one element of the framing; False when it has not all arrived yet."""
        if self._state == "data":
            self._data(body)
            return True
        if self._state == "data-end":
            return self._data_end()
        line = self._line()
        if line is None:
            return False
        if self._state == "size":
            self._size(line)
        elif not line:  # an empty line ends the trailer section, and the body
            self._state = "done"
        return True

    def _line(self) -> bytes | None:
        end = self._pending.find(b"\r\n")
        if (end if end >= 0 else len(self._pending)) > MAX_FRAMING_LINE:
            raise MalformedBodyError("a chunk-size or trailer line is too long")
        if end < 0:
            return None
        line = bytes(self._pending[:end])
        del self._pending[: end + 2]
        return line

    def _size(self, line: bytes) -> None:
        size = line.split(b";", 1)[0].rstrip(b" \t")
        if not CHUNK_SIZE.fullmatch(size):
            raise MalformedBodyError("a chunk size is not a hexadecimal number")
        self._remaining = int(size, 16)
        self._state = "data" if self._remaining else "trailer"

    def _data(self, body: bytearray) -> None:
        part = self._pending[: self._remaining]
        body += part
        del self._pending[: len(part)]
        self._remaining -= len(part)
        if not self._remaining:
            self._state = "data-end"

    def _data_end(self) -> bool:
        if len(self._pending) < 2:
            return False
        if self._pending[:2] != b"\r\n":
            raise MalformedBodyError("chunk data longer than its chunk size")
        del self._pending[:2]
        self._state = "size"
        return True


def body_framing(headers: list[tuple[bytes, bytes]]) -> BodyFraming:
    """How a request's body is delimited (RFC 9112, section 6.3), from lower-cased headers."""
    codings = [
        coding.strip().lower()
        for name, value in headers
        if name == b"transfer-encoding"
        for coding in value.split(b",")
        if coding.strip()
    ]
    if codings:
        if codings[-1] != b"chunked":
            raise MalformedBodyError("the final transfer coding is not chunked")
        return ChunkedBody()
    length = next((value for name, value in headers if name == b"content-length"), b"0")
    if not length.isdigit():
        raise MalformedBodyError("the Content-Length is not a number")
    return LengthBody(int(length))


class HttpProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None
        self._request_began = False  # bytes of the request awaited have arrived
        self._declined: BodyFraming | None = None  # the body framing of a declined upgrade

    # Header timeout

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_in()
        cycle = self.cycle
        answering = cycle is not None and not cycle.response_complete
        super().connection_lost(exc)
        if answering and cycle is not None:
            scope: dict[str, Any] = cycle.scope  # type: ignore[assignment]
            hook = scope.get(ON_DISCONNECT)
            if hook is not None:
                hook()  # e.g. a stream being relayed stops at once

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_began = True  # a later request's clock starts if its headers straddle
        # reads (data_received): most arrive whole, and then cost no timer at all

    def on_headers_complete(self) -> None:
        self._headers_in()
        scope: dict[str, Any] = self.scope  # type: ignore[assignment]
        scope[DISCONNECT_HOOK] = True  # this server calls the scope's ON_DISCONNECT
        super().on_headers_complete()

    def _await_headers(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_overdue)

    def _headers_in(self) -> None:
        self._request_began = False
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_overdue(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        self.logger.debug("Request headers not received within %ss.", self.header_timeout)
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # closes once the answer in flight is sent
        elif self._request_began:
            message = f"The request headers did not arrive within {self.header_timeout:g}s."
            self._answer_and_close(RequestTimeoutError(message))
        else:
            self.transport.close()

    def _answer_and_close(self, error: ProxyError) -> None:
        body = error.body()
        head = [STATUS_LINE[error.status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()

    # Declined upgrades

    def data_received(self, data: bytes) -> None:
        if self._declined is not None:
            self._declined_body(data)
            return
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
            if self._request_began and self._header_timer is None:
                self._await_headers()  # headers begun in this read and not yet complete
        except httptools.HttpParserError:
            message = "Invalid HTTP request received."
            self.logger.warning(message)
            self.send_400_response(message)
        except httptools.HttpParserUpgrade as upgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._decline_upgrade(data[upgrade.args[0] :])

    def _decline_upgrade(self, rest: bytes) -> None:
        self.cycle.keep_alive = False
        self._declined = LengthBody(0)  # nothing more is read unless the framing says so
        try:
            self._declined = body_framing(self.headers)
        except MalformedBodyError as exc:
            self._refuse_body(exc)
            return
        if not self._declined.done:
            self.cycle.more_body = True
            self._declined_body(rest)

    def _declined_body(self, data: bytes) -> None:
        framing = self._declined
        if framing is None or framing.done:
            return  # the body is in; anything after it is ignored (the connection closes)
        try:
            part = framing.feed(data)
        except MalformedBodyError as exc:
            self._refuse_body(exc)
            return
        self.cycle.body += part
        self.cycle.more_body = not framing.done
        if len(self.cycle.body) > HIGH_WATER_LIMIT:
            self.flow.pause_reading()  # the app's next receive resumes it
        self.cycle.message_event.set()

    def _refuse_body(self, problem: MalformedBodyError) -> None:
        self.logger.warning("Invalid HTTP request body: %s.", problem)
        self._declined = LengthBody(0)
        if self.pipeline or self.cycle.response_started:
            self.transport.close()  # an answer is on the wire: a 400 cannot follow it
            return
        self.cycle.disconnected = True  # whatever the app answers now has nowhere to go
        self._answer_and_close(InvalidRequestError(f"Invalid request body framing: {problem}."))
