"""What a request may ask of the worker: honoured fields become Sampling, the rest a 400 that
names the field (pure: no torch needed)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.errors import InvalidRequestError
from proxy.worker.protocol import chat_messages, decode_params, sampling_of

USER = [{"role": "user", "content": "hi"}]


def body(**fields: Any) -> bytes:
    return json.dumps({"model": "tiny", "messages": USER, **fields}).encode()


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"presence_penalty": -1}, "presence_penalty"),
        ({"logit_bias": {"12": 5}}, "logit_bias"),
        ({"modalities": ["text", "audio"]}, "modalities"),
    ],
)
def test_fields_the_worker_cannot_honour_are_a_400_naming_them(
    fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        decode_params(body(**fields))
    assert raised.value.param == param
    assert param in raised.value.message
    assert raised.value.status == 400


def test_harmless_and_unknown_fields_are_accepted() -> None:
    params = decode_params(
        body(
            n=1,
            logprobs=False,
            tool_choice="none",
            response_format={"type": "text"},
            frequency_penalty=0,
            user="u1",
            metadata={"a": "b"},
            store=False,
            some_new_openai_field=True,
        )
    )
    assert params.model == "tiny"


def test_sampling_defaults_and_limits() -> None:
    sampling = sampling_of(decode_params(body()), default_max_tokens=77)
    assert (sampling.max_new_tokens, sampling.temperature, sampling.top_p) == (77, 1.0, 1.0)
    assert not sampling.greedy and sampling.seed is None and sampling.stop == ()
    both = sampling_of(decode_params(body(max_tokens=5, max_completion_tokens=9)))
    assert both.max_new_tokens == 9
    greedy = sampling_of(decode_params(body(temperature=0, seed=3, max_tokens=4)))
    assert greedy.greedy and greedy.seed == 3 and greedy.max_new_tokens == 4


def test_stop_is_a_string_or_a_list_of_at_most_four() -> None:
    assert sampling_of(decode_params(body(stop="END"))).stop == ("END",)
    assert sampling_of(decode_params(body(stop=["a", "", "b"]))).stop == ("a", "b")
    with pytest.raises(InvalidRequestError) as raised:
        sampling_of(decode_params(body(stop=["1", "2", "3", "4", "5"])))
    assert raised.value.param == "stop"


def test_bad_values_name_their_field() -> None:
    with pytest.raises(InvalidRequestError) as raised:
        decode_params(body(max_tokens="ten"))
    assert raised.value.param == "max_tokens"
    with pytest.raises(InvalidRequestError) as raised:
        decode_params(body(temperature=3))
    assert raised.value.param == "temperature"
    with pytest.raises(InvalidRequestError):
        decode_params(b"{not json")
    with pytest.raises(InvalidRequestError) as raised:
        decode_params(body(stream_options={"include_usage": True}))
    assert raised.value.param == "stream_options"


def test_messages_become_template_input() -> None:
    params = decode_params(
        json.dumps(
            {
                "messages": [
                    {"role": "developer", "content": "be brief"},
                    {
                        "role": "user",
                        "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                    },
                    {"role": "assistant", "content": None},
                ]
            }
        ).encode()
    )
    assert chat_messages(params) == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "a\nb"},
        {"role": "assistant", "content": ""},
    ]


def test_non_text_parts_are_a_400_naming_the_message() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    params = decode_params(body(messages=[{"role": "user", "content": [image]}]))
    with pytest.raises(InvalidRequestError) as raised:
        chat_messages(params)
    assert raised.value.param == "messages[0].content"
