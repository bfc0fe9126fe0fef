"""The Messages door's decoding and translation to chat, on JSON: validation that names the
field, content blocks made into chat messages, tools and tool choices, what has no chat
equivalent, native bodies spliced, params, and the token estimate."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from proxy.config import ParamBounds
from proxy.errors import InvalidRequestError
from proxy.formats.chat import estimate_prompt_tokens
from proxy.formats.messages.blocks import estimate_tokens, read_turns
from proxy.formats.messages.request import MessagesRequest, decode_head
from proxy.formats.messages.translate import chat_body, chat_fields
from proxy.wire import decode_chat_head, top_level


def request(body: dict[str, Any] | bytes) -> MessagesRequest:
    raw = body if isinstance(body, bytes) else msgspec.json.encode(body)
    return MessagesRequest(raw, top_level(raw), decode_head(raw), {"anthropic-version": "v"})


def translated(body: dict[str, Any], **options: Any) -> dict[str, Any]:
    head = decode_head(msgspec.json.encode({"model": "m", "max_tokens": 10, **body}))
    sent: dict[str, Any] = msgspec.json.decode(
        chat_body(chat_fields(head, read_turns(head)), "up", stream=False, **options)
    )
    return sent


def test_system_blocks_text_and_sampling_fields() -> None:
    sent = translated(
        {
            "system": [{"type": "text", "text": "A."}, {"type": "text", "text": "B."}],
            "messages": [{"role": "user", "content": "Hi"}],
            "stop_sequences": ["x", "y"],
            "temperature": 0.5,
            "top_p": 0.8,
            "top_k": 3,
            "thinking": {"type": "enabled", "budget_tokens": 1000},
            "metadata": {"user_id": "u"},
        }
    )
    assert sent == {
        "model": "up",
        "messages": [{"role": "system", "content": "A.\nB."}, {"role": "user", "content": "Hi"}],
        "max_tokens": 10,
        "stop": ["x", "y"],
        "temperature": 0.5,
        "top_p": 0.8,
    }


def test_a_stream_asks_for_its_usage_and_dropped_fields_go() -> None:
    head = decode_head(
        b'{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"top_p":1}'
    )
    body = chat_body(chat_fields(head, read_turns(head)), "up", stream=True, drop=["top_p"])
    sent = msgspec.json.decode(body)
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert "top_p" not in sent


def test_tool_use_and_results_become_tool_calls_and_tool_messages() -> None:
    sent = translated(
        {
            "messages": [
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hm", "signature": "s"},
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "t1", "name": "w", "input": {"c": "P"}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Also this."},
                        {"type": "tool_result", "tool_use_id": "t1", "content": "sunny"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "t2",
                            "is_error": True,
                            "content": [
                                {"type": "text", "text": "a"},
                                {"type": "text", "text": "b"},
                            ],
                        },
                    ],
                },
            ]
        }
    )
    assert sent["messages"][1:] == [
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "t1",
                    "type": "function",
                    "function": {"name": "w", "arguments": '{"c":"P"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "t2", "content": "Error: a\nb"},
        {"role": "user", "content": "Also this."},
    ]


def test_images_become_image_url_parts() -> None:
    sent = translated(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Look"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "QUJD"},
                        },
                        {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                    ],
                }
            ]
        }
    )
    assert sent["messages"][0]["content"] == [
        {"type": "text", "text": "Look"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,QUJD"}},
        {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, {"tool_choice": "auto"}),
        ({"type": "any"}, {"tool_choice": "required"}),
        ({"type": "none"}, {"tool_choice": "none"}),
        (
            {"type": "tool", "name": "w"},
            {"tool_choice": {"type": "function", "function": {"name": "w"}}},
        ),
        (
            {"type": "auto", "disable_parallel_tool_use": True},
            {"tool_choice": "auto", "parallel_tool_calls": False},
        ),
    ],
)
def test_tools_and_tool_choice(choice: dict[str, Any], expected: dict[str, Any]) -> None:
    tool = {"name": "w", "description": "d", "input_schema": {"type": "object"}}
    sent = translated(
        {"messages": [{"role": "user", "content": "x"}], "tools": [tool], "tool_choice": choice}
    )
    function = {"name": "w", "parameters": {"type": "object"}, "description": "d"}
    assert sent["tools"] == [{"type": "function", "function": function}]
    assert {k: sent[k] for k in expected} == expected
    assert "parallel_tool_calls" in sent or "parallel_tool_calls" not in expected


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
            "messages[0].content[0].type",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}],
                    }
                ]
            },
            "messages[0].content[0].source",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "t",
                                "content": [
                                    {"type": "image", "source": {"type": "url", "url": "u"}}
                                ],
                            }
                        ],
                    }
                ]
            },
            "messages[0].content[0].content[0].type",
        ),
        (
            {
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "web_search_20250305", "name": "web_search"}],
            },
            "tools[0].type",
        ),
        (
            {
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"name": "w", "input_schema": {}}],
                "tool_choice": {"type": "tool"},
            },
            "tool_choice.name",
        ),
    ],
)
def test_what_chat_has_no_equivalent_for_is_a_400_naming_it(
    body: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        translated(body)
    assert caught.value.param == param


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'{"max_tokens":1,"messages":[{"role":"user","content":"x"}]}', "model"),
        (b'{"model":"m","max_tokens":1,"messages":[]}', "messages"),
        (b'{"model":"m","max_tokens":0,"messages":[{"role":"user","content":"x"}]}', "max_tokens"),
        (b'{"model":"m","messages":[{"role":"system","content":"x"}]}', "messages[0].role"),
        (
            b'{"model":"m","messages":[{"role":"user","content":[{"type":"text"}]}]}',
            "messages[0].content[0].text",
        ),
        (
            b'{"model":"m","messages":[{"role":"user","content":[{"text":"x"}]}]}',
            "messages[0].content[0].type",
        ),
        (
            b'{"model":"m","messages":[{"role":"user","content":[{"type":"tool_use","id":"t",'
            b'"name":"n","input":[]}]}]}',
            "messages[0].content[0].input",
        ),
        (
            b'{"model":"m","messages":[{"role":"user","content":"x"}],'
            b'"tool_choice":{"type":"sometimes"}}',
            "tool_choice.type",
        ),
    ],
)
def test_a_malformed_body_is_a_400_naming_the_field(body: bytes, param: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        request(body)
    assert caught.value.param == param


def test_blocks_the_proxy_does_not_know_pass_decoding() -> None:
    decoded = request(
        {
            "model": "m",
            "max_tokens": 5,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "search_result", "source": "https://x", "content": [{"a": 1}]},
                        {"type": "container_upload", "file_id": "f"},
                    ],
                }
            ],
        }
    )
    assert decoded.model == "m" and decoded.estimate == 4


def test_the_native_body_is_the_client_s_with_only_model_rewritten() -> None:
    body = (
        b'{"model":"m", "max_tokens":5, "messages":[{"role":"user","content":"x"}],'
        b' "top_k":5, "x_new": {"n": 1.50E2}}'
    )
    decoded = request(body)
    assert decoded.native_body("m") is decoded.key_body
    sent = decoded.native_body("up", frozenset({"top_k"}))
    assert sent == (
        b'{"model":"up","max_tokens":5,"messages":[{"role":"user","content":"x"}],'
        b'"x_new":{"n": 1.50E2}}'
    )


def test_model_params_apply_under_the_messages_names() -> None:
    decoded = request(
        {"model": "m", "max_tokens": 9000, "messages": [{"role": "user", "content": "x"}]}
    )
    decoded.apply_params(
        {
            "max_completion_tokens": ParamBounds(max=1000),
            "temperature": ParamBounds(default=0),
            "seed": ParamBounds(default=7),
        }
    )
    sent = msgspec.json.decode(decoded.key_body)
    assert (sent["max_tokens"], sent["temperature"]) == (1000, 0)
    assert "seed" not in sent
    assert decoded.head.max_tokens == 1000 and decoded.deterministic


def test_the_estimate_is_the_chat_door_s_estimate_of_the_translation() -> None:
    body = {
        "model": "m",
        "max_tokens": 5,
        "system": "You are terse.",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris, please"}]},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t", "name": "w", "input": {}}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t", "content": "sunny and warm"},
                    {"type": "text", "text": "Thanks!"},
                ],
            },
        ],
    }
    decoded = request(body)
    chat = chat_body(chat_fields(decoded.head, decoded.turns), "up", stream=False)
    assert decoded.estimate == estimate_prompt_tokens(decode_chat_head(chat))
    head = decoded.head
    assert estimate_tokens(head, read_turns(head)) == decoded.estimate
