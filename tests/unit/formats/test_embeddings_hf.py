"""HuggingFace embeddings translation on JSON: OpenAI's body to TEI's /embed and to the
feature-extraction pipeline, their bare arrays back to OpenAI's list, TEI's error statuses."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import pytest

from proxy.config import HuggingFaceUpstreamConfig, Timeouts
from proxy.errors import (
    InvalidRequestError,
    RateLimitError,
    UpstreamError,
    UpstreamRejectedError,
)
from proxy.loader import ConfigError, load_text
from proxy.upstreams.base import UpstreamCall
from proxy.upstreams.hf_embed import FeatureExtraction, TEIEmbed, mean_pooled, read_vectors
from proxy.upstreams.huggingface import HuggingFaceUpstream
from proxy.upstreams.registry import serves

_encode = msgspec.json.encode
_decode = msgspec.json.decode


def call(body: dict[str, Any], model: str = "BAAI/bge-small-en") -> UpstreamCall:
    return UpstreamCall(
        _encode({"model": model, **body}), model, Timeouts(), "r-1", api="embeddings"
    )


def test_tei_gets_texts_or_token_ids_as_a_batch() -> None:
    tei = TEIEmbed("http://tei:80")
    texts = tei.translate(call({"input": ["a", "b"]}))
    assert texts.url == "http://tei:80/embed"
    assert _decode(texts.payload) == {"inputs": ["a", "b"]}
    assert _decode(tei.translate(call({"input": "a"})).payload) == {"inputs": ["a"]}
    ids = tei.translate(call({"input": [1, 2, 3]}))
    assert _decode(ids.payload) == {"inputs": [[1, 2, 3]]} and ids.count == 1
    rows = tei.translate(call({"input": [[1], [2, 3]]}))
    assert _decode(rows.payload) == {"inputs": [[1], [2, 3]]} and rows.count == 2


def test_feature_extraction_url_and_payload() -> None:
    pipeline = FeatureExtraction("https://router.huggingface.co/hf-inference")
    translation = pipeline.translate(call({"input": ["a", "b"], "encoding_format": "base64"}))
    assert translation.url == (
        "https://router.huggingface.co/hf-inference/models/BAAI/bge-small-en"
        "/pipeline/feature-extraction"
    )
    assert _decode(translation.payload) == {"inputs": ["a", "b"]}


def test_feature_extraction_refuses_token_arrays_before_any_call() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        FeatureExtraction("http://hf").translate(call({"input": [[1, 2]]}))
    assert caught.value.param == "input"


@pytest.mark.parametrize("model", ["../secrets", "a//b", "a/./b"])
def test_model_ids_cannot_leave_the_models_path(model: str) -> None:
    with pytest.raises(InvalidRequestError):
        FeatureExtraction("http://hf").translate(call({"input": "a"}, model=model))


def test_the_reply_is_openais_list_with_usage_from_x_compute_tokens() -> None:
    translation = TEIEmbed("http://tei").translate(call({"input": ["a", "b"]}))
    body = translation.reply(b"[[0.5,0.5],[1,0]]", {"x-compute-tokens": "9"}, "tei")
    assert _decode(body) == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [0.5, 0.5]},
            {"object": "embedding", "index": 1, "embedding": [1.0, 0.0]},
        ],
        "model": "BAAI/bge-small-en",
        "usage": {"prompt_tokens": 9, "total_tokens": 9},
    }


def test_without_a_token_count_the_reply_has_no_usage() -> None:
    translation = FeatureExtraction("http://hf").translate(call({"input": "a"}))
    assert "usage" not in _decode(translation.reply(b"[0.5,0.5]", {}, "hf"))


def test_dimensions_keep_the_first_values_normalised_again() -> None:
    translation = TEIEmbed("http://tei").translate(call({"input": "a", "dimensions": 2}))
    vector = _decode(translation.reply(b"[[3,4,12]]", {}, "tei"))["data"][0]["embedding"]
    assert vector == pytest.approx([0.6, 0.8])
    assert math.isclose(math.hypot(*vector), 1.0)


def test_vector_shapes_lone_pooled_and_per_token() -> None:
    assert read_vectors(b"[1.0,2.0]", 1, "hf") == [[1.0, 2.0]]
    assert read_vectors(b"[[1.0,2.0],[3,4]]", 2, "hf") == [[1.0, 2.0], [3.0, 4.0]]
    per_token = b"[[[1,2],[3,4]],[[5,5]]]"
    assert read_vectors(per_token, 2, "hf") == [[2.0, 3.0], [5.0, 5.0]]
    assert mean_pooled([[0.0, 2.0], [2.0, 0.0]]) == [1.0, 1.0]


@pytest.mark.parametrize(
    ("body", "count"),
    [(b"not json", 1), (b"[[1.0]]", 2), (b'{"error":"x"}', 1), (b'[["a"]]', 1), (b"[[]]", 1)],
)
def test_replies_that_are_not_one_vector_per_input_are_upstream_errors(
    body: bytes, count: int
) -> None:
    with pytest.raises(UpstreamError):
        read_vectors(body, count, "hf")


def tei_error(status: int, body: dict[str, Any]) -> Exception:
    return TEIEmbed.error("tei", status, _encode(body), {})


def test_tei_validation_errors_are_the_clients() -> None:
    batch = tei_error(413, {"error": "batch size 40 > maximum allowed batch size 32",
                            "error_type": "validation"})  # fmt: skip
    assert isinstance(batch, UpstreamRejectedError) and batch.param == "input"
    assert "batch size 40" in batch.message
    long = tei_error(413, {"error": "Input validation error: `inputs` must have less than 512 "
                           "tokens. Given: 600", "error_type": "validation"})  # fmt: skip
    assert isinstance(long, UpstreamRejectedError) and long.code == "context_length_exceeded"
    empty = tei_error(400, {"error": "`inputs` cannot be empty", "error_type": "empty"})
    assert isinstance(empty, UpstreamRejectedError)


def test_tei_backend_overload_and_unhealthy_are_the_upstreams() -> None:
    backend = tei_error(424, {"error": "Backend error", "error_type": "backend"})
    assert type(backend) is UpstreamError and backend.cause == "424"
    assert isinstance(tei_error(429, {"error": "overloaded", "error_type": "overloaded"}),
                      RateLimitError)  # fmt: skip
    assert type(tei_error(503, {"error": "unhealthy", "error_type": "unhealthy"})) is UpstreamError


async def test_what_each_hf_api_serves() -> None:
    def hf(api: str) -> HuggingFaceUpstreamConfig:
        return HuggingFaceUpstreamConfig(api=api, base_url="http://hf")  # type: ignore[arg-type]

    assert serves(hf("tei")) == frozenset({"embeddings"})
    assert "embeddings" in serves(hf("text-generation"))
    assert "embeddings" not in serves(hf("chat")) | serves(hf("tgi"))
    tei = HuggingFaceUpstream("tei", hf("tei"))
    classic = HuggingFaceUpstream("hf", hf("text-generation"))
    chat = HuggingFaceUpstream("router", hf("chat"))
    assert (tei.generates, tei.native_apis) == (False, frozenset({"embeddings"}))
    assert (classic.generates, classic.native_apis) == (True, frozenset({"embeddings"}))
    assert (chat.generates, chat.native_apis) == (True, frozenset())
    for upstream in (tei, classic, chat):
        await upstream.close()


async def test_a_tei_upstream_refuses_to_generate_and_a_chat_one_to_embed() -> None:
    config = HuggingFaceUpstreamConfig(api="tei", base_url="http://127.0.0.1:9")
    tei = HuggingFaceUpstream("tei", config)
    router = HuggingFaceUpstream("router", HuggingFaceUpstreamConfig(api="chat"))
    try:
        with pytest.raises(UpstreamError):
            await tei.complete(call({"messages": []}))
        with pytest.raises(UpstreamError):
            await router.embed(call({"input": "a"}))
    finally:
        await tei.close()
        await router.close()


def test_a_tei_upstream_needs_its_base_url() -> None:
    text = "upstreams:\n  tei: {type: huggingface, api: tei}\nmodels: {}\n"
    with pytest.raises(ConfigError) as caught:
        load_text(text, env={})
    assert [(p.path, p.message) for p in caught.value.problems] == [
        ("upstreams.tei.base_url", "api 'tei' needs the TEI server's base_url")
    ]
