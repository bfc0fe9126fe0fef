"""Streams of the Messages door on JSON: chat chunks encoded as Anthropic's events, native
events relayed (relabelled, usage noted, complete at message_stop), a native stream folded
into its message and a message replayed as events, and failures after the start sent as an
`error` event."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from proxy.accounting import RequestRecord
from proxy.errors import ProxyError, UpstreamError
from proxy.formats.messages.door import MESSAGES
from proxy.formats.messages.encoder import StreamEncoder
from proxy.formats.messages.events import payload_of
from proxy.formats.messages.native import NativeRewriter
from proxy.formats.messages.replay import assemble_native, replay
from proxy.formats.messages.request import _encoded, _failures_in_band
from proxy.observability.metrics import Metrics
from proxy.relay import OpenStreams, StreamContext


def chunk(
    delta: dict[str, Any] | None = None,
    finish: str | None = None,
    stopped_by: str | None = None,
    **extra: Any,
) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish, "stop_reason": stopped_by}
    choices = [] if delta is None else [choice]
    return msgspec.json.encode({"id": "c", "model": "public", "choices": choices, **extra})


def events(frames: list[bytes]) -> list[dict[str, Any]]:
    out = []
    for framed in frames:
        name, data = framed.decode().split("\n", 1)
        event = json.loads(data.removeprefix("data: "))
        assert name == f"event: {event['type']}" and framed.endswith(b"\n\n")
        out.append(event)
    return out


def encoder(stops: list[str] | None = None) -> StreamEncoder:
    return StreamEncoder("msg_1", "public", 12, stops or [], "up")


def test_text_then_tool_calls_in_anthropic_s_order() -> None:
    coder = encoder()
    frames = coder.feed([chunk({"role": "assistant", "content": ""}), chunk({"content": "Hi"})])
    frames += coder.feed(
        [
            chunk({"content": " there"}),
            chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "w"}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"c":'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
            chunk({}, "tool_calls"),
            chunk(None, usage={"prompt_tokens": 20, "completion_tokens": 9}),
        ]
    )
    frames += coder.end()
    sent = events(frames)
    assert sent[0] == {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "model": "public",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 0},
            "type": "message",
            "role": "assistant",
        },
    }
    assert sent[1:] == [
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": " there"},
        },
        {"type": "content_block_stop", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "call_1", "name": "w", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"c":'},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": "1}"},
        },
        {"type": "content_block_stop", "index": 1},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"input_tokens": 20, "output_tokens": 9},
        },
        {"type": "message_stop"},
    ]


def test_an_answer_without_text_still_has_a_block_and_knows_its_stop_sequence() -> None:
    coder = encoder(["STOP"])
    frames = coder.feed([chunk({"content": ""}, "stop", stopped_by="STOP")])
    sent = events(frames + coder.end())
    assert [e["type"] for e in sent] == [
        "message_start",
        "content_block_start",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert sent[3]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "STOP"}


def context(record: RequestRecord) -> StreamContext:
    return StreamContext(
        public_model="public",
        upstream="claude",
        max_seconds=60,
        record=record,
        metrics=Metrics(False),
        open_streams=OpenStreams(),
        on_end=lambda _: None,
    )


def start(index: int, **block: Any) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def delta(index: int, **fields: Any) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": fields}


def stop(index: int) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


def native_events(text: str = "Hello world") -> list[bytes]:
    raw: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_up",
                "type": "message",
                "role": "assistant",
                "model": "claude-up",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 10, "cache_read_input_tokens": 2, "output_tokens": 1},
            },
        },
        start(0, type="thinking", thinking="", signature=""),
        {"type": "ping"},
        delta(0, type="thinking_delta", thinking="Hmm."),
        delta(0, type="signature_delta", signature="sig"),
        stop(0),
        start(1, type="text", text=""),
        *(delta(1, type="text_delta", text=part) for part in text.split("|")),
        stop(1),
        start(2, type="tool_use", id="toolu_1", name="w", input={}),
        delta(2, type="input_json_delta", partial_json='{"a"'),
        delta(2, type="input_json_delta", partial_json=": [1]}"),
        stop(2),
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 30},
        },
        {"type": "message_stop"},
    ]
    return [msgspec.json.encode(event) for event in raw]


def test_native_events_are_framed_relabelled_and_counted() -> None:
    record = RequestRecord("r", time.perf_counter(), "messages")
    rewriter = NativeRewriter(context(record))
    frames, failure = rewriter.batch(native_events("Hello| world"))
    assert failure is None and rewriter.complete
    sent = events(frames)
    assert sent[0]["message"]["model"] == "public"
    assert [e["type"] for e in sent] == [json.loads(e)["type"] for e in native_events("a|b")]
    assert (record.prompt_tokens, record.completion_tokens) == (12, 30)
    assert record.upstream_model == "claude-up" and record.finish_reasons == ["tool_use"]
    assert record.relayed_bytes == len("Hello world") + len('{"a": [1]}')


def test_an_error_event_stops_the_batch_after_what_came_before() -> None:
    rewriter = NativeRewriter(context(RequestRecord("r", time.perf_counter(), "messages")))
    error = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    frames, failure = rewriter.batch([*native_events()[:3], error, native_events()[3]])
    assert len(frames) == 3 and isinstance(failure, UpstreamError)
    assert not rewriter.complete


def test_a_native_stream_folds_into_its_message_and_replays_as_the_same() -> None:
    record = RequestRecord("r", time.perf_counter(), "messages")
    frames, _ = NativeRewriter(context(record)).batch(native_events("Hello| world"))
    whole = assemble_native(frames)
    assert whole is not None
    message = msgspec.json.decode(whole)
    assert message["model"] == "public" and message["stop_reason"] == "tool_use"
    assert message["content"] == [
        {"type": "thinking", "thinking": "Hmm.", "signature": "sig"},
        {"type": "text", "text": "Hello world"},
        {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"a": [1]}},
    ]
    assert message["usage"] == {
        "input_tokens": 10,
        "cache_read_input_tokens": 2,
        "output_tokens": 30,
    }
    replayed = replay(whole)
    assert msgspec.json.decode(assemble_native(replayed) or b"null") == message
    assert events(replayed)[-1] == {"type": "message_stop"}


def test_an_unfinished_or_unknown_stream_is_not_kept() -> None:
    record = RequestRecord("r", time.perf_counter(), "messages")
    frames, _ = NativeRewriter(context(record)).batch(native_events()[:-1])
    assert assemble_native(frames) is None
    odd = msgspec.json.encode(
        {"type": "content_block_delta", "index": 1, "delta": {"type": "future_delta"}}
    )
    frames, _ = NativeRewriter(context(record)).batch(
        [*native_events()[:7], odd, *native_events()[7:]]
    )
    assert assemble_native(frames) is None


async def _batches(
    items: list[list[bytes]], failure: ProxyError | None
) -> AsyncIterator[list[bytes]]:
    for item in items:
        yield item
    if failure is not None:
        raise failure


async def test_a_failure_after_the_start_is_an_error_event() -> None:
    coder = encoder()
    relayed = _encoded(_batches([[chunk({"content": "Hi"})]], UpstreamError("gone")), coder)
    sent = events([frame async for batch in relayed for frame in batch])
    assert [e["type"] for e in sent][-1] == "error"
    assert sent[-1]["error"] == {"type": "api_error", "message": "gone"}
    native = _failures_in_band(_batches([[b"x"]], UpstreamError("gone")))
    assert [batch async for batch in native][-1] == [
        b'event: error\ndata: {"type":"error","error":{"type":"api_error","message":"gone"}}\n\n'
    ]


async def test_the_client_leaving_closes_the_relay_and_is_not_an_error() -> None:
    closed = asyncio.Event()

    async def endless() -> AsyncIterator[list[bytes]]:
        try:
            while True:
                yield [chunk({"content": "x"})]
                await asyncio.sleep(0)
        finally:
            closed.set()

    relayed = _encoded(endless(), encoder())
    await anext(relayed)
    await relayed.aclose()
    assert closed.is_set()


async def test_the_door_frames_batches_and_sends_a_bug_in_band() -> None:
    async def failing() -> AsyncIterator[list[bytes]]:
        yield [b"a", b"b"]
        raise RuntimeError("bug")

    out = [part async for part in MESSAGES.frames(failing())]
    assert out[0] == b"ab"
    assert json.loads(payload_of(out[1]))["error"]["type"] == "api_error"
    assert MESSAGES.whole_frames([b"a", b"b"]) == b"ab"


@pytest.mark.parametrize("stream", [False, True])
def test_a_whole_message_replays_as_a_proper_stream(stream: bool) -> None:
    answer = msgspec.json.encode(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "public",
            "content": [
                {"type": "text", "text": "Hi"},
                {"type": "tool_use", "id": "t", "name": "w", "input": {"a": 1}},
                {"type": "redacted_thinking", "data": "xyz"},
            ],
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": {"input_tokens": 3, "output_tokens": 4},
        }
    )
    sent = events(replay(answer))
    assert sent[0]["message"]["content"] == [] and sent[0]["message"]["stop_reason"] is None
    starts = [e["content_block"] for e in sent if e["type"] == "content_block_start"]
    assert starts == [
        {"type": "text", "text": ""},
        {"type": "tool_use", "id": "t", "name": "w", "input": {}},
        {"type": "redacted_thinking", "data": "xyz"},
    ]
    assert sent[-2]["usage"] == {"input_tokens": 3, "output_tokens": 4}
    assert msgspec.json.decode(assemble_native(replay(answer)) or b"null") == msgspec.json.decode(
        answer
    )
