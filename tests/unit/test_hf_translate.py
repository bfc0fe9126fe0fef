"""The pure HuggingFace translation (hf_textgen, hf_chat, hf_common, hf_errors) on payloads
shaped like the ones TGI, the classic task API and the HF router send (docs/huggingface.md)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from multidict import CIMultiDict
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from proxy.errors import (
    InvalidRequestError,
    RateLimitError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamRejectedError,
)
from proxy.upstreams.chat_templates import ChatTemplate
from proxy.upstreams.hf_chat import ChatTranslation, chat_payload
from proxy.upstreams.hf_common import StopTrimmer, cut_at_stop, finish_reason
from proxy.upstreams.hf_errors import hf_error, stream_error
from proxy.upstreams.hf_textgen import TextGenTranslation

CHATML = ChatTemplate.from_config("chatml")
USER = [{"role": "user", "content": "Hi"}]


def body(**fields: Any) -> bytes:
    return json.dumps({"model": "acme/model", "messages": USER, **fields}).encode()


def textgen(stream_field: bool | None = None, **fields: Any) -> TextGenTranslation:
    return TextGenTranslation(
        "hf", body(**fields), CHATML, model="acme/model", stream_field=stream_field
    )


def payload(**fields: Any) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(textgen(**fields).payload)
    return result


def events(*items: dict[str, Any]) -> list[bytes]:
    return [json.dumps(item).encode() for item in items]


def token(text: str, special: bool = False) -> dict[str, Any]:
    return {
        "index": 1,
        "token": {"id": 1, "text": text, "logprob": -0.1, "special": special},
        "generated_text": None,
        "details": None,
    }


def final(text: str, reason: str = "eos_token", generated: int = 3, prompt: int = 7) -> dict:
    return {
        "index": 9,
        "token": {"id": 2, "text": "</s>", "logprob": -0.01, "special": True},
        "generated_text": text,
        "details": {
            "finish_reason": reason,
            "generated_tokens": generated,
            "seed": None,
            "input_length": prompt,
        },
    }


def decoded(chunks: list[bytes]) -> list[dict[str, Any]]:
    return [json.loads(c) for c in chunks]


def accumulate(chunks: list[bytes]) -> Any:
    """What the official SDK's stream helper makes of the chunks."""
    state: ChatCompletionStreamState = ChatCompletionStreamState()
    for chunk in decoded(chunks):
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    return state.get_final_completion()


# ---- text generation: the request ------------------------------------------------------------


def test_messages_become_inputs_through_the_template() -> None:
    sent = payload()
    assert sent["inputs"] == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert sent["parameters"]["return_full_text"] is False  # the prompt is never echoed
    assert sent["parameters"]["details"] is True  # finish reason and token counts
    assert "stream" not in sent


def test_classic_api_streams_by_a_body_flag() -> None:
    assert json.loads(textgen(stream_field=True).payload)["stream"] is True


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"max_tokens": 20}, 20),
        ({"max_completion_tokens": 30}, 30),
        ({"max_tokens": 20, "max_completion_tokens": 30}, 30),
    ],
)
def test_max_tokens_become_max_new_tokens(fields: dict[str, Any], expected: int) -> None:
    assert payload(**fields)["parameters"]["max_new_tokens"] == expected


def test_temperature_zero_is_greedy_without_a_temperature() -> None:
    params = payload(temperature=0, top_p=0.5)["parameters"]
    assert params["do_sample"] is False
    assert "temperature" not in params and "top_p" not in params


def test_top_p_zero_is_greedy() -> None:
    assert payload(top_p=0)["parameters"]["do_sample"] is False


def test_openai_default_samples_and_top_p_one_is_dropped() -> None:
    params = payload(temperature=0.7, top_p=1.0)["parameters"]
    assert params["do_sample"] is True
    assert params["temperature"] == 0.7
    assert "top_p" not in params  # TGI refuses 1.0, which means "no nucleus filter"
    assert payload()["parameters"]["do_sample"] is True
    assert payload(top_p=0.9)["parameters"]["top_p"] == 0.9


