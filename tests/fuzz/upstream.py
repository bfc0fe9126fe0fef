"""The upstream behind the fuzzed proxy: it answers every request well in the format of the
path it was sent to, whatever the body holds, so that a 5xx, a hang or a dropped connection can
only be the proxy's. Chat completions as security.helpers.robust_answer answers them;
embeddings (one vector per input it can count); a native Responses API (JSON or its event
stream); Anthropic's Messages API (JSON or its event stream) and count_tokens."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import msgspec
from security.helpers import robust_answer

Answer = tuple[int, str, bytes]
JSON = "application/json"
EVENTS = "text/event-stream"


class _Lax(msgspec.Struct):
    """What the answers depend on, read as leniently as a lax server reads it."""

    stream: bool | None = None
    input: Any = None


_lax = msgspec.json.Decoder(_Lax, strict=False)


def _read(body: bytes) -> _Lax:
    try:
        return _lax.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return _Lax()


def _count_inputs(value: Any) -> int:
    if isinstance(value, list) and value and not all(isinstance(v, int) for v in value):
        return len(value)
    return 1


def embeddings_answer(body: bytes) -> Answer:
    count = _count_inputs(_read(body).input)
    data = [{"object": "embedding", "index": i, "embedding": [0.5, -0.5]} for i in range(count)]
    usage = {"prompt_tokens": count, "total_tokens": count}
    answer = {"object": "list", "data": data, "model": "robust", "usage": usage}
    return 200, JSON, json.dumps(answer).encode()


def _sse(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def _response_object(status: str) -> dict[str, Any]:
    part = {"type": "output_text", "text": "ok", "annotations": []}
    item = {"id": "msg_r", "type": "message", "status": "completed", "role": "assistant"}
    usage = {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2}
    output = [{**item, "content": [part]}] if status == "completed" else []
    return {
        "id": "resp_robust",
        "object": "response",
        "created_at": 1700000000,
        "status": status,
        "model": "robust",
        "output": output,
        "usage": usage if status == "completed" else None,
    }


def responses_answer(body: bytes) -> Answer:
    if not _read(body).stream:
        return 200, JSON, json.dumps(_response_object("completed")).encode()
    kinds = [
        ("response.created", {"response": _response_object("in_progress")}),
        ("response.completed", {"response": _response_object("completed")}),
    ]
    frames = [
        _sse(kind, {"type": kind, "sequence_number": n, **fields})
        for n, (kind, fields) in enumerate(kinds)
    ]
    return 200, EVENTS, b"".join(frames)


def _message() -> dict[str, Any]:
    return {
        "id": "msg_robust",
        "type": "message",
        "role": "assistant",
        "model": "robust",
        "content": [{"type": "text", "text": "ok"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }


def messages_answer(body: bytes) -> Answer:
    if not _read(body).stream:
        return 200, JSON, json.dumps(_message()).encode()
    start = {**_message(), "content": [], "stop_reason": None}
    events = [
        ("message_start", {"message": start}),
        ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "ok"}}),
        ("content_block_stop", {"index": 0}),
        ("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}}),
        ("message_stop", {}),
    ]
    return 200, EVENTS, b"".join(_sse(name, {"type": name, **data}) for name, data in events)


def count_answer(body: bytes) -> Answer:
    return 200, JSON, b'{"input_tokens": 1}'


ANSWERS: dict[str, Callable[[bytes], Answer]] = {
    "/v1/chat/completions": robust_answer,
    "/v1/embeddings": embeddings_answer,
    "/v1/responses": responses_answer,
    "/v1/messages": messages_answer,
    "/v1/messages/count_tokens": count_answer,
}


class FuzzUpstream:
    """Every POST answered by the answer of its path (an unknown path: a chat completion)."""

    def __init__(self) -> None:
        self.count = 0
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    def start(self) -> FuzzUpstream:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                answer = ANSWERS.get(self.path.split("?")[0], robust_answer)
                status, kind, body = answer(self.rfile.read(length))
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
        threading.Thread(target=self._server.serve_forever, name="fuzz-up", daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FuzzUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
