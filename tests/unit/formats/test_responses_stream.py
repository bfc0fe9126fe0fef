"""Response objects and stream events: chat completions and chunks made into the Responses
API's shapes, whole responses replayed, native events relabelled. Every event is validated
against the openai SDK's own types and fed to its stream accumulator (what
`responses.stream(...).get_final_response()` runs)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pydantic
import pytest
from openai import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent

from proxy.accounting import RequestRecord
from proxy.errors import UpstreamError
from proxy.formats.responses.encoder import StreamEncoder
from proxy.formats.responses.native import NativeEvents, native_answer
from proxy.formats.responses.replay import replay_events
from proxy.formats.responses.reply import finished, output_items, shell, usage_of
from proxy.formats.responses.wire import decode_head
from proxy.relay import OpenStreams, StreamContext

EVENTS = pydantic.TypeAdapter(ResponseStreamEvent)


def base(**fields: Any) -> dict[str, Any]:
    head = decode_head(msgspec.json.encode({"model": "public", "input": "x", **fields}))
    return shell(head, "resp_1", 1700000000, "public")


def parse(frames: list[bytes]) -> list[Any]:
    """Each frame: `event: <type>` naming the JSON's own type, validated by the SDK."""
    events = []
    for frame in frames:
        head, _, data = frame.decode().partition("\ndata: ")
        event = json.loads(data)
        assert head == f"event: {event['type']}" and frame.endswith(b"\n\n")
        events.append(EVENTS.validate_python(event))
    return events


def accumulate(frames: list[bytes]) -> Any:
    """What the SDK's stream helper makes of these events (its get_final_response)."""
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=omit, text_format=omit)
    events = parse(frames)
    assert [event.sequence_number for event in events] == list(range(len(events)))
    for event in events:
        state.handle_event(event)
    return state._completed_response


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> bytes:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return msgspec.json.encode({"id": "c", "model": "up", "choices": choices, **extra})


def record(prompt: int = 3, completion: int = 2) -> RequestRecord:
    done = RequestRecord("req", 0.0, "responses")
    done.prompt_tokens, done.completion_tokens = prompt, completion
    return done


def run(chunks: list[bytes], **fields: Any) -> tuple[list[bytes], dict[str, Any]]:
    encoder = StreamEncoder(base(**fields))
    frames = encoder.start() + encoder.add(chunks)
    done = record()
    whole = encoder.response(done)  # the settlement asks first, as a stream ends
    return frames + encoder.close(done), whole


def test_text_becomes_one_message_item() -> None:
    frames, whole = run(
        [chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}),
         chunk({"content": "lo"}), chunk({}, "stop"),
         chunk(usage={"prompt_tokens": 3, "completion_tokens": 2,
                      "prompt_tokens_details": {"cached_tokens": 1}})]
    )  # fmt: skip
    kinds = [event.type for event in parse(frames)]
    assert kinds == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", "response.output_text.delta",
        "response.output_text.delta", "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed",
    ]  # fmt: skip
    final = accumulate(frames)
    assert final.output_text == "Hello" and final.status == "completed"
    assert final.usage.input_tokens == 3 and final.usage.input_tokens_details.cached_tokens == 1
    Response.model_validate(whole)  # the whole response is a valid response object
    assert whole["output"][0]["content"][0]["text"] == "Hello"


def test_text_then_tool_calls() -> None:
    call = {
        "index": 0,
        "id": "call_a",
        "type": "function",
        "function": {"name": "f", "arguments": ""},
    }
    frames, whole = run(
        [chunk({"content": "Looking."}), chunk({"tool_calls": [call]}),
         chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}),
         chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
         chunk({"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "g"}}]}),
         chunk({}, "tool_calls")]
    )  # fmt: skip
    final = accumulate(frames)
    kinds = [item.type for item in final.output]
    assert kinds == ["message", "function_call", "function_call"]
    assert (final.output[1].call_id, final.output[1].arguments) == ("call_a", '{"a":1}')
    assert (final.output[2].call_id, final.output[2].name) == ("call_b", "g")
    events = parse(frames)
    first_call = next(i for i, e in enumerate(events) if e.type == "response.output_item.added"
                      and e.item.type == "function_call")  # fmt: skip
    assert events[first_call - 1].type == "response.output_item.done"  # the message ended first
    assert whole["output"][0]["status"] == "completed"