def test_stop_seed_and_penalties() -> None:
    params = payload(stop="\n\n", seed=7, frequency_penalty=0.5, presence_penalty=2)["parameters"]
    assert params["stop"] == ["\n\n"]
    assert params["seed"] == 7
    assert params["frequency_penalty"] == 0.5
    assert params["repetition_penalty"] == 2.0  # 2 ** (presence / 2)
    assert payload(stop=["a", "", "b"])["parameters"]["stop"] == ["a", "b"]
    zero = payload(presence_penalty=0, frequency_penalty=0)["parameters"]
    assert "repetition_penalty" not in zero and "frequency_penalty" not in zero


def test_tgi_knobs_from_extra_body_pass_through() -> None:
    params = payload(top_k=40, repetition_penalty=1.1, typical_p=0.9, truncate=100)["parameters"]
    assert (params["top_k"], params["repetition_penalty"]) == (40, 1.1)
    assert (params["typical_p"], params["truncate"]) == (0.9, 100)


def test_unused_fields_are_reported() -> None:
    assert list(textgen(user="u1", metadata={"a": "b"}, temperature=1).ignored) == [
        "user",
        "metadata",
    ]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            "response_format",
        ),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"n": 2}, "n"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"modalities": ["text", "audio"]}, "modalities"),
    ],
)
def test_what_a_prompt_cannot_honour_is_a_400_naming_the_field(
    fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidRequestError) as exc:
        textgen(**fields)
    assert exc.value.param == param
    assert "drop_params" in exc.value.message
    # the router neither retries this nor counts it against the route's breaker
    assert isinstance(exc.value, UpstreamRejectedError)


@pytest.mark.parametrize(
    "fields",
    [
        {"n": 1},
        {"tool_choice": "none"},
        {"tools": []},
        {"response_format": {"type": "text"}},
        {"logprobs": False},
        {"logit_bias": {}},
    ],
)
def test_harmless_values_are_accepted(fields: dict[str, Any]) -> None:
    textgen(**fields)


def test_a_field_of_the_wrong_type_is_a_400_naming_it() -> None:
    with pytest.raises(InvalidRequestError) as exc:
        textgen(stop=5)
    assert exc.value.param == "stop"


def test_messages_are_flattened_for_the_template() -> None:
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": None},
    ]
    t = TextGenTranslation("hf", body(messages=messages), CHATML, model="m")
    assert t.prompt.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nab")
    assert "<|im_start|>assistant\n<|im_end|>" in t.prompt


