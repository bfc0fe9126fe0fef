"""Responses requests as chat-completions bodies, and the input items checked, listed and
measured: pure functions on JSON."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.errors import InvalidRequestError
from proxy.formats.responses.inputs import check_call_ids, estimate_tokens, input_items, listed
from proxy.formats.responses.translate import NotTranslatable, chat_body
from proxy.formats.responses.wire import decode_head

TOOL = {"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True}


def translate(body: dict[str, Any], history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    head = decode_head(msgspec.json.encode({"model": "m", **body}))
    return chat_body(head, history or [], input_items(head.input))


def test_a_string_input_with_instructions() -> None:
    chat = translate({"input": "Hi", "instructions": "Be kind."})
    assert chat == {
        "messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}]
    }


def test_settings_are_renamed_or_kept() -> None:
    chat = translate(
        {
            "input": "x",
            "max_output_tokens": 9,
            "temperature": 0.2,
            "top_p": 0.5,
            "user": "u",
            "metadata": {"a": "b"},
            "reasoning": {"effort": "high", "summary": "auto"},
            "text": {"format": {"type": "json_schema", "name": "n", "schema": {}}},
            "store": True,
            "include": ["reasoning.encrypted_content"],
            "truncation": "auto",
        }
    )
    assert chat["max_tokens"] == 9 and chat["temperature"] == 0.2 and chat["top_p"] == 0.5
    assert chat["user"] == "u" and chat["metadata"] == {"a": "b"}
    assert chat["reasoning_effort"] == "high"
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "n", "schema": {}},
    }
    assert not {"store", "include", "truncation", "reasoning", "text"} & set(chat)


def test_calls_join_the_assistant_turn_and_outputs_become_tool_messages() -> None:
    chat = translate(
        {
            "input": [
                {"role": "user", "content": "Weather?"},
                {"type": "message", "role": "assistant", "content": "Let me look."},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "sun"},
                {
                    "type": "function_call_output",
                    "call_id": "c2",
                    "output": [{"type": "input_text", "text": "rain"}],
                },
                {"type": "reasoning", "id": "rs_1", "summary": []},
            ]
        }
    )
    assert chat["messages"] == [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sun"},
        {"role": "tool", "tool_call_id": "c2", "content": "rain"},
    ]


def test_history_comes_first_and_skips_what_a_chat_model_cannot_take() -> None:
    history = [
        {"id": "msg_1", "type": "message", "role": "user", "status": "completed",
         "content": [{"type": "input_text", "text": "Search"}]},
        {"id": "ws_1", "type": "web_search_call", "status": "completed"},
        {"id": "msg_2", "type": "message", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "Found.", "annotations": []}]},
    ]  # fmt: skip
    chat = translate({"input": "More", "instructions": "New rules."}, history)
    assert chat["messages"] == [
        {"role": "system", "content": "New rules."},
        {"role": "user", "content": "Search"},
        {"role": "assistant", "content": "Found."},
        {"role": "user", "content": "More"},
    ]


def test_tools_and_tool_choices() -> None:
    chat = translate(
        {"input": "x", "tools": [TOOL], "tool_choice": "required", "parallel_tool_calls": True}
    )
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {"name": "f", "parameters": {"type": "object"}, "strict": True},
        }
    ]
    assert chat["tool_choice"] == "required" and chat["parallel_tool_calls"] is True
    chosen = translate(
        {"input": "x", "tools": [TOOL], "tool_choice": {"type": "function", "name": "f"}}
    )
    assert chosen["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    allowed = {
        "type": "allowed_tools",
        "mode": "auto",
        "tools": [{"type": "function", "name": "f"}],
    }
    assert (
        translate({"input": "x", "tools": [TOOL], "tool_choice": allowed})["tool_choice"] == "auto"
    )
    bare = translate({"input": "x", "parallel_tool_calls": False, "tool_choice": "auto"})
    assert "parallel_tool_calls" not in bare and "tool_choice" not in bare


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x", "tools": [TOOL, {"type": "web_search_preview"}]}, "tools[1].type"),
        ({"input": "x", "tools": [{"type": "mcp", "server_label": "s"}]}, "tools[0].type"),
        ({"input": "x", "tools": [TOOL], "tool_choice": {"type": "web_search_preview"}},
         "tool_choice"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
         "input[0].content[0].type"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
         "input[0].content[0].file_id"),
        ({"input": "x", "background": True}, "background"),
        ({"input": "x", "conversation": "conv_1"}, "conversation"),
    ],
)  # fmt: skip
def test_what_only_a_responses_upstream_can_do_is_named(body: dict[str, Any], param: str) -> None:
    with pytest.raises(NotTranslatable) as caught:
        translate(body)
    assert caught.value.param == param
    assert caught.value.error().status == 400


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x", "tools": [{"type": "function"}]}, "tools[0].name"),
        ({"input": "x", "tools": [TOOL], "tool_choice": "sometimes"}, "tool_choice"),
        ({"input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ],
)
def test_bad_settings_are_the_client_s_400(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        translate(body)
    assert caught.value.param == param


@pytest.mark.parametrize(
    ("value", "param"),
    [
        ([1], "input[0]"),
        ([{"content": "no role"}], "input[0].type"),
        ([{"type": 7}], "input[0].type"),
        ([{"role": "robot", "content": "x"}], "input[0].role"),
        ([{"role": "user", "content": 5}], "input[0].content"),
        ([{"type": "function_call", "call_id": "c", "name": "f"}], "input[0].arguments"),
        ([{"type": "function_call_output", "call_id": "c"}], "input[0].output"),
    ],
)
def test_malformed_items_are_named(value: list[Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        input_items(value)
    assert caught.value.param == param


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'{"model":"m"}', "input"),
        (b'{"model":"m","input":3}', "input"),
        (b'{"input":"x"}', "model"),
    ],
)
def test_the_head_names_a_missing_or_mistyped_field(body: bytes, param: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        decode_head(body)
    assert caught.value.param == param


def test_an_output_must_answer_an_earlier_call() -> None:
    call = {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}
    answer = {"type": "function_call_output", "call_id": "c1", "output": "ok"}
    check_call_ids([call, answer], [])
    check_call_ids([answer], [call])  # the call is in the stored conversation
    with pytest.raises(InvalidRequestError) as caught:
        check_call_ids([answer, call], [])  # the call comes after its output
    assert caught.value.param == "input[0].call_id"


def test_items_are_listed_with_ids_and_parts() -> None:
    items = input_items(
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"type": "function_call", "id": "fc_9", "call_id": "c", "name": "f", "arguments": ""},
        ]
    )
    shown = listed(items)
    assert shown[0]["id"].startswith("msg_") and shown[0]["status"] == "completed"
    assert shown[0]["content"] == [{"type": "input_text", "text": "Hi"}]
    assert shown[1]["content"] == [{"type": "output_text", "text": "Hello", "annotations": []}]
    assert shown[2]["id"] == "fc_9"


def test_the_estimate_counts_text_bytes_and_items() -> None:
    items = input_items([{"role": "user", "content": "12345678"}])
    assert estimate_tokens(None, items) == 8 // 4 + 4
    assert estimate_tokens("abcd", items) == 12 // 4 + 8


_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5)
_json = st.recursive(
    _leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
)
_keys = st.sampled_from(
    ["type", "role", "content", "call_id", "name", "arguments", "output", "text", "image_url"]
)
_kinds = st.sampled_from(
    [
        "message",
        "function_call",
        "function_call_output",
        "reasoning",
        "input_text",
        "input_image",
        "output_text",
        "refusal",
        "user",
        "x",
    ]
)
_item = st.dictionaries(_keys, _kinds | _json, max_size=6)
_items = st.lists(
    _item | st.dictionaries(_keys, st.lists(_item, max_size=2), max_size=3), max_size=4
)


@settings(max_examples=300, deadline=None)
@given(items=_items, tools=st.lists(st.dictionaries(_keys, _kinds | _json, max_size=3), max_size=2),
       choice=st.none() | _kinds | st.dictionaries(_keys, _kinds | _json, max_size=2))  # fmt: skip
def test_hostile_items_are_a_400_or_a_translation_never_a_crash(
    items: list[Any], tools: list[Any], choice: Any
) -> None:
    body = {"model": "m", "input": items, "tools": tools}
    if choice is not None:
        body["tool_choice"] = choice
    try:
        head = decode_head(msgspec.json.encode(body))
        checked = input_items(head.input)
        check_call_ids(checked, checked)
        listed(checked)
        estimate_tokens(head.instructions, checked)
        chat_body(head, checked, checked)
    except (InvalidRequestError, NotTranslatable):
        pass
