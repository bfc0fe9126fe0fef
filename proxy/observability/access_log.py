"""The one line per request, written straight to stderr in the same text or JSON format as
the loguru sinks. Loguru costs ~25 µs a call, a sixth of the proxy's own time per request,
so the hottest line skips it; with `logging.file` set it goes through loguru (rotation).
Client text in the line is bounded: model names are at most 256 characters (longer ones are
refused), error messages are cut, and request bodies are logged only on demand, cut too."""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any, TextIO

import msgspec
from loguru import logger

from proxy.config import LoggingConfig
from proxy.observability.logging import Redactor

if TYPE_CHECKING:
    from proxy.accounting import RequestRecord

_LEVELS = {"TRACE": 5, "DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
_encode = msgspec.json.Encoder().encode
MAX_LOGGED_BODY = 10_000


FLUSH_AFTER = 0.05  # seconds: lines of the requests that end meanwhile leave in one write


class AccessLog:
    """Lines are written in batches: stderr is line-buffered, so one write per request would
    be one system call per request. A batch leaves within FLUSH_AFTER, and at close."""

    def __init__(
        self, config: LoggingConfig, redactor: Redactor, stream: TextIO | None = None
    ) -> None:
        self.enabled = _LEVELS[config.level] <= _LEVELS["INFO"]
        self.log_bodies = config.log_bodies
        self.json = config.json
        self.via_loguru = config.file is not None
        self.redact = redactor if config.redact else None
        self._stream = stream
        self._second = -1
        self._stamp = ""
        self._pending: list[str] = []
        self._flush: asyncio.TimerHandle | None = None

    def write(self, record: RequestRecord, duration: float) -> None:
        message = record.line(duration)
        fields: dict[str, Any] | None = None
        if self.json or self.via_loguru:
            fields = record.fields(duration)
        if record.error and self.redact is not None:
            message = self.redact(message)
            if fields is not None:
                fields["error"] = self.redact(fields["error"])
        if self.log_bodies and record.body is not None:
            text = record.body[:MAX_LOGGED_BODY].decode("utf-8", "replace")
            text = self.redact(text) if self.redact is not None else text
            message += f" body={text!r}"
            if fields is not None:
                fields["request_body"] = text
        if self.via_loguru:
            logger.info(message.replace("{", "{{").replace("}", "}}"), **(fields or {}))
            return
        now = time.time()
        if fields is not None:
            self._emit(self._json_line(now, message, fields))
        else:
            self._emit(f"{self._text_stamp(now)} | INFO    | {message}\n")

    def _emit(self, line: str) -> None:
        self._pending.append(line)
        if self._flush is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._flush = loop.call_later(FLUSH_AFTER, self.flush)

    def flush(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self._pending:
            lines, self._pending = self._pending, []
            (self._stream or sys.stderr).write("".join(lines))

    def _text_stamp(self, now: float) -> str:
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return f"{self._stamp}.{int((now - second) * 1000):03d}"

    @staticmethod
    def _json_line(now: float, message: str, fields: dict[str, Any]) -> str:
        stamp = datetime.fromtimestamp(now).astimezone().isoformat()
        record = {"time": stamp, "level": "INFO", "message": message, **fields}
        return _encode(record).decode() + "\n"