@pytest.mark.parametrize(
    ("message", "param"),
    [
        (
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}]},
            "messages[0].content[1]",
        ),
        ({"role": "tool", "content": "x", "tool_call_id": "c"}, "messages[0].role"),
        (
            {"role": "assistant", "tool_calls": [{"id": "c", "type": "function"}]},
            "messages[0].tool_calls",
        ),
    ],
)
def test_what_a_text_prompt_cannot_carry_is_a_400(message: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as exc:
        TextGenTranslation("hf", body(messages=[message]), CHATML, model="m")
    assert exc.value.param == param


# ---- text generation: JSON replies -----------------------------------------------------------


def complete(t: TextGenTranslation, reply: Any, headers: dict[str, str] | None = None) -> dict:
    result: dict[str, Any] = json.loads(t.completion(json.dumps(reply).encode(), headers or {}))
    return result


def test_a_generation_becomes_a_chat_completion() -> None:
    reply = [
        {
            "generated_text": "Hello there",
            "details": {"finish_reason": "eos_token", "generated_tokens": 3},
        }
    ]
    out = complete(textgen(), reply, {"x-prompt-tokens": "11"})
    assert out["id"].startswith("chatcmpl-") and len(out["id"]) > 12
    assert out["object"] == "chat.completion" and isinstance(out["created"], int)
    assert out["model"] == "acme/model"
    assert out["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert out["usage"] == {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}


def test_tgi_answers_a_dict_and_length_is_length() -> None:
    out = complete(textgen(), {"generated_text": "abc", "details": {"finish_reason": "length"}})
    assert out["choices"][0]["finish_reason"] == "length"


def test_the_stop_sequence_is_cut_even_inside_the_last_token() -> None:
    reply = {
        "generated_text": "The capital is Paris.",
        "details": {"finish_reason": "stop_sequence"},
    }
    out = complete(textgen(stop=["Par"]), reply)
    assert out["choices"][0]["message"]["content"] == "The capital is "
    assert out["choices"][0]["finish_reason"] == "stop"


def test_usage_is_estimated_when_the_backend_counts_nothing() -> None:
    out = complete(textgen(), [{"generated_text": "12345678"}])
    assert out["usage"]["completion_tokens"] == 2  # 8 bytes / 4
    assert out["usage"]["prompt_tokens"] > 0
    assert out["choices"][0]["finish_reason"] == "stop"


def test_a_reply_that_is_no_generation_is_an_upstream_error() -> None:
    with pytest.raises(UpstreamError):
        textgen().completion(b"<html>", {})
    with pytest.raises(UpstreamError):
        textgen().completion(b"[]", {})


# ---- text generation: streams ----------------------------------------------------------------


def test_token_events_become_chunks_role_first_finish_then_usage() -> None:
    stream = textgen(stream_options={"include_usage": True}).stream()
    first = stream.feed(events(token("Hel")))
    second = stream.feed(events(token("lo"), token(" you")))  # one read: one chunk
    rest = stream.feed(events(final("Hello you", generated=3, prompt=7)))
    assert stream.done and stream.failure is None and stream.end() == []
    chunks = decoded(first + second + rest)
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert {c["created"] for c in chunks} == {chunks[0]["created"]}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Hel"}
    assert chunks[1]["choices"][0]["delta"] == {"content": "lo you"}
    assert chunks[2]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert chunks[3]["choices"] == []
    assert chunks[3]["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    assert len(chunks) == 4  # the special EOS token's text is never sent
    assert accumulate(first + second + rest).choices[0].message.content == "Hello you"


def test_the_role_chunk_comes_first_even_without_text() -> None:
    stream = textgen().stream()
    chunks = decoded(stream.feed(events(final(""))))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[1]["choices"][0]["finish_reason"] == "stop"


def test_no_usage_chunk_unless_asked() -> None:
    stream = textgen().stream()
    chunks = decoded(stream.feed(events(token("a"), final("a", reason="length"))))
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all(c["choices"] for c in chunks)


def test_a_stop_string_split_across_tokens_never_reaches_the_client() -> None:
    stream = textgen(stop=["Paris"]).stream()
    out = stream.feed(events(token("In"), token(" Par")))
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in decoded(out)) == "In "
    out += stream.feed(events(token("is"), final("In Paris", reason="stop_sequence")))
    completion = accumulate(out)
    assert completion.choices[0].message.content == "In "
    assert completion.choices[0].finish_reason == "stop"


def test_held_back_text_that_was_no_stop_is_sent_at_the_end() -> None:
    stream = textgen(stop=["Paris"]).stream()
    out = stream.feed(events(token("In Pa"), final("In Pa")))
    assert accumulate(out).choices[0].message.content == "In Pa"


def test_a_validation_error_event_before_any_token_is_the_clients_400() -> None:
    stream = textgen().stream()
    error = {
        "error": "Input validation error: `best_of` != 1 is not supported",
        "error_type": "validation",
    }
    assert stream.feed(events(error)) == []
    assert isinstance(stream.failure, UpstreamRejectedError)
    assert "best_of" in stream.failure.message


def test_an_error_event_mid_stream_comes_after_the_chunks_before_it() -> None:
    stream = textgen().stream()
    out = stream.feed(
        events(token("a"), {"error": "CUDA out of memory", "error_type": "generation"})
    )
    assert len(out) == 1
    assert type(stream.failure) is UpstreamError
    assert "CUDA" not in stream.failure.message


def test_a_stream_that_ends_without_its_final_event_is_an_error() -> None:
    stream = textgen().stream()
    stream.feed(events(token("a")))
    with pytest.raises(UpstreamError):
        stream.end()


def test_a_garbled_event_is_an_upstream_error() -> None:
    stream = textgen().stream()
    stream.feed([b"not json"])
    assert isinstance(stream.failure, UpstreamError)


def test_plain_json_for_a_stream_is_replayed_as_one_content_chunk() -> None:
    stream = textgen(stream_options={"include_usage": True}).stream()
    out = stream.replay(
        json.dumps([{"generated_text": "Hi you"}]).encode(), {"x-prompt-tokens": "4"}
    )
    chunks = decoded(out)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Hi you"}
    assert chunks[1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[2]["usage"]["prompt_tokens"] == 4


# ---- stop strings and finish reasons ---------------------------------------------------------


def test_stop_trimmer_holds_back_only_possible_stop_prefixes() -> None:
    trimmer = StopTrimmer(["</answer>", "\n\n"])
    assert trimmer.feed("a <") == "a "
    assert trimmer.feed("b") == "<b"
    assert trimmer.feed("\n") == ""
    assert trimmer.feed("x") == "\nx"
    assert trimmer.feed("end</ans") == "end"
    assert trimmer.feed("wer> more") == ""
    assert trimmer.stopped and trimmer.feed("late") == "" and trimmer.flush() == ""


def test_cut_at_the_earliest_stop() -> None:
    assert cut_at_stop("a STOP b END", ["END", "STOP"]) == ("a ", True)
    assert cut_at_stop("abc", []) == ("abc", False)


@pytest.mark.parametrize(
    ("hf", "openai"),
    [
        ("eos_token", "stop"),
        ("stop_sequence", "stop"),
        ("length", "length"),
        ("abort", "stop"),
        (None, "stop"),
    ],
)
def test_finish_reasons(hf: Any, openai: str) -> None:
    assert finish_reason(hf) == openai


# ---- errors ----------------------------------------------------------------------------------


def raw(data: Any) -> bytes:
    return json.dumps(data).encode()


def test_a_loading_model_parks_the_route_for_its_estimated_time() -> None:
    error = hf_error(
        "hf", 503, raw({"error": "Model gpt2 is currently loading", "estimated_time": 20.5}), {}
    )
    assert type(error) is UpstreamError
    assert error.code == "model_loading" and error.retry_after == 20.5
    assert error.cause == "503"  # what the router parks on
    assert error.response_headers()["retry-after"] == "21"
    assert "gpt2" not in error.message  # no upstream model id for the client


def test_a_503_without_estimate_uses_retry_after() -> None:
    error = hf_error(
        "hf", 503, raw({"error": "Model x is currently loading"}), {"retry-after": "3"}
    )
    assert error.code == "model_loading" and error.retry_after == 3


@pytest.mark.parametrize(
    ("status", "data", "message"),
    [
        (
            422,
            {
                "error": "Input validation error: `top_p` must be > 0.0 and < 1.0",
                "error_type": "validation",
            },
            "Input validation error: `top_p` must be > 0.0 and < 1.0",
        ),
        (400, {"error": ["bad a", "bad b"]}, "bad a; bad b"),
        (400, {"error": "invalid", "error_description": "details"}, "invalid: details"),
        (
            400,
            {"error": {"message": "The requested model 'x' is not supported"}},
            "The requested model 'x' is not supported",
        ),
    ],
)
def test_validation_errors_carry_hfs_message(status: int, data: Any, message: str) -> None:
    error = hf_error("hf", status, raw(data), {})
    assert isinstance(error, UpstreamRejectedError) and error.status == 400
    assert error.message == message


def test_plain_text_and_header_messages() -> None:
    assert (
        hf_error("hf", 422, b"Failed to deserialize: stop", {}).message
        == "Failed to deserialize: stop"
    )
    assert (
        hf_error("hf", 400, b"{}", CIMultiDict({"X-Error-Message": "from header"})).message
        == "from header"
    )


def test_a_prompt_too_long_is_context_length_exceeded() -> None:
    text = (
        "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. "
        "Given: 4000 `inputs` tokens and 200 `max_new_tokens`"
    )
    error = hf_error("hf", 422, raw({"error": text, "error_type": "validation"}), {})
    assert error.code == "context_length_exceeded" and error.param == "messages"


def test_refused_credentials_never_show_hfs_text() -> None:
    error = hf_error(
        "hf", 401, raw({"error": "Invalid credentials in Authorization header: hf_SECRETTOKEN"}), {}
    )
    assert isinstance(error, UpstreamAuthError) and error.status == 502
    assert "hf_SECRETTOKEN" not in error.message and "credentials" in error.message


def test_overloaded_is_a_rate_limit_with_its_retry_after() -> None:
    error = hf_error(
        "hf",
        429,
        raw({"error": "Model is overloaded", "error_type": "overloaded"}),
        {"retry-after": "2"},
    )
    assert isinstance(error, RateLimitError) and error.retry_after == 2


def test_other_failures_are_upstream_errors() -> None:
    assert (
        type(hf_error("hf", 424, raw({"error": "Request failed during generation"}), {}))
        is UpstreamError
    )
    assert hf_error("hf", 404, b"Not Found", {}).code == "upstream_model_not_found"


def test_stream_error_shapes() -> None:
    tgi_chat = {"error": {"message": "Input validation error: x", "http_status_code": 422}}
    assert isinstance(stream_error("hf", tgi_chat), UpstreamRejectedError)
    vllm = {"error": {"message": "bad", "type": "BadRequestError", "code": 400}}
    assert isinstance(stream_error("hf", vllm), UpstreamRejectedError)
    assert type(stream_error("hf", {"error": "boom"})) is UpstreamError


# ---- api: chat -------------------------------------------------------------------------------


def test_chat_payload_fixes_what_hf_routes_refuse() -> None:
    data = {
        "messages": USER,
        "model": "public",
        "stop": "END",
        "top_p": 1.0,
        "stream": None,
        "max_completion_tokens": 12,
        "logit_bias": {},
        "user": "kept",
    }
    out, dropped = chat_payload(data, "org/model:provider")
    assert next(iter(out)) == "model" and out["model"] == "org/model:provider"
    assert out["stop"] == ["END"]
    assert out["max_tokens"] == 12 and "max_completion_tokens" not in out
    assert out["user"] == "kept"  # unknown to TGI, ignored there: passed through
    assert sorted(dropped) == ["logit_bias", "stream", "top_p"]
    assert not {"top_p", "stream", "logit_bias"} & set(out)


@pytest.mark.parametrize(
    ("fields", "param"), [({"n": 3}, "n"), ({"logit_bias": {"1": 5}}, "logit_bias")]
)
def test_chat_payload_refuses_what_dropping_would_change(
    fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidRequestError) as exc:
        chat_payload({"messages": USER, **fields}, "m")
    assert exc.value.param == param


def chat(**fields: Any) -> ChatTranslation:
    return ChatTranslation("hf", body(**fields), model="tgi")


TGI_TOOL_REPLY = {
    "object": "chat.completion",
    "id": "",
    "created": 1732000000,
    "model": "tgi",
    "system_fingerprint": "3.3.6-native",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "0",
                        "type": "function",
                        "function": {
                            "description": None,
                            "name": "get_weather",
                            "arguments": {"city": "Paris"},
                        },
                    }
                ],
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
}


def test_a_tgi_tool_call_reply_is_made_openai() -> None:
    out = json.loads(chat().completion(raw(TGI_TOOL_REPLY), {}))
    assert out["id"].startswith("chatcmpl-")
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None and message["refusal"] is None
    call = message["tool_calls"][0]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}