def test_an_answer_cut_on_length_is_incomplete() -> None:
    frames, whole = run([chunk({"content": "Long"}), chunk({}, "length")], max_output_tokens=1)
    events = parse(frames)
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"
    assert whole["status"] == "incomplete" and whole["output"][0]["status"] == "incomplete"
    assert whole["max_output_tokens"] == 1


def test_an_empty_answer_is_still_one_message() -> None:
    frames, whole = run([chunk({"role": "assistant"}), chunk({}, "stop")])
    final = accumulate(frames)
    assert final.output_text == "" and len(final.output) == 1
    assert whole["output"][0]["type"] == "message"


def test_a_refusal_is_its_own_part() -> None:
    frames, _ = run([chunk({"refusal": "No."}), chunk({}, "stop")])
    final = accumulate(frames)
    assert final.output[0].content[0].type == "refusal"
    assert final.output[0].content[0].refusal == "No."


def test_a_failure_is_response_failed_numbered_after_the_rest() -> None:
    encoder = StreamEncoder(base())
    frames = encoder.start() + encoder.add([chunk({"content": "Hi"})])
    frames += encoder.failed(UpstreamError("The upstream went away."))
    events = parse(frames)
    assert events[-1].type == "response.failed"
    assert events[-1].sequence_number == len(events) - 1
    assert events[-1].response.error.code == "server_error"
    assert events[-1].response.output[0].content[0].text == "Hi"


def test_a_chat_completion_as_output_items() -> None:
    message = {
        "content": "Sure.",
        "tool_calls": [{"id": "call_1", "function": {"name": "f", "arguments": "{}"}}],
    }
    items = output_items(message, "completed")
    assert [item["type"] for item in items] == ["message", "function_call"]
    assert items[1]["call_id"] == "call_1" and items[1]["id"].startswith("fc_")
    only_calls = output_items({"content": None, "tool_calls": message["tool_calls"]}, "completed")
    assert [item["type"] for item in only_calls] == ["function_call"]
    response = finished(base(), items, "tool_calls", usage_of(5, 7))
    assert response["status"] == "completed" and response["usage"]["total_tokens"] == 12
    Response.model_validate(response)


def test_the_shell_echoes_the_request_with_defaults() -> None:
    echoed = base(
        instructions="I",
        tools=[{"type": "function", "name": "f"}],
        temperature=0.1,
        store=False,
        previous_response_id="resp_0",
    )
    assert echoed["instructions"] == "I" and echoed["temperature"] == 0.1
    assert echoed["tools"] == [{"type": "function", "name": "f"}]
    assert echoed["store"] is False and echoed["previous_response_id"] == "resp_0"
    defaults = base()
    assert (defaults["top_p"], defaults["tool_choice"], defaults["parallel_tool_calls"]) == (
        1.0,
        "auto",
        True,
    )
    assert defaults["text"] == {"format": {"type": "text"}} and defaults["store"] is True


def test_a_whole_response_replays_as_its_stream() -> None:
    call = {"index": 0, "id": "c", "function": {"name": "f", "arguments": "{}"}}
    _, whole = run(
        [
            chunk({"content": "A fairly long answer, longer than one piece."}),
            chunk({"tool_calls": [call]}),
            chunk({}, "tool_calls"),
        ]
    )
    replayed = replay_events(whole)
    final = accumulate(replayed)
    assert final.id == whole["id"] and final.output_text == whole["output"][0]["content"][0]["text"]
    assert [item.id for item in final.output] == [item["id"] for item in whole["output"]]
    assert final.output[1].arguments == "{}" and final.usage.total_tokens == 5
    deltas = [e for e in parse(replayed) if e.type == "response.output_text.delta"]
    assert len(deltas) > 1


