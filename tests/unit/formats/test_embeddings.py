"""The embeddings door on JSON: validation naming the field, the body sent upstream, the
answer assembled in input order and form (float <-> base64), malformed upstream replies."""

from __future__ import annotations

import base64
import struct
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.accounting import RequestRecord
from proxy.config import ParamBounds
from proxy.errors import InvalidRequestError, UpstreamError
from proxy.formats.base import DecodeContext
from proxy.formats.embeddings import EMBEDDINGS, EmbeddingsRequest
from proxy.formats.embeddings.inputs import MAX_INPUTS, estimate_tokens, read_inputs
from proxy.formats.embeddings.vectors import VectorError, as_form, from_base64, to_base64
from proxy.keys import Caller
from proxy.loader import load_dict
from proxy.policy import Policy, compile_policy

_encode = msgspec.json.encode
_decode = msgspec.json.decode


def make_policy() -> Policy:
    upstream = {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-x"}
    return compile_policy(
        load_dict(
            {
                "upstreams": {"oa": upstream},
                "models": {"emb": {"routes": [{"upstream": "oa", "model": "up-emb"}]}},
                "cache": {"backend": "none"},
            },
            env={},
        )
    )


POLICY = make_policy()
ROUTE = POLICY.models["emb"].routes[0]


async def decode(body: dict[str, Any] | bytes) -> EmbeddingsRequest:
    raw = body if isinstance(body, bytes) else _encode(body)
    context = DecodeContext(POLICY, Caller("anonymous"), {})
    return await EMBEDDINGS.decode(raw, context)


def packed(values: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


def reply(vectors: list[Any], tokens: int | None = 5, model: str = "up-emb") -> bytes:
    data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    body: dict[str, Any] = {"object": "list", "data": data, "model": model}
    if tokens is not None:
        body["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
    return _encode(body)


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "emb"}, "input"),
        ({"model": "emb", "input": ""}, "input"),
        ({"model": "emb", "input": []}, "input"),
        ({"model": "emb", "input": ["a", ""]}, "input[1]"),
        ({"model": "emb", "input": ["a", 1]}, "input[1]"),
        ({"model": "emb", "input": [1, 2.5]}, "input"),
        ({"model": "emb", "input": [1, True]}, "input"),
        ({"model": "emb", "input": [[1], []]}, "input[1]"),
        ({"model": "emb", "input": [[1], ["a"]]}, "input[1]"),
        ({"model": "emb", "input": [[[1]]]}, "input[0]"),
        ({"model": "emb", "input": [{"text": "a"}]}, "input"),
        ({"model": "emb", "input": 5}, "input"),
        ({"model": "emb", "input": ["x"] * (MAX_INPUTS + 1)}, "input"),
        ({"model": "emb", "input": "a", "dimensions": 0}, "dimensions"),
        ({"model": "emb", "input": "a", "dimensions": 7.5}, "dimensions"),
        ({"model": "emb", "input": [-1]}, "input"),
        ({"model": "emb", "input": [[1], [2**32]]}, "input[1]"),
        ({"model": "emb", "input": "a", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "a"}, "model"),
        ({"model": "", "input": "a"}, "model"),
        ({"model": "emb", "input": "a", "user": 5}, "user"),
    ],
)
async def test_bad_requests_are_400s_naming_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        await decode(body)
    assert caught.value.status == 400
    assert caught.value.param == param


async def test_duplicate_fields_and_non_json_are_400s() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        await decode(b'{"model":"emb","input":"a","input":"b"}')
    assert caught.value.param == "input"
    with pytest.raises(InvalidRequestError):
        await decode(b"not json")


def test_the_four_input_shapes_become_a_list_of_inputs() -> None:
    assert read_inputs("hello") == ["hello"]
    assert read_inputs(["a", "b"]) == ["a", "b"]
    assert read_inputs([1, 2, 3]) == [[1, 2, 3]]
    assert read_inputs([[1, 2], [3]]) == [[1, 2], [3]]


def test_the_estimate_is_bytes_over_four_rounded_up_and_one_token_per_id() -> None:
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2
    assert estimate_tokens("é") == 1  # two UTF-8 bytes
    assert estimate_tokens([5, 6, 7]) == 3