def test_a_chat_reply_loses_its_stop_sequence() -> None:
    reply = {
        "id": "",
        "object": "text_completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "one two END"},
                "finish_reason": "stop_sequence",
            }
        ],
    }
    out = json.loads(chat(stop="END").completion(raw(reply), {}))
    assert out["object"] == "chat.completion"
    assert out["choices"][0]["message"]["content"] == "one two "
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["choices"][0]["logprobs"] is None


def test_a_chat_reply_without_choices_is_an_upstream_error() -> None:
    with pytest.raises(UpstreamError):
        chat().completion(raw({"id": "x"}), {})


def tgi_chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "object": "chat.completion.chunk",
        "id": "",
        "created": 1732000000,
        "model": "tgi",
        "system_fingerprint": "3.3.6-native",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": None,
        **extra,
    }


def test_tgi_chat_chunks_are_made_openai() -> None:
    stream = chat(stream_options={"include_usage": True}).stream()
    upstream = [
        tgi_chunk({"role": "assistant", "content": "Hel"}),
        tgi_chunk({"role": "assistant", "content": "lo"}),
        tgi_chunk({"role": "assistant", "content": ""}, "eos_token"),
        {
            **tgi_chunk({}),
            "choices": [],
            "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
        },
    ]
    out = stream.feed([*events(*upstream), b"[DONE]"])
    assert stream.done and stream.end() == []
    chunks = decoded(out)
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert [c["choices"][0]["delta"] for c in chunks[:3]] == [
        {"role": "assistant", "content": "Hel"},
        {"content": "lo"},
        {},
    ]
    assert chunks[2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[3] == {**chunks[3], "choices": [], "usage": upstream[3]["usage"]}
    final_message = accumulate(out).choices[0].message
    assert final_message.role == "assistant" and final_message.content == "Hello"


def test_tgi_tool_call_chunks_become_one_clean_call() -> None:
    stream = chat().stream()
    pieces = ['{"city', '": "Par', 'is"}']
    upstream = [
        tgi_chunk(
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "0",
                        "type": "function",
                        "function": {"name": "get_weather" if i == 0 else None, "arguments": p},
                    }
                ],
            },
            "stop" if i == len(pieces) - 1 else None,
        )
        for i, p in enumerate(pieces)
    ]
    out = stream.feed([*events(*upstream), b"[DONE]"])
    chunks = decoded(out)
    assert "id" not in chunks[1]["choices"][0]["delta"]["tool_calls"][0]
    completion = accumulate(out)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.role == "assistant"
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and call.function.name == "get_weather"
    assert call.function.arguments == '{"city": "Paris"}'


