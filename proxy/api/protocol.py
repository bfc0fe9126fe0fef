"""uvicorn's httptools protocol, except for an upgrade it will not perform.

A request carrying `Connection: Upgrade` (`Upgrade: h2c` from HTTP/2-curious clients, or a
websocket the proxy does not serve) stops httptools at the end of its headers: uvicorn then
hands the app an empty body. Here such a request stays an ordinary one: its body (by
Content-Length) reaches the app, and the connection closes after the answer, since the parser
cannot read another request on it."""

from __future__ import annotations

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HttpProtocol(HttpToolsProtocol):
    _declined: int | None = None  # body bytes still due of a declined upgrade

    def data_received(self, data: bytes) -> None:
        if self._declined is not None:
            self._declined_body(data)
            return
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
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
        length = next((value for name, value in self.headers if name == b"content-length"), b"")
        self._declined = int(length) if length.isdigit() else 0
        if self._declined:
            self.cycle.more_body = True
            self._declined_body(rest)

    def _declined_body(self, data: bytes) -> None:
        if not self._declined:
            return  # the body is in; anything after it is ignored (the connection closes)
        part = data[: self._declined]
        self._declined -= len(part)
        self.cycle.body += part
        self.cycle.more_body = self._declined > 0
        self.cycle.message_event.set()
