"""The worker's side of the embeddings wire: the four shapes of `input`, every bad input a 400
naming its field, base64 as OpenAI encodes it, and the reply's shape (pure: no torch needed)."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest

from proxy.errors import InvalidRequestError
from proxy.worker.embed_protocol import (
    MAX_INPUTS,
    check_dimensions,
    check_token_rows,
    decode_embedding_params,
    embedding_body,
    from_base64,
    to_base64,
)


def body(**fields: Any) -> bytes:
    return json.dumps({"model": "enc", **fields}).encode()


@pytest.mark.parametrize(
    ("value", "texts", "rows"),
    [
        ("hello", ["hello"], None),
        (["a", "b c"], ["a", "b c"], None),
        ([5, 6, 7], None, [[5, 6, 7]]),
        ([[5, 6], [7]], None, [[5, 6], [7]]),
    ],
)
def test_the_four_shapes_of_input(value: Any, texts: Any, rows: Any) -> None:
    params, inputs = decode_embedding_params(body(input=value))
    assert (inputs.texts, inputs.token_rows) == (texts, rows)
    assert len(inputs) == len(texts or rows)
    assert params.encoding_format == "float" and params.dimensions is None


@pytest.mark.parametrize(
    ("value", "param"),
    [
        ("", "input"),
        ([], "input"),
        (["ok", ""], "input[1]"),
        (["text", 5], "input"),
        ([[1, 2], []], "input[1]"),
        ([[1, "x"]], "input[0]"),
        ([True, 2], "input"),
        ({"text": "x"}, "input"),
        (7, "input"),
        (None, "input"),
        (["x"] * (MAX_INPUTS + 1), "input"),
    ],
)
def test_bad_inputs_are_a_400_naming_the_field(value: Any, param: str) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        decode_embedding_params(body(input=value))
    assert raised.value.status == 400 and raised.value.param == param


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "x", "dimensions": 0}, "dimensions"),
        ({"input": "x", "dimensions": "8"}, "dimensions"),
        ({}, "input"),
    ],
)
def test_bad_options_are_a_400_naming_the_field(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        decode_embedding_params(body(**fields))
    assert raised.value.param == param


def test_a_body_that_is_not_json_is_a_400() -> None:
    with pytest.raises(InvalidRequestError, match="not valid JSON"):
        decode_embedding_params(b"{input")


def test_unknown_fields_are_ignored() -> None:
    params, inputs = decode_embedding_params(body(input="x", user="u", something_new=True))
    assert inputs.texts == ["x"] and params.user == "u"


def test_base64_is_little_endian_float32_as_the_sdk_reads_it() -> None:
    np = pytest.importorskip("numpy")
    values = [0.25, -1.5, 3.0e-3, 0.0]
    encoded = to_base64(values)
    assert base64.b64decode(encoded) == struct.pack("<4f", *values)
    decoded = np.frombuffer(base64.b64decode(encoded), dtype="float32")  # the openai SDK's way
    assert decoded.tolist() == pytest.approx(values)
    assert from_base64(encoded) == pytest.approx(values)


def test_token_rows_must_fit_the_model() -> None:
    check_token_rows([[0, 9], [3]], vocab_size=10, max_tokens=2)
    with pytest.raises(InvalidRequestError) as raised:
        check_token_rows([[1], [1, 2, 3]], vocab_size=10, max_tokens=2)
    assert raised.value.code == "context_length_exceeded" and "input 1 has 3" in str(raised.value)
    with pytest.raises(InvalidRequestError) as raised:
        check_token_rows([[1], [10]], vocab_size=10, max_tokens=5)
    assert raised.value.param == "input[1]"
    with pytest.raises(InvalidRequestError):
        check_token_rows([[-1]], vocab_size=10, max_tokens=5)


def test_dimensions_may_not_exceed_the_model() -> None:
    check_dimensions(None, 32)
    check_dimensions(32, 32)
    with pytest.raises(InvalidRequestError) as raised:
        check_dimensions(33, 32)
    assert raised.value.param == "dimensions"


def test_the_reply_is_openai_embeddings_list() -> None:
    reply = json.loads(embedding_body("enc", [[0.6, 0.8], "AAAAAA=="], prompt_tokens=7))
    assert reply == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [0.6, 0.8]},
            {"object": "embedding", "index": 1, "embedding": "AAAAAA=="},
        ],
        "model": "enc",
        "usage": {"prompt_tokens": 7, "total_tokens": 7},
    }