def test_whole_calls_at_index_zero_are_renumbered() -> None:
    stream = chat().stream()
    calls = [
        {
            "index": 0,
            "id": "a_tool_call",
            "type": "function",
            "function": {"name": "f", "arguments": "{}"},
        },
        {
            "index": 0,
            "id": "b_tool_call",
            "type": "function",
            "function": {"name": "g", "arguments": "{}"},
        },
    ]
    first = tgi_chunk({"role": "assistant", "tool_calls": [calls[0]]})
    second = tgi_chunk({"tool_calls": [calls[1]]}, "tool_calls")
    out = stream.feed([*events(first, second), b"[DONE]"])
    tool_calls = accumulate(out).choices[0].message.tool_calls
    assert [(c.id, c.function.name) for c in tool_calls] == [
        ("a_tool_call", "f"),
        ("b_tool_call", "g"),
    ]


def test_chat_stream_stop_sequence_is_cut() -> None:
    stream = chat(stop=["END"]).stream()
    out = stream.feed(
        events(
            tgi_chunk({"role": "assistant", "content": "one E"}),
            tgi_chunk({"role": "assistant", "content": "ND"}, "stop_sequence"),
        )
    )
    assert accumulate(out).choices[0].message.content == "one "


def test_chat_usage_on_a_normal_chunk_moves_to_its_own_chunk() -> None:
    stream = chat(stream_options={"include_usage": True}).stream()
    usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    out = stream.feed(events(tgi_chunk({"content": "x"}, "stop", usage=usage)))
    out += stream.end()  # no [DONE], like transformers serve
    chunks = decoded(out)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == usage
    assert all("usage" not in c for c in chunks[:-1])


def test_chat_error_event_before_tokens_is_a_400() -> None:
    stream = chat().stream()
    stream.feed(
        events({"error": {"message": "Input validation error: bad", "http_status_code": 422}})
    )
    assert isinstance(stream.failure, UpstreamRejectedError)
    assert stream.failure.message == "Input validation error: bad"


def test_chat_stream_without_finish_is_an_error() -> None:
    stream = chat().stream()
    stream.feed([*events(tgi_chunk({"content": "x"})), b"[DONE]"])
    with pytest.raises(UpstreamError):
        stream.end()


def test_chat_json_for_a_stream_is_replayed() -> None:
    out = chat().stream().replay(raw(TGI_TOOL_REPLY), {})
    completion = accumulate(out)
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.choices[0].message.tool_calls[0].function.name == "get_weather"