async def test_the_request_estimates_every_input_and_never_streams() -> None:
    request = await decode({"model": "emb", "input": ["abcdefgh", "ab"], "stream": True})
    assert request.estimate == 3
    assert request.stream is False
    assert request.deterministic is True
    assert request.serves(frozenset({"chat", "embeddings"}))
    assert not request.serves(frozenset({"chat", "messages"}))


# -- vectors ---------------------------------------------------------------------------------


def test_float_and_base64_convert_both_ways_exactly_for_float32_values() -> None:
    values = [0.5, -0.25, 0.125, 1.0]
    as_text = to_base64(values)
    assert as_text == packed(values)
    assert from_base64(as_text) == values
    assert _decode(as_form(_encode(values), "base64")) == as_text
    assert _decode(as_form(_encode(as_text), "float")) == values


def test_a_vector_already_in_the_wanted_form_is_passed_as_written() -> None:
    raw = b"[0.1,0.2,3e-05]"
    assert bytes(as_form(raw, "float")) == raw


@pytest.mark.parametrize("raw", [b"null", b'"not base64!"', b'"AAA="', b'["a"]', b"{}"])
def test_vectors_that_are_neither_form_are_refused(raw: bytes) -> None:
    with pytest.raises(VectorError):
        as_form(raw, "float" if raw.startswith(b'"') else "base64")


# -- the call --------------------------------------------------------------------------------


async def test_the_call_is_the_clients_body_with_the_model_rewritten() -> None:
    body = b'{"model":"emb","input":["a","b"],"dimensions":8,"user":"u-1","x_new":1.5E2}'
    request = await decode(body)
    call = request.call(ROUTE, "up-emb", "req-1")
    assert call.api == "embeddings" and call.model == "up-emb"
    assert call.body == (
        b'{"model":"up-emb","input":["a","b"],"dimensions":8,"user":"u-1","x_new":1.5E2}'
    )


async def test_model_params_apply_only_to_fields_an_embeddings_body_has() -> None:
    request = await decode({"model": "emb", "input": "a"})
    request.apply_params(
        {"dimensions": ParamBounds(default=64), "max_tokens": ParamBounds(default=10)}
    )
    sent = _decode(request.call(ROUTE, "up", "r").body)
    assert sent["dimensions"] == 64 and "max_tokens" not in sent
    clamped = await decode({"model": "emb", "input": "a", "dimensions": 4096})
    clamped.apply_params({"dimensions": ParamBounds(max=256)})
    assert _decode(clamped.call(ROUTE, "up", "r").body)["dimensions"] == 256


# -- the answer ------------------------------------------------------------------------------


async def answer(
    body: dict[str, Any], upstream_reply: bytes
) -> tuple[dict[str, Any], RequestRecord]:
    request = await decode(body)
    call = request.call(ROUTE, "up-emb", "req-1")
    record = RequestRecord("req-1", 0.0, "embeddings")
    answer = request.answer(upstream_reply, call, "emb", "oa", record)
    return _decode(answer), record


async def test_the_answer_has_openais_shape_the_public_model_and_the_upstreams_usage() -> None:
    vectors = [[0.5, 0.25], [0.125, -1.0]]
    data, record = await answer(
        {"model": "emb", "input": ["a", "b"], "encoding_format": "float"}, reply(vectors, 7)
    )
    assert list(data) == ["object", "data", "model", "usage"]
    assert data["object"] == "list" and data["model"] == "emb"
    assert data["data"] == [
        {"object": "embedding", "index": 0, "embedding": vectors[0]},
        {"object": "embedding", "index": 1, "embedding": vectors[1]},
    ]
    assert data["usage"] == {"prompt_tokens": 7, "total_tokens": 7}
    assert (record.prompt_tokens, record.completion_tokens) == (7, 0)
    assert record.upstream_model == "up-emb"


async def test_float_vectors_become_base64_when_the_client_asked_for_it() -> None:
    data, _ = await answer(
        {"model": "emb", "input": "a", "encoding_format": "base64"}, reply([[0.5, -0.25]])
    )
    assert data["data"][0]["embedding"] == packed([0.5, -0.25])


