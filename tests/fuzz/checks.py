"""What every answer of the proxy must be, whatever it was sent: a success or an OpenAI error
envelope with a 4xx, within a deadline, never a 5xx, never a stack trace; and the proxy bugs
already pinned by strict xfail tests, tolerated here so the fuzzers keep looking for new ones.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from security.helpers import PARSER_REJECTION, assert_envelope, assert_no_stack_trace

# Statuses the proxy may answer a chat request with in front of an upstream that never fails
# (docs/semantics.md, Statuses; never 422, never a 5xx).
CLIENT_ERRORS = frozenset({400, 401, 403, 404, 405, 413, 429})
ANSWER_TIMEOUT = 15.0  # seconds; a loaded 2-core machine, and a 250 KiB body


def scale() -> float:
    """FUZZ_SCALE=10 for a ten times longer run (the examples of every fuzzer)."""
    return float(os.environ.get("FUZZ_SCALE", "1"))


def examples(n: int) -> int:
    return max(1, int(n * scale()))


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


def check_any_answer(method: str, status: int, headers: dict[str, str], body: bytes) -> None:
    """Any route, any method: no 5xx, no trace; an error is the envelope, unless httptools
    refused the bytes before the app saw them (uvicorn's plain-text 400)."""
    text = body.decode("utf-8", "replace")
    assert_no_stack_trace(text)
    assert status < 500, (status, text[:500])
    if status < 400 or method == "HEAD":
        return
    if status == 400 and body == PARSER_REJECTION:
        return
    assert_envelope(body)
