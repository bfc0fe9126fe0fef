"""What every answer of the proxy must be, whatever it was sent: a success in the format of its
door, or that door's error envelope (OpenAI's, or Anthropic's under /v1/messages) with a 4xx,
within a deadline, never a 5xx, never a stack trace; and the proxy bugs already pinned by strict
xfail tests, tolerated here so the fuzzers keep looking for new ones.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import msgspec
from hypothesis import HealthCheck, Phase, settings
from security.helpers import PARSER_REJECTION, assert_envelope, assert_no_stack_trace

# Statuses the proxy may answer a chat request with in front of an upstream that never fails
# (docs/semantics.md, Statuses; never 422, never a 5xx).
CLIENT_ERRORS = frozenset({400, 401, 403, 404, 405, 413, 429})
ADMIN_ERRORS = CLIENT_ERRORS | {409}  # a key name taken, or a key of the policy file
RESPONSE_ENDINGS = frozenset({"response.completed", "response.incomplete", "response.failed"})
ANSWER_TIMEOUT = 15.0  # seconds; a loaded 2-core machine, and a 250 KiB body


def scale() -> float:
    """FUZZ_SCALE=10 for a ten times longer run (the examples of every fuzzer)."""
    return float(os.environ.get("FUZZ_SCALE", "1"))


def examples(n: int) -> int:
    return max(1, int(n * scale()))


PHASES = [Phase.explicit, Phase.reuse, Phase.generate]
if os.environ.get("FUZZ_SHRINK"):  # shrinking against a real server is slow
    PHASES.append(Phase.shrink)


def fuzz_settings(n: int) -> settings:
    """`n` examples (times FUZZ_SCALE), no example database, derandomized in CI."""
    return settings(
        max_examples=examples(n),
        deadline=None,
        database=None,
        derandomize=bool(os.environ.get("CI")),
        phases=PHASES,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )


CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    "",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
]


# ---------------------------------------------------------------------------------------------
# Known proxy bugs (each pinned by a strict xfail test; drop the entry when it is fixed)


def _lenient_model(body: bytes) -> Any:
    try:
        data = json.loads(body.decode("utf-8", "surrogateescape"))
    except (ValueError, RecursionError):
        return None
    return data.get("model") if isinstance(data, dict) else None


def _model_reaches_a_header(body: bytes) -> bool:
    """tests/security/test_headers.py::test_model_text_never_breaks_the_response_headers:
    a pattern route's model text with a control or non-latin-1 character breaks the
    x-llm-proxy-route header (500 or a dropped connection)."""
    model = _lenient_model(body)
    if not isinstance(model, str):
        return False
    return any(not (" " <= ch <= "~" or "\xa0" <= ch <= "\xff" or ch == "\t") for ch in model)


def _generic_decode_fails(body: bytes) -> bool:
    """tests/fuzz/test_chat_body_fuzz.py::test_strings_and_numbers_msgspec_refuses_are_400:
    invalid UTF-8 inside a JSON string, or a number out of range (1e999, a 5000-digit integer)
    in a field the head does not type, passes or escapes decode_chat_head, then msgspec's
    generic decode raises UnicodeDecodeError / ValidationError in wire.upstream_body
    (or decode_chat_head itself lets UnicodeDecodeError out): a 500."""
    try:
        msgspec.json.decode(body)
    except (UnicodeDecodeError, msgspec.ValidationError):
        return True
    except msgspec.DecodeError:
        return False
    return False


KNOWN_BUGS: dict[str, Callable[[bytes], bool]] = {}  # all fixed; add an entry per new bug


@dataclass
class Tally:
    """What the answers were, for the summary a fuzzer prints."""

    statuses: Counter[str]
    known: Counter[str]

    @classmethod
    def new(cls) -> Tally:
        return cls(Counter(), Counter())

    def known_bug(self, body: bytes) -> str | None:
        for name, matches in KNOWN_BUGS.items():
            if matches(body):
                self.known[name] += 1
                return name
        return None

    def summary(self) -> str:
        known = ", ".join(f"{k}: {v}" for k, v in self.known.items()) or "none"
        return f"statuses {dict(sorted(self.statuses.items()))}; known bugs hit: {known}"


# ---------------------------------------------------------------------------------------------
# Checking one answer


def check_stream(text: str) -> None:
    """A 200 event stream: every event is JSON, it ends with [DONE], and before that either
    every choice finished or an in-band error event says why not."""
    data = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
    assert data and data[-1] == "[DONE]", text[-500:]
    events = [json.loads(d) for d in data[:-1]]
    assert all(isinstance(e, dict) for e in events), text[-500:]
    if events and "error" in events[-1]:
        assert_envelope(events[-1])
        return
    finished = [c for e in events for c in e.get("choices") or () if c.get("finish_reason")]
    assert finished, text[-500:]


def check_chat_answer(status: int, headers: dict[str, str], body: bytes) -> None:
    text = body.decode("utf-8", "replace")
    assert_no_stack_trace(text)
    if status == 200:
        if headers.get("content-type", "").startswith("text/event-stream"):
            check_stream(text)
        else:
            completion = json.loads(body)
            assert isinstance(completion.get("choices"), list) and completion["choices"], text
        return
    assert status in CLIENT_ERRORS, (status, text[:500])
    assert headers.get("content-type", "").startswith("application/json"), headers
    assert_envelope(body)


def is_anthropic_path(target: str) -> bool:
    """Whether a request target is under /v1/messages, whose errors are Anthropic's."""
    path = unquote(target.split("?", 1)[0].split("#", 1)[0])
    return path == "/v1/messages" or path.startswith("/v1/messages/")