def native_context() -> StreamContext:
    from proxy.observability.metrics import Metrics

    return StreamContext(
        public_model="public",
        upstream="openai",
        max_seconds=60,
        record=RequestRecord("req", 0.0, "responses"),
        metrics=Metrics(False),
        open_streams=OpenStreams(),
        on_end=lambda _: None,
    )


def native_response(**fields: Any) -> dict[str, Any]:
    response = {**base(), "id": "resp_u", "status": "completed", "model": "gpt-up"}
    return {**response, "usage": usage_of(1, 2), **fields}


def test_a_native_answer_gets_the_public_model() -> None:
    done = RequestRecord("req", 0.0, "responses")
    body = native_answer(
        msgspec.json.encode(native_response(usage=usage_of(4, 6))), "public", "up", done
    )
    assert msgspec.json.decode(body)["model"] == "public"
    assert (done.prompt_tokens, done.completion_tokens, done.upstream_model) == (4, 6, "gpt-up")
    with pytest.raises(UpstreamError):
        native_answer(b'{"choices": []}', "public", "up", done)


def test_native_events_are_framed_and_relabelled() -> None:
    context = native_context()
    events = NativeEvents(context)
    created = {"type": "response.created", "sequence_number": 0,
               "response": native_response(status="in_progress")}  # fmt: skip
    delta = {"type": "response.output_text.delta", "sequence_number": 1, "delta": "abc",
             "item_id": "m", "output_index": 0, "content_index": 0}  # fmt: skip
    frames, failure = events.batch([msgspec.json.encode(created), msgspec.json.encode(delta)])
    assert failure is None and not events.complete
    assert frames[0].startswith(b"event: response.created\ndata: ")
    assert json.loads(frames[0].partition(b"data: ")[2])["response"]["model"] == "public"
    assert context.record.relayed_bytes == 3
    done = {"type": "response.completed", "sequence_number": 2, "response": native_response()}
    events.batch([msgspec.json.encode(done)])
    assert events.complete and events.final is not None and events.final["model"] == "public"
    assert context.record.completion_tokens == 2
    error = {"type": "error", "sequence_number": 3, "message": "boom"}
    frames, failure = events.batch([msgspec.json.encode(error)])
    assert frames == [] and isinstance(failure, UpstreamError)
    failed = parse(events.failed(failure))[0]
    assert failed.type == "response.failed" and failed.sequence_number == 3


def _relay_rewriter() -> Any:
    from proxy.formats.responses.encoder import ChatChunksAsEvents

    return ChatChunksAsEvents(StreamEncoder(base()), record(), "up")


def test_a_read_of_several_chunks_makes_the_events_each_would_alone() -> None:
    chunks = [chunk({"content": "Hel"}), chunk({"content": "lo"}), chunk({}, "stop")]
    together, alone = _relay_rewriter(), _relay_rewriter()
    frames, failure = together.batch(chunks)
    assert failure is None and together.complete
    one_by_one = [frame for piece in chunks for frame in alone.batch([piece])[0]]
    assert len(frames) > 3
    assert _without_ids(frames) == _without_ids(one_by_one)


def _without_ids(frames: list[bytes]) -> list[Any]:
    events = [json.loads(frame.split(b"\ndata: ", 1)[1]) for frame in frames]
    for event in events:
        event.pop("item_id", None)
        event.get("item", {}).pop("id", None)
    return events


def test_an_event_holding_two_json_values_fails_the_stream_even_in_a_batch() -> None:
    good = chunk({"content": "Hel"})
    frames, failure = _relay_rewriter().batch([good, good + b"," + good])
    assert frames and isinstance(failure, UpstreamError) and "not JSON" in failure.message
