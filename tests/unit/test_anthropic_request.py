"""OpenAI chat bodies made into Anthropic Messages requests (proxy/upstreams/anthropic_request),
checked on JSON, and what the Messages API cannot honour refused before anything is sent."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.errors import UpstreamRejectedError
from proxy.upstreams.anthropic_request import DEFAULT_MAX_TOKENS, messages_request

USER = [{"role": "user", "content": "Hi"}]
PNG = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
)
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def translate(stream: bool = False, **fields: Any) -> dict[str, Any]:
    fields.setdefault("messages", USER)
    body = json.dumps({"model": "public-name", **fields}).encode()
    prepared = messages_request(body, "claude-sonnet-4-5", stream=stream)
    payload: dict[str, Any] = json.loads(prepared.payload)
    return payload


def refused(**fields: Any) -> UpstreamRejectedError:
    with pytest.raises(UpstreamRejectedError) as caught:
        translate(**fields)
    return caught.value


def test_the_smallest_request_gets_the_route_model_and_the_default_max_tokens() -> None:
    assert translate() == {
        "model": "claude-sonnet-4-5",
        "max_tokens": DEFAULT_MAX_TOKENS,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
    }


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    assert translate(max_tokens=100)["max_tokens"] == 100
    assert translate(max_tokens=100, max_completion_tokens=50)["max_tokens"] == 50


def test_system_and_developer_messages_are_hoisted_and_joined() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
    ]
    payload = translate(messages=messages)
    assert payload["system"] == "Be brief.\n\nAnswer in French."
    assert [m["role"] for m in payload["messages"]] == ["user"]


def test_sampling_fields_stop_stream_and_user_are_carried() -> None:
    payload = translate(
        stream=True, temperature=0.2, top_p=0.9, stop="END", user="u-42", seed=7, store=True
    )
    assert payload["temperature"] == 0.2 and payload["top_p"] == 0.9
    assert payload["stop_sequences"] == ["END"]
    assert payload["stream"] is True
    assert payload["metadata"] == {"user_id": "u-42"}
    assert "seed" not in payload and "store" not in payload
    assert translate(stop=["a", "", "b"])["stop_sequences"] == ["a", "b"]


def test_fields_the_messages_api_has_no_use_for_are_reported_as_ignored() -> None:
    body = json.dumps({"model": "m", "messages": USER, "seed": 1, "presence_penalty": 0.5})
    prepared = messages_request(body.encode(), "claude", stream=False)
    assert prepared.ignored == ("presence_penalty", "seed")


def test_stream_options_include_usage_is_remembered_for_the_stream() -> None:
    body = {"model": "m", "messages": USER, "stream": True}
    asked = {**body, "stream_options": {"include_usage": True}}
    assert messages_request(json.dumps(asked).encode(), "c", stream=True).include_usage
    assert not messages_request(json.dumps(body).encode(), "c", stream=True).include_usage


def test_images_become_base64_or_url_sources() -> None:
    content = [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
    ]
    blocks = translate(messages=[{"role": "user", "content": content}])["messages"][0]["content"]
    assert blocks == [
        {"type": "text", "text": "What is in these?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


@pytest.mark.parametrize("url", ["ftp://example.com/a.png", "data:image/png,rawbytes", "cat.png"])
def test_an_image_that_is_neither_http_nor_base64_is_refused(url: str) -> None:
    content = [{"type": "image_url", "image_url": {"url": url}}]
    error = refused(messages=[{"role": "user", "content": content}])
    assert error.param == "messages[0].content[0].image_url.url"


def test_content_the_api_cannot_take_is_refused_naming_the_part() -> None:
    audio = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
    error = refused(messages=[{"role": "user", "content": [{"type": "text", "text": "a"}, audio]}])
    assert error.param == "messages[0].content[1].type"
    assert "input_audio" in error.message


def test_tool_calls_and_results_round_trip_into_tool_use_and_tool_result_blocks() -> None:
    messages = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {"id": "toolu_2", "type": "function", "function": {"name": "now", "arguments": ""}},
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "21 C"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": [{"type": "text", "text": "noon"}]},
        {"role": "user", "content": "Thanks"},
    ]
    turns = translate(messages=messages)["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"] == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}},
    ]
    assert turns[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "21 C"},
        {
            "type": "tool_result",
            "tool_use_id": "toolu_2",
            "content": [{"type": "text", "text": "noon"}],
        },
        {"type": "text", "text": "Thanks"},
    ]


def test_an_assistant_turn_with_only_tool_calls_has_no_empty_text_block() -> None:
    call = {"id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [*USER, {"role": "assistant", "content": None, "tool_calls": [call]}]
    assistant = translate(messages=messages)["messages"][1]
    assert assistant["content"] == [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]


def test_consecutive_messages_of_one_role_are_merged_and_empty_ones_dropped() -> None:
    messages = [
        {"role": "user", "content": "one"},
        {"role": "user", "content": [{"type": "text", "text": "two"}]},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "three"},
    ]
    assert translate(messages=messages)["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "one"},
                {"type": "text", "text": "two"},
                {"type": "text", "text": "three"},
            ],
        }
    ]


@pytest.mark.parametrize("arguments", ["not json", "[1, 2]"])
def test_tool_call_arguments_that_are_not_a_json_object_are_refused(arguments: str) -> None:
    call = {"id": "t", "type": "function", "function": {"name": "f", "arguments": arguments}}
    error = refused(messages=[*USER, {"role": "assistant", "tool_calls": [call]}])
    assert error.param == "messages[1].tool_calls[0].function.arguments"


def test_tools_become_input_schemas() -> None:
    bare = {"type": "function", "function": {"name": "now"}}
    assert translate(tools=[WEATHER, bare])["tools"] == [
        {
            "name": "get_weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            "description": "Weather for a city",
        },
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        (None, None, None),
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            None,
            {"type": "tool", "name": "get_weather"},
        ),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        ("none", False, {"type": "none"}),
        ("auto", True, {"type": "auto"}),
    ],
)
def test_tool_choice_and_parallel_tool_calls(choice: Any, parallel: Any, expected: Any) -> None:
    fields: dict[str, Any] = {"tools": [WEATHER]}
    if choice is not None:
        fields["tool_choice"] = choice
    if parallel is not None:
        fields["parallel_tool_calls"] = parallel
    assert translate(**fields).get("tool_choice") == expected


def test_tool_choice_without_tools_is_not_sent() -> None:
    assert "tool_choice" not in translate(tool_choice="auto", parallel_tool_calls=False)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            "response_format",
        ),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"logprobs": True}, "logprobs"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"tools": [{"type": "custom", "custom": {"name": "sql"}}]}, "tools[0].type"),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
        ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        ({"max_tokens": "many"}, "max_tokens"),
    ],
)
def test_what_the_messages_api_cannot_honour_is_a_400_naming_the_field(
    fields: dict[str, Any], param: str
) -> None:
    assert refused(**fields).param == param


def test_harmless_values_of_refused_fields_pass() -> None:
    payload = translate(n=1, response_format={"type": "text"}, logprobs=False, logit_bias={})
    assert set(payload) == {"model", "max_tokens", "messages"}
