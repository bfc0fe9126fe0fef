"""Anthropic Messages replies, stream events and errors made into what OpenAI clients read
(proxy/upstreams/anthropic_reply, anthropic_errors), on JSON shaped as api.anthropic.com sends
it (the event sequences come from the fake upstream, tests/fakes/anthropic_upstream.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fakes import anthropic_upstream as fake
from multidict import CIMultiDict
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from proxy.errors import (
    ProxyError,
    RateLimitError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamRejectedError,
)
from proxy.upstreams.anthropic_errors import anthropic_error, stream_error
from proxy.upstreams.anthropic_reply import ChatStream, chat_completion
from proxy.upstreams.anthropic_wire import ErrorDetail

USER = [{"role": "user", "content": [{"type": "text", "text": "Say hi"}]}]
TOOLS = [{"name": "get_weather", "input_schema": {"type": "object"}}]


def answer(
    behaviour: fake.Behaviour | None = None, reply: str = "Hello there friend", **body: Any
) -> fake.Answer:
    request = {"model": "claude-sonnet-4-5-20250929", "max_tokens": 100, "messages": USER, **body}
    return fake.make_answer(request, reply, 7, behaviour or fake.ok())


def encoded(data: Any) -> bytes:
    return json.dumps(data).encode()


def completion(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(chat_completion(encoded(data), "claude"))
    ChatCompletion.model_validate(out)  # what the SDK will parse
    return out


def payloads(a: fake.Answer) -> list[bytes]:
    return [encoded(data) for _, data in fake.stream_events(a)]


def run_stream(events: list[bytes], include_usage: bool = True) -> list[dict[str, Any]]:
    """Every chunk, fed one event per read (the hardest split), then the end."""
    stream = ChatStream("claude", include_usage)
    out: list[bytes] = []
    for event in events:
        out += stream.feed([event])
        if stream.failure is not None:
            raise stream.failure
        if stream.done:
            break
    out += stream.end()
    return [json.loads(chunk) for chunk in out]


def accumulated(chunks: list[dict[str, Any]]) -> Any:
    state: ChatCompletionStreamState = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    return state.get_final_completion()


# ---- JSON replies --------------------------------------------------------------------------------


def test_a_text_reply_becomes_a_chat_completion() -> None:
    out = completion(answer().message())
    assert out["id"] == "chatcmpl-fake000007"
    assert out["object"] == "chat.completion"
    assert out["model"] == "claude-sonnet-4-5-20250929"  # as Anthropic answered; relabelled later
    assert out["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there friend", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert out["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}


def test_tool_use_blocks_become_tool_calls_with_compact_json_arguments() -> None:
    message = completion(answer(tools=TOOLS).message())["choices"][0]
    assert message["finish_reason"] == "tool_calls"
    assert message["message"]["content"] == fake.TOOL_PREAMBLE
    assert message["message"]["tool_calls"] == [
        {
            "id": "toolu_fake0007",
            "type": "function",
            "function": {
                "name": "get_weather",
                "arguments": '{"city":"Paris","unit":"celsius","days":3}',
            },
        }
    ]


def test_a_reply_of_tool_calls_only_has_null_content() -> None:
    data = answer(tools=TOOLS).message()
    data["content"] = [b for b in data["content"] if b["type"] == "tool_use"]
    assert completion(data)["choices"][0]["message"]["content"] is None


def test_thinking_blocks_are_left_out_of_the_content() -> None:
    out = completion(answer(fake.ok(thinking=True)).message())
    assert out["choices"][0]["message"]["content"] == "Hello there friend"
    assert fake.THINKING not in json.dumps(out)


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        (None, "stop"),
    ],
)
def test_stop_reasons_become_finish_reasons(stop_reason: str | None, finish: str) -> None:
    data = {**answer().message(), "stop_reason": stop_reason}
    assert completion(data)["choices"][0]["finish_reason"] == finish
    chunks = run_stream(payloads(answer(fake.ok(stop_reason=stop_reason))))
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == finish


def test_cached_input_counts_as_prompt_tokens() -> None:
    out = completion(answer(fake.ok(cache_read=10, cache_creation=5)).message())
    assert out["usage"] == {
        "prompt_tokens": 17,
        "completion_tokens": 3,
        "total_tokens": 20,
        "prompt_tokens_details": {"cached_tokens": 10},
    }


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"content": "text"}'])
def test_a_reply_that_is_not_a_message_is_an_upstream_error(body: bytes) -> None:
    with pytest.raises(UpstreamError, match="not a Messages API reply"):
        chat_completion(body, "claude")


# ---- streams -------------------------------------------------------------------------------------


def test_a_text_stream_becomes_clean_chunks_and_a_usage_chunk() -> None:
    chunks = run_stream(payloads(answer()))
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"] == "chatcmpl-fake000007"
    assert len({c["created"] for c in chunks}) == 1
    assert {c["model"] for c in chunks} == {"claude-sonnet-4-5-20250929"}
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": "Hello"}  # the role with the content
    assert all("role" not in d for d in deltas[1:])
    assert "".join(d.get("content") or "" for d in deltas) == "Hello there friend"
    assert chunks[-2]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    final = accumulated(chunks)
    assert final.choices[0].message.content == "Hello there friend"


def test_without_include_usage_no_usage_chunk_is_sent() -> None:
    chunks = run_stream(payloads(answer()), include_usage=False)
    assert all(c["choices"] for c in chunks)


def test_usage_takes_message_delta_counts_over_message_start() -> None:
    events = payloads(answer(fake.ok(cache_read=4)))
    delta = json.loads(events[-2])
    delta["usage"] = {"output_tokens": 9, "input_tokens": 3}
    events[-2] = encoded(delta)
    usage = run_stream(events)[-1]["usage"]
    assert usage == {
        "prompt_tokens": 7,
        "completion_tokens": 9,
        "total_tokens": 16,
        "prompt_tokens_details": {"cached_tokens": 4},
    }


def test_tool_use_streams_as_tool_call_deltas_numbered_among_tool_calls() -> None:
    a = answer(tools=TOOLS)
    chunks = run_stream(payloads(a))
    calls = [
        d for c in chunks if c["choices"] for d in c["choices"][0]["delta"].get("tool_calls", [])
    ]
    assert calls[0] == {
        "index": 0,  # the tool_use is content block 1: tool calls count on their own
        "id": "toolu_fake0007",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert all(set(c) == {"index", "function"} for c in calls[1:])  # id and name once
    final = accumulated(chunks)
    (call,) = final.choices[0].message.tool_calls
    assert json.loads(call.function.arguments) == fake.TOOL_INPUT
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.choices[0].message.content == fake.TOOL_PREAMBLE


def test_two_tool_calls_and_one_without_input() -> None:
    a = answer(tools=TOOLS)
    a.blocks.append({"type": "tool_use", "id": "toolu_b", "name": "now", "input": {}})
    events = payloads(a)
    no_input = [
        e for e in events if b'"index":2' in e.replace(b" ", b"") and b"input_json_delta" in e
    ]
    events = [e for e in events if e not in no_input[1:]]  # only the empty partial_json left
    final = accumulated(run_stream(events))
    first, second = final.choices[0].message.tool_calls
    assert (first.id, second.id) == ("toolu_fake0007", "toolu_b")
    assert json.loads(second.function.arguments) == {}


def test_thinking_deltas_are_ignored() -> None:
    chunks = run_stream(payloads(answer(fake.ok(thinking=True))))
    assert fake.THINKING not in json.dumps(chunks)
    assert accumulated(chunks).choices[0].message.content == "Hello there friend"


def test_an_empty_answer_still_sends_the_role_and_a_finish() -> None:
    a = answer(reply="")
    a.blocks = []
    chunks = run_stream(payloads(a))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[1]["choices"][0]["finish_reason"] == "stop"


def test_nothing_is_sent_before_the_first_content() -> None:
    """So a failure right after message_start can still fail over to another route."""
    events = payloads(answer())
    stream = ChatStream("claude", True)
    assert stream.feed(events[:3]) == []  # message_start, content_block_start, ping
    assert stream.feed(events[3:4])


def test_an_error_event_fails_after_the_chunks_before_it() -> None:
    events = payloads(answer())[:5]
    events.append(encoded(fake.error_envelope("overloaded_error", "Overloaded")))
    stream = ChatStream("claude", True)
    chunks = stream.feed(events)
    assert [json.loads(c)["choices"][0]["delta"].get("content") for c in chunks] == [
        "Hello",
        " there",
    ]
    assert isinstance(stream.failure, UpstreamError)
    assert stream.failure.cause == "503"  # 529: transient, retried like a 503


def test_a_stream_that_ends_before_its_finish_is_an_error() -> None:
    stream = ChatStream("claude", True)
    stream.feed(payloads(answer())[:5])
    with pytest.raises(UpstreamError, match="ended the stream early"):
        stream.end()


def test_a_stream_without_message_stop_still_ends_with_its_usage() -> None:
    events = payloads(answer())[:-1]
    assert run_stream(events)[-1]["usage"]["completion_tokens"] == 3


def test_an_event_that_is_not_json_is_an_upstream_error() -> None:
    stream = ChatStream("claude", True)
    stream.feed([b"{not json"])
    assert isinstance(stream.failure, UpstreamError)


# ---- errors --------------------------------------------------------------------------------------


def error(status: int, message: str = "bad", kind: str = "x", **headers: str) -> ProxyError:
    body = encoded(fake.error_envelope(kind, message))
    return anthropic_error("claude", status, body, CIMultiDict(headers))


@pytest.mark.parametrize("status", [400, 413, 422])
def test_client_errors_carry_anthropic_s_message(status: int) -> None:
    found = error(status, "max_tokens: 300000 > 64000, the maximum for this model")
    assert type(found) is UpstreamRejectedError
    assert found.message == "max_tokens: 300000 > 64000, the maximum for this model"


def test_a_prompt_too_long_goes_to_the_fallbacks() -> None:
    found = error(400, fake.PROMPT_TOO_LONG)
    assert isinstance(found, UpstreamRejectedError)
    assert (found.code, found.param) == ("context_length_exceeded", "messages")


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_never_show_the_upstream_text(status: int) -> None:
    found = error(status, "invalid x-api-key: sk-ant-SECRET")
    assert isinstance(found, UpstreamAuthError)
    assert "SECRET" not in found.message


def test_429_is_a_rate_limit_with_its_retry_after() -> None:
    found = error(429, **{"retry-after": "12"})
    assert isinstance(found, RateLimitError) and found.retry_after == 12


def test_529_is_transient_like_a_503_and_says_529() -> None:
    found = error(529, "Overloaded", "overloaded_error")
    assert type(found) is UpstreamError
    assert found.cause == "503" and "529" in found.message and found.retry_after is None


def test_404_fails_over_and_5xx_are_transient() -> None:
    assert error(404).code == "upstream_model_not_found"
    assert error(500).cause == "500"
    assert error(502, **{"retry-after": "3"}).retry_after == 3


def test_an_error_body_that_is_not_the_envelope_is_shown_as_text() -> None:
    found = anthropic_error("claude", 400, b"bad gateway config", {})
    assert found.message == "bad gateway config"


@pytest.mark.parametrize(
    ("kind", "expected", "cause"),
    [
        ("overloaded_error", UpstreamError, "503"),
        ("api_error", UpstreamError, "500"),
        ("rate_limit_error", RateLimitError, "429"),
        ("invalid_request_error", UpstreamRejectedError, None),
        ("authentication_error", UpstreamAuthError, None),
        ("something_new", UpstreamError, "500"),
    ],
)
def test_error_events_map_like_the_statuses_they_stand_for(
    kind: str, expected: type[ProxyError], cause: str | None
) -> None:
    found = stream_error("claude", ErrorDetail(kind, "details"))
    assert type(found) is expected and found.cause == cause
