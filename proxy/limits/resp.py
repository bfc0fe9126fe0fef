"""One pipelined Redis connection for the two scripts on the hot path (admission and the end
of a request).

redis-py serves each command through its pool, retry and health-check layers, which cost a
request more than the round trip itself; the scripts need none of that. Here a command is
written at once on a single connection and its reply matched in order (Redis answers in
order), parsed by hiredis; concurrent requests share the connection without waiting for each
other. A lost connection fails what was waiting (the store's fault policy decides) and the
next call connects again; a caller's timeout leaves its reply to be read and dropped.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from dataclasses import dataclass
from typing import Any

import hiredis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError


@dataclass(frozen=True, slots=True)
class Script:
    text: str
    sha: str

    @classmethod
    def of(cls, text: str) -> Script:
        return cls(text, hashlib.sha1(text.encode()).hexdigest())  # Redis names scripts so


def pack(*args: str | bytes | int) -> bytes:
    """A command in RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Pipe(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            future = self.waiting.popleft()
            if future.done():
                continue  # its caller gave up (timed out): the reply is dropped
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(ResponseError(str(reply)))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(RedisConnectionError("Redis closed the connection."))

    def call(self, command: bytes) -> asyncio.Future[Any]:
        assert self.transport is not None
        future = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        self.transport.write(command)
        return future


class ScriptClient:
    def __init__(self, url: str, connect_timeout: float) -> None:
        options = parse_url(url)
        self.host = str(options.get("host") or "localhost")
        self.port = int(options.get("port") or 6379)
        self.db = int(options.get("db") or 0)
        self.username = options.get("username")
        self.password = options.get("password")
        self.tls = options.get("connection_class") is SSLConnection
        self.connect_timeout = connect_timeout
        self._pipe: _Pipe | None = None
        self._connecting: asyncio.Future[_Pipe] | None = None

    async def run(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        """The script's reply (loaded once per connection: EVALSHA, then EVAL on NOSCRIPT)."""
        pipe = self._pipe if self._pipe is not None and not self._pipe.lost else await self._open()
        try:
            return await pipe.call(pack("EVALSHA", script.sha, len(keys), *keys, *args))
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            return await pipe.call(pack("EVAL", script.text, len(keys), *keys, *args))

    async def _open(self) -> _Pipe:
        """A new connection; concurrent callers share the one being made."""
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._connect())
        return await asyncio.shield(self._connecting)

    async def _connect(self) -> _Pipe:
        loop = asyncio.get_running_loop()
        context = ssl.create_default_context() if self.tls else None
        pipe: _Pipe | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                made = await loop.create_connection(_Pipe, self.host, self.port, ssl=context)
                transport, pipe = made
                pipe.transport = transport  # uvloop may call connection_made a little later
                if self.password is not None:
                    who = [self.username] if self.username else []
                    await pipe.call(pack("AUTH", *who, self.password))
                if self.db:
                    await pipe.call(pack("SELECT", self.db))
        except BaseException as exc:
            if pipe is not None and pipe.transport is not None:
                pipe.transport.close()
            if isinstance(exc, OSError):
                raise RedisConnectionError(f"Cannot connect to Redis: {exc}") from None
            raise
        self._pipe = pipe
        return pipe

    async def close(self) -> None:
        pipe, self._pipe = self._pipe, None
        if pipe is not None and pipe.transport is not None:
            pipe.transport.close()
