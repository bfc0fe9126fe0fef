"""What the security and fuzz tests share: a canary listener that must never be contacted, a
catch-all HTTP recorder, a robust upstream that answers anything, a raw HTTP/1.1 client, and
the checks on what the proxy answers (the OpenAI error envelope, no secret, no stack trace)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import msgspec

# uvicorn's own answer to bytes httptools cannot parse as HTTP/1.1: the app never sees them.
PARSER_REJECTION = b"Invalid HTTP request received."
STACK_TRACE_MARKERS = ("Traceback (most recent call last)", 'File "/', "site-packages")


def assert_envelope(body: Any) -> dict[str, Any]:
    """OpenAI's `{"error": {"message", "type", "param", "code"}}`, nothing more, no trace."""
    if isinstance(body, bytes | str):
        body = json.loads(body)
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict), body
    assert {"message", "type", "param", "code"} <= set(error), body
    assert isinstance(error["message"], str) and error["message"], body
    assert isinstance(error["type"], str) and error["type"], body
    assert_no_stack_trace(json.dumps(body))
    return error


def assert_no_stack_trace(text: str) -> None:
    for marker in STACK_TRACE_MARKERS:
        assert marker not in text, f"{marker!r} in {text[:2000]!r}"


def find_secrets(text: str, secrets: Iterable[str]) -> list[str]:
    return [s for s in secrets if s and s in text]


# ---------------------------------------------------------------------------------------------
# Listeners


class Canary:
    """A TCP listener on 127.0.0.1 that counts every connection made to it (and keeps the
    first bytes of each). Nothing the proxy's clients send may make the proxy connect here."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.1)
        self.port: int = self._sock.getsockname()[1]
        self.connections: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="canary", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(0.3)
                data = b""
                with contextlib.suppress(OSError):
                    data = conn.recv(1024)
                self.connections.append(data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()

    def __enter__(self) -> Canary:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Recorder:
    """A catch-all HTTP server (any method, any path): records each request and answers
    `status` with `body`. For upstreams whose URL the tests must watch."""

    status: int = 404
    body: bytes = b'{"error": "not here"}'
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    _server: ThreadingHTTPServer | None = None

    def start(self) -> Recorder:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                recorder.seen.append(Seen(self.command, self.path, headers, body))
                self.send_response(recorder.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(recorder.body)))
                self.end_headers()
                self.wfile.write(recorder.body)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _any

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="recorder", daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Recorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------
# A robust upstream: answers every chat request well, whatever the body holds


class _Lax(msgspec.Struct):
    """Read as a lax OpenAI-compatible server (and the proxy) reads the fields it acts on."""

    stream: bool | None = None
    n: int | None = None


_lax = msgspec.json.Decoder(_Lax, strict=False)


def _chunk(i: int, delta: dict[str, Any], finish: str | None) -> bytes:
    chunk = {
        "id": "chatcmpl-robust",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "robust",
        "choices": [{"index": i, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def robust_answer(body: bytes) -> tuple[int, str, bytes]:
    """(status, content type, body) for one chat request: a completion, a stream, or a 400."""
    try:
        lax = _lax.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        error = {
            "error": {
                "message": "bad",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        }
        return 400, "application/json", json.dumps(error).encode()
    n = lax.n if lax.n and 0 < lax.n <= 128 else 1
    if lax.stream:
        parts = [_chunk(i, {"role": "assistant", "content": "ok"}, None) for i in range(n)]
        parts += [_chunk(i, {}, "stop") for i in range(n)]
        usage = {
            "id": "chatcmpl-robust",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "robust",
            "choices": [],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        parts.append(b"data: " + json.dumps(usage).encode() + b"\n\n")
        parts.append(b"data: [DONE]\n\n")
        return 200, "text/event-stream", b"".join(parts)
    completion = {
        "id": "chatcmpl-robust",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "robust",
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
            for i in range(n)
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    return 200, "application/json", json.dumps(completion).encode()


class RobustUpstream:
    """An OpenAI-compatible upstream that never fails: every POST is answered by
    `robust_answer`, so any 5xx the proxy gives in front of it is the proxy's own."""

    def __init__(self) -> None:
        self.count = 0
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    def start(self) -> RobustUpstream:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                status, kind, body = robust_answer(self.rfile.read(length))
                upstream.count += 1
                self.send_response(status)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="robust", daemon=True).start()
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> RobustUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------
# A raw HTTP/1.1 client: any method, any header bytes, and a deadline on the whole answer


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float


class NoAnswer(AssertionError):
    pass


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return out


def raw_request(port: int, request: bytes, timeout: float = 15.0) -> RawResponse:
    """Send `request` bytes as they are on a new connection; read until the server closes
    (the request should say `Connection: close`) or the answer is complete. No answer
    within `timeout` seconds raises NoAnswer."""
    started = time.monotonic()
    deadline = started + timeout
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):  # the server may answer before reading it all
            sock.sendall(request)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NoAnswer(f"no complete answer within {timeout}s: {data[:300]!r}")
            sock.settimeout(left)
            try:
                piece = sock.recv(65536)
            except TimeoutError:
                raise NoAnswer(f"no complete answer within {timeout}s: {data[:300]!r}") from None
            except ConnectionResetError:
                piece = b""
            if not piece:
                break
            data += piece
            if _complete(data):
                break
    seconds = time.monotonic() - started
    head, _, body = data.partition(b"\r\n\r\n")
    if not head:
        raise NoAnswer("the connection closed without an answer")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    return RawResponse(status, headers, body, seconds)


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return body.endswith(b"0\r\n\r\n")
