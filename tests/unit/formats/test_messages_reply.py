"""Answers of the Messages door on JSON: a chat.completion as a message (blocks, stop reasons,
usage), a native message relabelled, malformed replies, errors in Anthropic's envelope."""

from __future__ import annotations

import time
from typing import Any

import msgspec
import pytest

from proxy.accounting import RequestRecord
from proxy.errors import (
    AuthenticationError,
    InvalidRequestError,
    ProxyError,
    RateLimitError,
    ServiceUnavailableError,
    UpstreamError,
    UpstreamTimeoutError,
)
from proxy.formats.messages.door import MESSAGES
from proxy.formats.messages.reply import decode_chat, message_from_chat, native_answer


def completion(message: dict[str, Any], finish: str = "stop", **choice: Any) -> bytes:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "up",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, **choice}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }
    return msgspec.json.encode(body)


def message(body: bytes, stops: list[str] | None = None) -> dict[str, Any]:
    made = message_from_chat(decode_chat(body, "up"), "msg_1", "public", stops or [], "up")
    decoded: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(made))
    return decoded


def test_text_becomes_a_text_block_and_usage_anthropic_s() -> None:
    assert message(completion({"role": "assistant", "content": "Hello"})) == {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "public",
        "content": [{"type": "text", "text": "Hello"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 11, "output_tokens": 7},
    }


def test_tool_calls_become_tool_use_blocks_with_parsed_input() -> None:
    calls = [
        {"id": "call_1", "type": "function", "function": {"name": "w", "arguments": '{"c":1}'}},
        {"id": "call_2", "type": "function", "function": {"name": "v", "arguments": ""}},
    ]
    made = message(completion({"content": None, "tool_calls": calls}, "tool_calls"))
    assert made["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "w", "input": {"c": 1}},
        {"type": "tool_use", "id": "call_2", "name": "v", "input": {}},
    ]
    assert made["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    ("finish", "extra", "stops", "reason", "sequence"),
    [
        ("length", {}, [], "max_tokens", None),
        ("content_filter", {}, [], "refusal", None),
        ("stop", {"stop_reason": "END"}, ["END"], "stop_sequence", "END"),
        ("stop", {"stop_reason": "END"}, [], "end_turn", None),  # not one the client sent
        ("stop", {"stop_reason": 128001}, ["END"], "end_turn", None),  # a token id: no text
        ("stop", {}, ["END"], "end_turn", None),
    ],
)
def test_finish_reasons_become_stop_reasons(
    finish: str, extra: dict[str, Any], stops: list[str], reason: str, sequence: str | None
) -> None:
    made = message(completion({"content": "x"}, finish, **extra), stops)
    assert (made["stop_reason"], made["stop_sequence"]) == (reason, sequence)


def test_cached_prompt_tokens_are_reported_apart() -> None:
    body = msgspec.json.decode(completion({"content": "x"}))
    body["usage"]["prompt_tokens_details"] = {"cached_tokens": 4}
    assert message(msgspec.json.encode(body))["usage"] == {
        "input_tokens": 7,
        "output_tokens": 7,
        "cache_read_input_tokens": 4,
    }


@pytest.mark.parametrize(
    "body",
    [
        b"<html>",
        b'{"choices": []}',
        completion({"tool_calls": [{"id": "c", "function": {"name": "w", "arguments": "[1]"}}]}),
        completion({"tool_calls": [{"id": "c", "function": {"name": "w", "arguments": "{"}}]}),
    ],
)
def test_a_malformed_chat_reply_is_an_upstream_error(body: bytes) -> None:
    with pytest.raises(UpstreamError):
        message(body)


def test_a_native_message_gets_the_public_model_and_notes_usage() -> None:
    record = RequestRecord("r", time.perf_counter(), "messages")
    reply = msgspec.json.encode(
        {
            "id": "msg_x",
            "type": "message",
            "model": "claude-up",
            "content": [{"type": "thinking", "thinking": "t", "signature": "s"}],
            "stop_reason": "max_tokens",
            "usage": {
                "input_tokens": 10,
                "cache_read_input_tokens": 5,
                "cache_creation_input_tokens": 2,
                "output_tokens": 3,
            },
            "container": None,
        }
    )
    answer = msgspec.json.decode(native_answer(reply, "public", "claude", record))
    assert answer == {**msgspec.json.decode(reply), "model": "public"}
    assert (record.prompt_tokens, record.completion_tokens) == (17, 3)
    assert record.finish_reasons == ["max_tokens"] and record.upstream_model == "claude-up"
    with pytest.raises(UpstreamError):
        native_answer(b'{"type":"message"}', "public", "claude", record)


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (InvalidRequestError("bad", param="messages[0].role"), 400, "invalid_request_error"),
        (AuthenticationError("who"), 401, "authentication_error"),
        (RateLimitError("slow down", retry_after=3), 429, "rate_limit_error"),
        (UpstreamError("broke"), 502, "api_error"),
        (ServiceUnavailableError("busy"), 503, "overloaded_error"),
        (UpstreamTimeoutError("late"), 504, "api_error"),
    ],
)
def test_errors_use_anthropic_s_envelope(error: ProxyError, status: int, kind: str) -> None:
    body = msgspec.json.decode(MESSAGES.error_body(error))
    assert error.status == status
    assert body == {"type": "error", "error": {"type": kind, "message": body["error"]["message"]}}
    assert error.message in body["error"]["message"]
    if error.param:
        assert body["error"]["message"].startswith(f"{error.param}: ")
    assert MESSAGES.id_headers("req_1") == {"request-id": "req_1", "x-request-id": "req_1"}
