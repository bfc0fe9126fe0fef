"""A fake upstream the tests script from their own thread: behaviours queued one per request
ahead of a default, the reply text to answer with, and every request it saw, recorded as
`RecordedRequest`. The OpenAI and Anthropic fakes are both this, with their own wire format.

    class FakeThing(ScriptedFake[Behaviour]):
        default_reply = "Hello"

        def fresh_default(self) -> Behaviour:   # what `reset` goes back to
            return ok()
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from aiohttp import web

from fakes.server import FakeServer

B = TypeVar("B")


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    json: Any  # parsed body, or None when it was not JSON
    behaviour: Any = None  # the fake's Behaviour that answered it
    # What the fake answered (non-stream body, or the chunks it sent), for comparisons.
    response_json: Any = None
    sent_events: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, int] | None = None
    # completed | cancelled (handler cancelled: the client went away) | disconnected (a write
    # failed) | aborted (the fake dropped the connection on purpose) | error
    outcome: str | None = None
    received_at: float = field(default_factory=time.monotonic)
    finished_at: float | None = None
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    def wait_done(self, timeout: float = 5.0) -> bool:
        return self.done.wait(timeout)


class ScriptedFake(FakeServer, Generic[B]):
    """Thread-safe: script it and read what it saw from any thread."""

    default_reply = "Hello from the fake upstream"
    keep_requests: int | None = None  # a long run keeps only about this many recent records

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._script: deque[B] = deque()
        self._default = self.fresh_default()
        self._reply = self.default_reply
        self._requests: list[RecordedRequest] = []
        self._seq = itertools.count(1)
        # where every behaviour comes from instead of the script (a chaos run's fault plan)
        self.draw: Callable[[], B] | None = None

    def fresh_default(self) -> B:
        raise NotImplementedError

    # ---- scripting (any thread)

    def script(self, *behaviours: B) -> None:
        """Queue behaviours, consumed one per answered request, before the default."""
        with self._lock:
            self._script.extend(behaviours)

    @property
    def default(self) -> B:
        with self._lock:
            return self._default

    @default.setter
    def default(self, behaviour: B) -> None:
        with self._lock:
            self._default = behaviour

    @property
    def reply(self) -> str:
        with self._lock:
            return self._reply

    @reply.setter
    def reply(self, text: str) -> None:
        with self._lock:
            self._reply = text

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self._default = self.fresh_default()
            self._reply = self.default_reply
            self._requests.clear()

    # ---- inspection (any thread)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    # ---- for the handlers (the fake's loop)

    def _record(self, request: web.Request, body: bytes) -> RecordedRequest:
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        rec = RecordedRequest(
            method=request.method,
            path=request.path,
            query=request.query_string,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            json=parsed,
        )
        with self._changed:
            self._requests.append(rec)
            if self.keep_requests is not None and len(self._requests) > 2 * self.keep_requests:
                del self._requests[: -self.keep_requests]
            self._changed.notify_all()
        return rec

    def _next_behaviour(self) -> tuple[B, str, int]:
        """The behaviour for this request (drawn, else the script's next, else the default),
        the reply text and the request's sequence number."""
        draw = self.draw
        with self._lock:
            if draw is not None:
                behaviour = draw()
            else:
                behaviour = self._script.popleft() if self._script else self._default
            return behaviour, self._reply, next(self._seq)
