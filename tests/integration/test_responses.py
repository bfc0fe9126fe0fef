"""POST /v1/responses through the real proxy and the official openai SDK, on a route whose
upstream speaks chat completions only (the fake OpenAI's /v1/chat/completions): the request
translated, the answer and its stream in the Responses API's shape, stored responses read
back, deleted and continued with previous_response_id, and bad input refused by field."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from fakes.openai_upstream import (
    DEFAULT_REPLY,
    TOOL_ARGUMENTS,
    FakeOpenAI,
    drop_after,
    error_event_after,
)
from fakes.proxy_harness import (
    CLIENT_KEY_A,
    CLIENT_KEY_B,
    UPSTREAM_KEY,
    ProxyLauncher,
    RunningProxy,
    sha256_hex,
)

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def responses_policy(base_url: str) -> dict[str, Any]:
    upstream = {"type": "openai", "base_url": base_url, "api_key": UPSTREAM_KEY}
    return {
        "server": {"max_body_bytes": 64 * 1024},
        "upstreams": {"fake": upstream},
        "models": {
            "gpt-4o-mini": {"routes": [{"upstream": "fake", "model": "upstream-model-id"}]},
            "cached": {
                "routes": [{"upstream": "fake", "model": "upstream-cached"}],
                "cache": {"ttl": 60},
            },
        },
        "keys": [
            {"name": "team-a", "key": CLIENT_KEY_A},
            {"name": "team-b", "sha256": sha256_hex(CLIENT_KEY_B)},
        ],
        "retry": {"attempts": 1},
        "cache": {"backend": "memory"},
        "responses": {"storage": "memory"},
    }


@pytest.fixture(scope="module")
def proxy(proxy_launcher: ProxyLauncher, fake_openai_server: FakeOpenAI) -> RunningProxy:
    return proxy_launcher.start(responses_policy(fake_openai_server.base_url))


@pytest.fixture
def client(proxy: RunningProxy) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=proxy.base_url, api_key=CLIENT_KEY_B, max_retries=0) as c:
        yield c


@pytest.fixture
def other(proxy: RunningProxy) -> Iterator[openai.OpenAI]:
    """Another key's client: another caller's stored responses do not exist for it."""
    with openai.OpenAI(base_url=proxy.base_url, api_key=CLIENT_KEY_A, max_retries=0) as c:
        yield c


def chat_body(fake: FakeOpenAI) -> dict[str, Any]:
    body = fake.last_request.json
    assert isinstance(body, dict)
    return body


def test_text_in_and_out(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    response = client.responses.create(
        model="gpt-4o-mini",
        input="Say hello",
        instructions="Be brief.",
        max_output_tokens=50,
        temperature=0.5,
        top_p=0.9,
        user="u-1",
        metadata={"run": "7"},
        reasoning={"effort": "low"},
        text={"format": {"type": "json_object"}},
    )
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed" and response.model == "gpt-4o-mini"
    assert response.output_text == DEFAULT_REPLY
    message = response.output[0]
    assert message.type == "message" and message.id.startswith("msg_")
    assert message.role == "assistant" and message.content[0].type == "output_text"
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (4, 6)  # words
    assert response.usage.total_tokens == 10
    assert response.instructions == "Be brief." and response.temperature == 0.5
    assert response.max_output_tokens == 50 and response.metadata == {"run": "7"}
    sent = chat_body(fake_openai)
    assert sent["model"] == "upstream-model-id"
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello"},
    ]
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"]) == (50, 0.5, 0.9)
    assert (sent["user"], sent["metadata"]) == ("u-1", {"run": "7"})
    assert sent["reasoning_effort"] == "low"
    assert sent["response_format"] == {"type": "json_object"}
    assert "input" not in sent and "instructions" not in sent and "stream" not in sent


def test_items_images_and_json_schema(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    client.responses.create(
        model="gpt-4o-mini",
        input=[
            {"role": "developer", "content": "Rules."},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {"type": "input_image", "image_url": "https://x.test/a.png", "detail": "low"},
                ],
            },
            {"role": "assistant", "content": [{"type": "output_text", "text": "A cat."}]},
            {"role": "user", "content": "Sure?"},
        ],
        text={"format": {"type": "json_schema", "name": "a", "schema": schema, "strict": True}},
    )
    sent = chat_body(fake_openai)
    assert sent["messages"] == [
        {"role": "system", "content": "Rules."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {
                    "type": "image_url",
                    "image_url": {"url": "https://x.test/a.png", "detail": "low"},
                },
            ],
        },
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": "Sure?"},
    ]
    json_schema = {"name": "a", "schema": schema, "strict": True}
    assert sent["response_format"] == {"type": "json_schema", "json_schema": json_schema}


def test_stream_events_in_order(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    with client.responses.stream(model="gpt-4o-mini", input="echo: one two three") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[4:7] == ["response.output_text.delta"] * 3
    assert kinds[7:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == (
        "one two three"
    )
    assert final.output_text == "one two three" and final.status == "completed"
    assert final.id == events[0].response.id and final.model == "gpt-4o-mini"
    assert final.usage is not None and final.usage.output_tokens == 3
    assert chat_body(fake_openai)["stream_options"] == {"include_usage": True}


def test_function_tools_both_ways(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    response = client.responses.create(
        model="gpt-4o-mini",
        input="Weather in Paris?",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
    )
    call = response.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.id is not None and call.id.startswith("fc_")
    assert call.call_id.startswith("call_fake") and json.loads(call.arguments) == TOOL_ARGUMENTS
    sent = chat_body(fake_openai)
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": WEATHER["parameters"],
            },
        }
    ]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["parallel_tool_calls"] is False


def test_streamed_tool_call(client: openai.OpenAI) -> None:
    with client.responses.stream(model="gpt-4o-mini", input="Weather?", tools=[WEATHER]) as s:
        events = list(s)
        final = s.get_final_response()
    kinds = [event.type for event in events]
    assert "response.function_call_arguments.delta" in kinds
    assert kinds[-3:] == [
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert json.loads(done.arguments) == TOOL_ARGUMENTS
    assert final.output[0].type == "function_call"
    assert json.loads(final.output[0].arguments) == TOOL_ARGUMENTS


def test_a_tool_using_conversation_by_previous_response_id(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    first = client.responses.create(
        model="gpt-4o-mini", input="Weather in Paris?", instructions="Be brief.", tools=[WEATHER]
    )
    call = first.output[0]
    assert call.type == "function_call"
    second = client.responses.create(
        model="gpt-4o-mini",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "22C, sunny"}],
    )
    assert second.output_text == DEFAULT_REPLY and second.previous_response_id == first.id
    messages = chat_body(fake_openai)["messages"]
    assert messages == [
        {"role": "user", "content": "Weather in Paris?"},  # instructions are not carried over
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.call_id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": call.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.call_id, "content": "22C, sunny"},
    ]
    third = client.responses.create(
        model="gpt-4o-mini", previous_response_id=second.id, input="Thanks!", stream=True
    )
    assert [e.type for e in third][-1] == "response.completed"
    messages = chat_body(fake_openai)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant", "user"]
    assert messages[3] == {"role": "assistant", "content": DEFAULT_REPLY}


def test_retrieve_list_input_items_and_delete(client: openai.OpenAI) -> None:
    made = client.responses.create(
        model="gpt-4o-mini",
        input=[
            {"role": "user", "content": "first"},
            {"role": "user", "content": [{"type": "input_text", "text": "second"}]},
        ],
    )
    again = client.responses.retrieve(made.id)
    assert again.id == made.id and again.output_text == made.output_text
    assert again.usage == made.usage
    items = client.responses.input_items.list(made.id)
    texts = [item.content[0].text for item in items.data]  # type: ignore[union-attr]
    assert texts == ["second", "first"]  # newest first by default
    assert all(item.id for item in items.data)
    ascending = client.responses.input_items.list(made.id, order="asc", limit=1)
    assert [i.content[0].text for i in ascending.data] == ["first"]  # type: ignore[union-attr]
    assert ascending.has_more is True
    deleted = client.responses.delete(made.id)
    assert deleted is None  # the SDK answers None for a 200
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(made.id)


def test_store_false_keeps_nothing(client: openai.OpenAI) -> None:
    made = client.responses.create(model="gpt-4o-mini", input="Hi", store=False)
    assert made.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(made.id)


def test_another_key_sees_nothing(client: openai.OpenAI, other: openai.OpenAI) -> None:
    made = client.responses.create(model="gpt-4o-mini", input="Hi")
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.input_items.list(made.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(made.id)
    with pytest.raises(openai.BadRequestError) as caught:
        other.responses.create(model="gpt-4o-mini", input="Go on", previous_response_id=made.id)
    assert caught.value.body["param"] == "previous_response_id"  # type: ignore[index]
    assert client.responses.retrieve(made.id).id == made.id  # still there for its owner


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "gpt-4o-mini"}, "input"),
        ({"model": "gpt-4o-mini", "input": [{"type": "telepathy"}]}, "input[0].type"),
        ({"model": "gpt-4o-mini", "input": [{"role": "wizard", "content": "x"}]}, "input[0].role"),
        ({"model": "gpt-4o-mini", "input": [{"type": "function_call_output", "output": "x"}]},
         "input[0].call_id"),
        ({"model": "gpt-4o-mini",
          "input": [{"type": "function_call_output", "call_id": "call_nope", "output": "x"}]},
         "input[0].call_id"),
        ({"model": "gpt-4o-mini", "input": "x", "previous_response_id": "resp_unknown"},
         "previous_response_id"),
        ({"model": "gpt-4o-mini", "input": "x", "tools": [WEATHER, {"type": "web_search"}]},
         "tools[1].type"),
        ({"model": "gpt-4o-mini", "input": "x", "tools": [WEATHER],
          "tool_choice": {"type": "file_search"}},
         "tool_choice"),
        ({"model": "gpt-4o-mini", "input": "x", "temperature": "hot"}, "temperature"),
    ],
)  # fmt: skip
def test_bad_input_is_a_400_naming_the_field(
    proxy: RunningProxy, fake_openai: FakeOpenAI, body: dict[str, Any], param: str
) -> None:
    answer = httpx.post(
        f"{proxy.base_url}/responses",
        json=body,
        headers={"Authorization": f"Bearer {CLIENT_KEY_B}"},
        timeout=10,
    )
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert error["message"]
    assert answer.headers["x-request-id"]
    assert fake_openai.requests == []  # refused before any upstream call


def test_an_oversized_body_is_a_413(proxy: RunningProxy) -> None:
    answer = httpx.post(
        f"{proxy.base_url}/responses",
        json={"model": "gpt-4o-mini", "input": "x" * 70_000},
        headers={"Authorization": f"Bearer {CLIENT_KEY_B}"},
        timeout=10,
    )
    assert answer.status_code == 413 and answer.json()["error"]["message"]


def test_a_failure_after_the_first_event_is_response_failed(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(drop_after(3))
    events = list(client.responses.create(model="gpt-4o-mini", input="Hi", stream=True))
    assert events[0].type == "response.created"
    assert events[-1].type == "response.failed"
    failed = events[-1].response
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.code == "server_error" and failed.error.message
    assert [e.sequence_number for e in events] == list(range(len(events)))
    fake_openai.script(error_event_after(2))
    events = list(client.responses.create(model="gpt-4o-mini", input="Hi", stream=True))
    assert events[-1].type == "response.failed"


def test_a_cache_hit_is_a_new_response(
    proxy: RunningProxy, client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    ask = {"model": "cached", "input": "What is 2+2?", "temperature": 0}
    first = client.responses.with_raw_response.create(**ask)  # type: ignore[arg-type]
    second = client.responses.with_raw_response.create(**ask)  # type: ignore[arg-type]
    assert first.headers["x-llm-proxy-cache"] == "miss"
    assert second.headers["x-llm-proxy-cache"] == "hit"
    one, two = first.parse(), second.parse()
    assert one.output_text == two.output_text
    assert one.id != two.id and one.output[0].id != two.output[0].id
    assert len(fake_openai.chat_requests) == 1
    assert client.responses.retrieve(two.id).id == two.id  # a hit is stored as itself
    with client.responses.stream(**ask) as stream:  # type: ignore[arg-type]
        kinds = [event.type for event in stream]
        replayed = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert replayed.output_text == one.output_text and replayed.id not in (one.id, two.id)
    assert len(fake_openai.chat_requests) == 1
    continued = client.responses.create(
        model="cached", input="And 3+3?", temperature=0, previous_response_id=two.id
    )
    assert continued.output_text and len(fake_openai.chat_requests) == 2  # never cached


def test_metrics_and_access_line_name_the_api(proxy: RunningProxy, client: openai.OpenAI) -> None:
    client.responses.create(model="gpt-4o-mini", input="Hi")
    text = httpx.get(f"{proxy.url}/metrics", timeout=5).text
    lines = [
        line
        for line in text.splitlines()
        if line.startswith("llm_proxy_requests_total{") and 'api="responses"' in line
    ]
    assert any('model="gpt-4o-mini"' in line and 'status="200"' in line for line in lines)
    assert "responses 200 model=gpt-4o-mini" in proxy.log()