async def test_base64_vectors_become_floats_when_the_client_asked_for_floats() -> None:
    data, _ = await answer({"model": "emb", "input": "a"}, reply([packed([0.5, -0.25])]))
    assert data["data"][0]["embedding"] == [0.5, -0.25]


async def test_items_out_of_order_are_put_back_in_input_order() -> None:
    body = _encode(
        {
            "data": [
                {"object": "embedding", "index": 1, "embedding": [2.0]},
                {"object": "embedding", "index": 0, "embedding": [1.0]},
            ],
            "model": "m",
            "usage": {"prompt_tokens": 2, "total_tokens": 2},
        }
    )
    data, _ = await answer({"model": "emb", "input": ["a", "b"]}, body)
    assert [item["embedding"] for item in data["data"]] == [[1.0], [2.0]]


async def test_without_usage_the_proxys_estimate_is_counted() -> None:
    data, record = await answer({"model": "emb", "input": "abcdefgh"}, reply([[1.0]], None))
    assert data["usage"]["prompt_tokens"] == 2 == record.prompt_tokens


@pytest.mark.parametrize(
    "upstream_reply",
    [
        b"<html>502</html>",
        b'{"data": "nope"}',
        reply([[1.0]]),  # one vector for two inputs
        reply([[1.0], None]),
        reply([[1.0], {"x": 1}]),
        _encode({"data": [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [2.0]}]}),
    ],
)
async def test_malformed_replies_are_upstream_errors(upstream_reply: bytes) -> None:
    with pytest.raises(UpstreamError):
        await answer({"model": "emb", "input": ["a", "b"]}, upstream_reply)


async def test_a_float_vector_that_cannot_be_base64_is_an_upstream_error() -> None:
    with pytest.raises(UpstreamError):
        await answer(
            {"model": "emb", "input": "a", "encoding_format": "base64"}, reply([["x", "y"]])
        )


async def test_token_ids_written_as_floats_are_sent_as_integers() -> None:
    request = await decode(b'{"model":"emb","input":[[1.0,2],[3]]}')
    assert request.inputs == [[1, 2], [3]]
    assert _decode(request.call(ROUTE, "up", "r").body)["input"] == [[1, 2], [3]]
    as_written = await decode(b'{"model":"emb","input":[1,2]}')
    assert as_written.call(ROUTE, "up", "r").body == b'{"model":"up","input":[1,2]}'


async def test_a_reply_needing_no_change_is_passed_on_with_only_the_model_swapped() -> None:
    upstream = (
        b'{"object":"list","data":[{"object":"embedding","index":0,"embedding":[1.50E-1, 2]}],'
        b'"model":"up-emb","usage":{"prompt_tokens":3,"total_tokens":3},"x_extra":true}'
    )
    request = await decode({"model": "emb", "input": "a"})
    call = request.call(ROUTE, "up-emb", "r")
    record = RequestRecord("r", 0.0, "embeddings")
    assert request.answer(upstream, call, "emb", "oa", record) == upstream.replace(
        b'"model":"up-emb"', b'"model":"emb"'
    )
    converted = await decode({"model": "emb", "input": "a", "encoding_format": "base64"})
    call = converted.call(ROUTE, "up-emb", "r")
    rebuilt = _decode(converted.answer(upstream, call, "emb", "oa", record))
    assert rebuilt["data"][0]["embedding"] == packed([0.15, 2.0]) and "x_extra" not in rebuilt


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {"model": st.just("emb"), "input": json_values},
        optional={"dimensions": json_values, "encoding_format": json_values, "x": json_values},
    )
)
async def test_any_json_body_is_a_request_or_a_400(body: dict[str, Any]) -> None:
    """Whatever the values, decoding and building the call either work or are a 400."""
    try:
        raw = _encode(body)
    except (OverflowError, msgspec.EncodeError):
        return  # NaN and infinities are not JSON
    try:
        request = await decode(raw)
    except InvalidRequestError:
        return
    assert request.inputs and request.estimate >= 0
    sent = _decode(request.call(ROUTE, "up", "r").body)
    assert sent["model"] == "up"
