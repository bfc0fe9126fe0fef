"""An incremental server-sent-events decoder with no line-size cap.

Accepts CR, LF and CRLF line ends, `:` comment lines, `data:` with or without a space,
and multi-line data (joined with LF), as the OpenAI SDK's own decoder does.
"""

from __future__ import annotations


class SSEDecoder:
    __slots__ = ("_data", "_pending")

    def __init__(self) -> None:
        self._pending = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        """Return the data of every event completed by `chunk`."""
        if not self._pending and not self._data:
            plain = _plain_events(chunk)
            if plain is not None:
                return plain
        buffer = self._pending + chunk if self._pending else chunk
        if b"\r" in buffer:
            keep_cr = buffer.endswith(b"\r")  # a CRLF may be split across chunks
            if keep_cr:
                buffer = buffer[:-1]
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if keep_cr:
                buffer += b"\r"
        lines = buffer.split(b"\n")
        self._pending = lines.pop()
        events: list[bytes] = []
        for line in lines:
            self._line(line, events)
        return events

    def flush(self) -> list[bytes]:
        """At end of stream: the last event, even without its blank line."""
        events: list[bytes] = []
        if self._pending:
            self._line(self._pending.rstrip(b"\r"), events)
            self._pending = b""
        self._line(b"", events)
        return events

    def _line(self, line: bytes, events: list[bytes]) -> None:
        if not line:
            if self._data:
                events.append(b"\n".join(self._data))
                self._data = []
            return
        if line.startswith(b"data:"):
            value = line[5:]
            self._data.append(value[1:] if value.startswith(b" ") else value)
        # comments (":"), event:, id: and retry: carry nothing a chat stream needs


def _plain_events(chunk: bytes) -> list[bytes] | None:
    """The events of a chunk in the form nearly every server sends (whole `data: <one line>`
    events ended by a blank line, LF only), found without going line by line; None for
    anything else, which the line-by-line decoder takes."""
    if not chunk.endswith(b"\n\n") or b"\r" in chunk:
        return None
    parts = chunk.split(b"\n\n")
    parts.pop()  # the empty tail after the last blank line
    events = []
    for part in parts:
        if part[:6] != b"data: " or b"\n" in part:
            return None
        events.append(part[6:])
    return events
