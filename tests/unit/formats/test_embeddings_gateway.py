"""Embeddings through the gateway in process, against the fake OpenAI and the fake TEI on
loopback: the per-input cache (only what is not cached goes upstream, in one call, order
kept), single flight, Cache-Control, fallbacks that never mix two models' vectors, failover,
routes that cannot embed, and the typed in-process result."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgspec
import pytest
from fakes import openai_upstream as fake
from fakes.embeddings_api import embedding_requests, fake_vector, from_base64
from fakes.openai_upstream import FakeOpenAI
from fakes.tei_upstream import FakeTEI

from proxy import Gateway
from proxy.errors import UnsupportedEndpointError
from proxy.exchange import Result
from proxy.formats.embeddings import EMBEDDINGS
from proxy.formats.embeddings.wire import EmbeddingList

_encode = msgspec.json.encode
_decode = msgspec.json.decode


def policy(openai_url: str, tei_url: str, **extra: Any) -> dict[str, Any]:
    openai = {"type": "openai", "base_url": openai_url, "api_key": "sk-upstream-1"}
    return {
        "upstreams": {
            "oa": openai,
            "oa-backup": dict(openai),
            "tei": {"type": "huggingface", "api": "tei", "base_url": tei_url},
            "router": {"type": "huggingface", "api": "chat", "base_url": tei_url},
        },
        "models": {
            "emb": {
                "routes": [{"upstream": "oa", "model": "text-embedding-3-small"}],
                "fallbacks": ["emb-other"],
            },
            "emb-other": {"routes": [{"upstream": "oa-backup", "model": "other-embedder"}]},
            "emb-failover": {
                "strategy": "priority",
                "routes": [
                    {"upstream": "oa", "model": "first"},
                    {"upstream": "oa-backup", "model": "second"},
                ],
            },
            "tei-emb": {"routes": [{"upstream": "tei", "model": "bge-small"}]},
            "mixed": {
                "strategy": "priority",
                "routes": [
                    {"upstream": "router", "model": "chat-only"},
                    {"upstream": "tei", "model": "bge-small"},
                ],
            },
            "chat-only": {"routes": [{"upstream": "router", "model": "meta/llama"}]},
            "uncached": {"routes": [{"upstream": "oa", "model": "u"}], "cache": False},
        },
        "retry": {"attempts": 1, "initial_delay": 0.01, "max_delay": 0.05},
        "circuit_breaker": {"failures": 100},
        "cache": {"backend": "memory", "deterministic_only": True},
        **extra,
    }


@pytest.fixture(scope="module")
def tei_server() -> Iterator[FakeTEI]:
    with FakeTEI() as server:
        yield server


@pytest.fixture
def tei(tei_server: FakeTEI) -> Iterator[FakeTEI]:
    tei_server.reset()
    yield tei_server
    tei_server.reset()


@pytest.fixture
async def gateway(fake_openai: FakeOpenAI, tei: FakeTEI) -> AsyncIterator[Gateway]:
    async with Gateway.from_dict(policy(fake_openai.base_url, tei.url), env={}) as gw:
        yield gw


async def embed(
    gateway: Gateway, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    result: Result = await gateway.handle(EMBEDDINGS, _encode(body), None, "req-1", headers or {})
    assert result.body is not None
    return _decode(result.body), result.headers


def sent_inputs(fake_openai: FakeOpenAI) -> list[Any]:
    return [request.json["input"] for request in embedding_requests(fake_openai)]


def vectors(answer: dict[str, Any]) -> list[list[float]]:
    return [item["embedding"] for item in answer["data"]]


async def test_only_the_inputs_not_cached_go_upstream_in_one_call_in_order(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    first, headers = await embed(gateway, {"model": "emb", "input": ["a", "b"]})
    assert headers["x-llm-proxy-cache"] == "miss"
    assert first["usage"] == {"prompt_tokens": 2, "total_tokens": 2}
    answer, headers = await embed(gateway, {"model": "emb", "input": ["a", "new input", "b"]})
    assert sent_inputs(fake_openai) == [["a", "b"], ["new input"]]
    assert headers["x-llm-proxy-cache"] == "miss"
    assert vectors(answer) == [fake_vector("a"), fake_vector("new input"), fake_vector("b")]
    assert [item["index"] for item in answer["data"]] == [0, 1, 2]
    assert answer["usage"] == {"prompt_tokens": 2, "total_tokens": 2}  # "new input" only


async def test_a_request_whose_inputs_are_all_cached_is_a_hit_without_a_call(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    await embed(gateway, {"model": "emb", "input": ["a", "b", "c"]})
    answer, headers = await embed(
        gateway, {"model": "emb", "input": ["c", "a"], "encoding_format": "base64"}
    )
    assert len(embedding_requests(fake_openai)) == 1
    assert headers["x-llm-proxy-cache"] == "hit"
    assert headers["x-llm-proxy-attempts"] == "0"
    assert headers["x-llm-proxy-route"] == "oa/text-embedding-3-small"
    assert [from_base64(item["embedding"]) for item in answer["data"]] == [
        fake_vector("c"),
        fake_vector("a"),
    ]
    assert answer["model"] == "emb"
    assert answer["usage"] == {"prompt_tokens": 0, "total_tokens": 0}
    hits = gateway.stats()["llm_proxy_cache_requests_total"]
    assert {"labels": {"result": "hit"}, "value": 1.0} in hits


async def test_token_arrays_are_cached_per_input_too(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    await embed(gateway, {"model": "emb", "input": [1, 2, 3]})
    answer, _ = await embed(gateway, {"model": "emb", "input": [[1, 2, 3], [4]]})
    assert sent_inputs(fake_openai) == [[1, 2, 3], [[4]]]
    assert vectors(answer) == [fake_vector([1, 2, 3]), fake_vector([4])]


async def test_dimensions_and_unknown_fields_are_part_of_an_inputs_key(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    await embed(gateway, {"model": "emb", "input": ["a"]})
    shortened, _ = await embed(gateway, {"model": "emb", "input": ["a"], "dimensions": 4})
    await embed(gateway, {"model": "emb", "input": ["a"], "x_vendor": 1})
    _, headers = await embed(gateway, {"model": "emb", "input": "a", "user": "someone"})
    assert len(embedding_requests(fake_openai)) == 3
    assert headers["x-llm-proxy-cache"] == "hit"  # `user` never changes a vector
    assert vectors(shortened) == [fake_vector("a", 4)]


async def test_callers_do_not_share_entries_unless_configured(fake_openai: FakeOpenAI) -> None:
    keys = [{"name": "one", "key": "sk-one"}, {"name": "two", "key": "sk-two"}]
    body = _encode({"model": "emb", "input": ["shared?"]})
    for shared, calls in ((False, 2), (True, 1)):
        fake_openai.reset()
        data = policy(fake_openai.base_url, "http://127.0.0.1:9", keys=keys)
        data["cache"] = {"backend": "memory", "shared_across_keys": shared}
        async with Gateway.from_dict(data, env={}) as gateway:
            await gateway.handle(EMBEDDINGS, body, "Bearer sk-one", "r1")
            await gateway.handle(EMBEDDINGS, body, "Bearer sk-two", "r2")
        assert len(embedding_requests(fake_openai)) == calls


async def test_cache_control_no_store_bypasses_and_no_cache_refreshes(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    _, headers = await embed(
        gateway, {"model": "emb", "input": ["a"]}, {"cache-control": "no-store"}
    )
    assert headers["x-llm-proxy-cache"] == "bypass"
    _, headers = await embed(gateway, {"model": "emb", "input": ["a"]})
    assert headers["x-llm-proxy-cache"] == "miss"  # no-store kept nothing
    _, headers = await embed(
        gateway, {"model": "emb", "input": ["a", "b"]}, {"cache-control": "no-cache"}
    )
    assert headers["x-llm-proxy-cache"] == "miss"
    _, headers = await embed(gateway, {"model": "emb", "input": ["b", "a"]})
    assert headers["x-llm-proxy-cache"] == "hit"
    assert sent_inputs(fake_openai) == [["a"], ["a"], ["a", "b"]]


async def test_a_model_with_the_cache_off_sends_everything(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    for _ in range(2):
        _, headers = await embed(gateway, {"model": "uncached", "input": ["a"]})
        assert headers["x-llm-proxy-cache"] == "bypass"
    assert len(embedding_requests(fake_openai)) == 2


async def test_identical_concurrent_requests_make_one_upstream_call(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(fake.hang(0.3))
    body = {"model": "emb", "input": ["x", "y"]}
    answers = await asyncio.gather(*(embed(gateway, body) for _ in range(3)))
    assert len(embedding_requests(fake_openai)) == 1
    assert sorted(headers["x-llm-proxy-cache"] for _, headers in answers) == ["hit", "hit", "miss"]
    assert all(vectors(answer) == [fake_vector("x"), fake_vector("y")] for answer, _ in answers)


async def test_a_fallback_model_gets_every_input_and_fills_nothing(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    await embed(gateway, {"model": "emb", "input": ["a"]})
    fake_openai.script(fake.status(500))  # the primary route fails: the fallback answers
    answer, _ = await embed(gateway, {"model": "emb", "input": ["a", "b"]})
    models = [request.json["model"] for request in embedding_requests(fake_openai)]
    assert models == ["text-embedding-3-small", "text-embedding-3-small", "other-embedder"]
    assert sent_inputs(fake_openai)[1:] == [["b"], ["a", "b"]]
    assert answer["model"] == "emb-other"
    _, headers = await embed(gateway, {"model": "emb", "input": ["b"]})
    assert headers["x-llm-proxy-cache"] == "miss"  # the other model's vector was not kept


async def test_failover_between_routes_sends_the_same_inputs(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    await embed(gateway, {"model": "emb-failover", "input": ["a"]})
    fake_openai.script(fake.status(500))
    answer, headers = await embed(gateway, {"model": "emb-failover", "input": ["a", "b"]})
    requests = embedding_requests(fake_openai)
    assert [(r.json["model"], r.json["input"]) for r in requests[1:]] == [
        ("first", ["b"]),
        ("second", ["b"]),
    ]
    assert headers["x-llm-proxy-route"] == "oa-backup/second"
    assert vectors(answer) == [fake_vector("a"), fake_vector("b")]


async def test_routes_that_cannot_embed_are_skipped_or_the_model_is_unsupported(
    gateway: Gateway, tei: FakeTEI
) -> None:
    answer, headers = await embed(gateway, {"model": "mixed", "input": "hello world"})
    assert headers["x-llm-proxy-route"] == "tei/bge-small"
    assert vectors(answer) == [tei.vector("hello world")]
    assert answer["usage"]["prompt_tokens"] == 2  # TEI's x-compute-tokens
    with pytest.raises(UnsupportedEndpointError) as caught:
        await embed(gateway, {"model": "chat-only", "input": "x"})
    assert caught.value.code == "unsupported_endpoint" and caught.value.status == 400


async def test_the_in_process_api_returns_a_typed_list(gateway: Gateway, tei: FakeTEI) -> None:
    result = await gateway.embeddings("tei-emb", ["one", "two"])
    assert isinstance(result, EmbeddingList)
    assert [item.embedding for item in result.data] == [tei.vector("one"), tei.vector("two")]
    assert result.model == "tei-emb" and result.usage.prompt_tokens == 2
    packed = await gateway.embeddings("tei-emb", "one", encoding_format="base64", dimensions=4)
    assert isinstance(packed.data[0].embedding, str)
    assert len(from_base64(packed.data[0].embedding)) == 4
    sent = tei.requests[-1].json
    assert sent == {"inputs": ["one"]}  # dimensions are applied by the proxy, not sent