def assert_anthropic_envelope(body: Any) -> dict[str, Any]:
    """Anthropic's `{"type": "error", "error": {"type", "message"}}`, no trace."""
    if isinstance(body, bytes | str):
        body = json.loads(body)
    assert isinstance(body, dict) and body.get("type") == "error", body
    assert set(body) <= {"type", "error", "request_id"}, body
    error = body["error"]
    assert isinstance(error, dict) and set(error) == {"type", "message"}, body
    assert isinstance(error["type"], str) and error["type"], body
    assert isinstance(error["message"], str) and error["message"], body
    assert_no_stack_trace(json.dumps(body))
    return error


def check_any_answer(
    method: str, status: int, headers: dict[str, str], body: bytes, target: str = "/"
) -> None:
    """Any route, any method: no 5xx, no trace; an error is the envelope of the path's door,
    unless httptools refused the bytes before the app saw them (uvicorn's plain-text 400)."""
    text = body.decode("utf-8", "replace")
    assert_no_stack_trace(text)
    assert status < 500, (status, text[:500])
    if status < 400 or method == "HEAD":
        return
    if status == 400 and body == PARSER_REJECTION:
        return
    if is_anthropic_path(target):
        assert_anthropic_envelope(body)
    else:
        assert_envelope(body)


# ---------------------------------------------------------------------------------------------
# The other doors: each success in its own format, each error in its own envelope


def _events(text: str) -> list[dict[str, Any]]:
    data = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
    events = [json.loads(d) for d in data]
    assert events and all(isinstance(e, dict) for e in events), text[-500:]
    return events


def check_responses_stream(text: str) -> None:
    """Numbered from 0 without a gap, ending with one of the response's endings."""
    events = _events(text)
    assert [e.get("sequence_number") for e in events] == list(range(len(events))), text[-500:]
    assert events[0].get("type") == "response.created", text[:500]
    assert events[-1].get("type") in RESPONSE_ENDINGS, text[-500:]


def check_messages_stream(text: str) -> None:
    """message_start first; message_stop last, or an `error` event in Anthropic's envelope."""
    events = _events(text)
    assert events[0].get("type") in ("message_start", "error"), text[:500]
    if events[-1].get("type") == "error":
        assert_anthropic_envelope(events[-1])
        return
    assert events[-1].get("type") == "message_stop", text[-500:]


def _check_success(door: str, headers: dict[str, str], body: bytes) -> None:
    text = body.decode("utf-8", "replace")
    if headers.get("content-type", "").startswith("text/event-stream"):
        streams = {"chat": check_stream, "responses": check_responses_stream}
        streams.get(door, check_messages_stream)(text)
        return
    if door == "admin" and headers.get("content-type", "").startswith("text/csv"):
        return
    answer = json.loads(body)
    expected = {
        "responses": lambda a: a.get("object") == "response",
        "messages": lambda a: a.get("type") == "message",
        "count_tokens": lambda a: isinstance(a.get("input_tokens"), int),
        "embeddings": lambda a: a.get("object") == "list" and isinstance(a.get("data"), list),
        "admin": lambda a: isinstance(a, dict),
        "session": lambda a: isinstance(a.get("signed_in"), bool),
    }
    assert isinstance(answer, dict) and expected[door](answer), text[:500]


def check_door_answer(door: str, status: int, headers: dict[str, str], body: bytes) -> None:
    """`door`: responses | messages | count_tokens | embeddings | admin | session."""
    assert_no_stack_trace(body.decode("utf-8", "replace"))
    if 200 <= status < 300:
        _check_success(door, headers, body)
        return
    allowed = ADMIN_ERRORS if door == "admin" else CLIENT_ERRORS
    assert status in allowed, (status, body[:500])
    assert headers.get("content-type", "").startswith("application/json"), headers
    if door in ("messages", "count_tokens"):
        assert_anthropic_envelope(body)
    else:
        assert_envelope(body)
