"""`POST /v1/embeddings` through the real proxy, driven by the official openai SDK, against the
fake OpenAI's /v1/embeddings and the fake TEI (its /embed and the feature-extraction
pipeline): both encodings, the per-input cache, failover, unsupported models, validation,
limits, spend and metrics."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from fakes import openai_upstream as fake
from fakes.embeddings_api import embedding_requests, fake_vector
from fakes.openai_upstream import FakeOpenAI
from fakes.proxy_harness import UPSTREAM_KEY, ProxyLauncher, RunningProxy
from fakes.tei_upstream import FakeTEI, backend_error

from .conftest import assert_openai_error

KEY = "sk-embed-client"
MAX_BODY = 64 * 1024


def embeddings_policy(openai_url: str, tei_url: str) -> dict[str, Any]:
    oa = {"type": "openai", "base_url": openai_url, "api_key": UPSTREAM_KEY}
    return {
        "server": {"drain_timeout": 1, "max_body_bytes": MAX_BODY},
        "upstreams": {
            "oa": oa,
            "oa-b": dict(oa),
            "tei": {"type": "huggingface", "api": "tei", "base_url": tei_url},
            "hf": {"type": "huggingface", "api": "text-generation", "base_url": tei_url},
            "router": {"type": "huggingface", "api": "chat", "base_url": tei_url},
        },
        "models": {
            "emb": {"routes": [{"upstream": "oa", "model": "text-embedding-3-small"}]},
            "emb-failover": {
                "strategy": "priority",
                "routes": [
                    {"upstream": "oa", "model": "emb-first"},
                    {"upstream": "oa-b", "model": "emb-second"},
                ],
            },
            "tei-emb": {"routes": [{"upstream": "tei", "model": "BAAI/bge-small-en-v1.5"}]},
            "hf-emb": {"routes": [{"upstream": "hf", "model": "sentence-transformers/minilm"}]},
            "chat-only": {"routes": [{"upstream": "router", "model": "meta-llama/Llama-3.1-8B"}]},
        },
        "keys": [{"name": "embedder", "key": KEY}],
        "retry": {"attempts": 1, "initial_delay": 0.01, "max_delay": 0.05},
        "circuit_breaker": {"failures": 100},
        "cache": {"backend": "memory"},
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


@pytest.fixture(scope="module")
def embed_proxy(
    proxy_launcher: ProxyLauncher, fake_openai_server: FakeOpenAI, tei_server: FakeTEI
) -> Iterator[RunningProxy]:
    running = proxy_launcher.start(embeddings_policy(fake_openai_server.base_url, tei_server.url))
    yield running
    running.stop()


@pytest.fixture
def client(embed_proxy: RunningProxy) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=embed_proxy.base_url, api_key=KEY, max_retries=0, timeout=20) as c:
        yield c


def fresh(*texts: str) -> list[str]:
    """Inputs no other test sent (the proxy's cache lives as long as the module)."""
    tag = uuid.uuid4().hex[:8]
    return [f"{text} {tag}" for text in texts]


def test_the_sdks_default_base64_and_floats_carry_the_upstreams_vectors(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    texts = fresh("alpha", "beta")
    packed = client.embeddings.create(model="emb", input=texts)  # the SDK asks for base64
    assert packed.model == "emb" and packed.object == "list"
    assert [item.index for item in packed.data] == [0, 1]
    assert [item.embedding for item in packed.data] == [fake_vector(t) for t in texts]
    sent = embedding_requests(fake_openai)[-1].json
    assert sent["model"] == "text-embedding-3-small"
    assert sent["encoding_format"] == "base64" and sent["input"] == texts
    assert packed.usage.prompt_tokens == packed.usage.total_tokens == 4
    text = fresh("gamma")
    floats = client.embeddings.create(model="emb", input=text, encoding_format="float")
    assert embedding_requests(fake_openai)[-1].json["encoding_format"] == "float"
    assert floats.data[0].embedding == fake_vector(text[0])


def test_dimensions_user_and_token_arrays_pass_through(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    ids = [[int(uuid.uuid4().int % 50000), 7, 9], [11, 13]]
    reply = client.embeddings.create(model="emb", input=ids, dimensions=4, user="user-42")
    sent = embedding_requests(fake_openai)[-1].json
    assert sent["input"] == ids and sent["dimensions"] == 4 and sent["user"] == "user-42"
    assert [item.embedding for item in reply.data] == [fake_vector(row, 4) for row in ids]
    assert reply.usage.prompt_tokens == 5  # one token per id


def test_partly_cached_requests_send_only_the_new_inputs(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    a, new, b = fresh("first", "second", "third")
    client.embeddings.create(model="emb", input=[a, b])
    raw = client.embeddings.with_raw_response.create(model="emb", input=[a, new, b])
    assert [request.json["input"] for request in embedding_requests(fake_openai)] == [
        [a, b],
        [new],
    ]
    assert raw.headers["x-llm-proxy-cache"] == "miss"
    reply = raw.parse()
    assert [item.embedding for item in reply.data] == [fake_vector(t) for t in (a, new, b)]
    assert reply.usage.prompt_tokens == 2  # the tokens of what went upstream
    again = client.embeddings.with_raw_response.create(model="emb", input=[b, new])
    assert again.headers["x-llm-proxy-cache"] == "hit"
    assert again.headers["x-llm-proxy-attempts"] == "0"
    assert len(embedding_requests(fake_openai)) == 2
    assert [item.embedding for item in again.parse().data] == [fake_vector(b), fake_vector(new)]


def test_failover_when_the_first_route_fails(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(fake.status(500))
    texts = fresh("failover")
    raw = client.embeddings.with_raw_response.create(model="emb-failover", input=texts)
    assert raw.headers["x-llm-proxy-route"] == "oa-b/emb-second"
    assert raw.headers["x-llm-proxy-attempts"] == "2"
    assert [r.json["model"] for r in embedding_requests(fake_openai)] == ["emb-first", "emb-second"]
    assert raw.parse().data[0].embedding == fake_vector(texts[0])


def test_a_failing_upstream_is_an_openai_error_the_sdk_raises(
    client: openai.OpenAI, fake_openai: FakeOpenAI, tei: FakeTEI
) -> None:
    fake_openai.script(fake.garbage())
    with pytest.raises(openai.APIStatusError) as caught:
        client.embeddings.create(model="emb", input=fresh("garbage"))
    assert caught.value.status_code == 502
    tei.script(backend_error())
    with pytest.raises(openai.APIStatusError) as caught:
        client.embeddings.create(model="tei-emb", input=fresh("backend"))
    assert caught.value.status_code == 502
    assert assert_openai_error(caught.value.response.json())["code"] == "upstream_error"


def test_tei_embeds_texts_and_token_ids_with_its_token_count(
    client: openai.OpenAI, tei: FakeTEI
) -> None:
    texts = fresh("the quick fox")
    reply = client.embeddings.create(model="tei-emb", input=texts)
    assert reply.data[0].embedding == tei.vector(texts[0])
    assert tei.requests[-1].path == "/embed" and tei.requests[-1].json == {"inputs": texts}
    assert reply.usage.prompt_tokens == 4  # TEI's x-compute-tokens
    ids = client.embeddings.create(model="tei-emb", input=[101, 2023, 102], encoding_format="float")
    assert ids.data[0].embedding == pytest.approx(tei.vector([101, 2023, 102]))


def test_a_tei_refusal_is_the_clients_400(client: openai.OpenAI, tei: FakeTEI) -> None:
    tei.max_batch_size = 2
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="tei-emb", input=fresh("a", "b", "c"))
    error = assert_openai_error(caught.value.response.json())
    assert "maximum allowed batch size" in error["message"] and error["param"] == "input"


def test_the_feature_extraction_pipeline_and_mean_pooling(
    client: openai.OpenAI, tei: FakeTEI
) -> None:
    tei.pooled = False  # one vector per word: the proxy mean-pools
    text = fresh("two words")[0]
    reply = client.embeddings.create(model="hf-emb", input=text, encoding_format="float")
    words = [tei.vector(word) for word in text.split()]
    expected = [sum(column) / len(words) for column in zip(*words, strict=True)]
    assert reply.data[0].embedding == pytest.approx(expected)
    request = tei.requests[-1]
    assert request.path == "/models/sentence-transformers/minilm/pipeline/feature-extraction"
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="hf-emb", input=[[1, 2, 3]])
    assert caught.value.body is not None and "input" in str(caught.value.body)


def test_a_model_that_cannot_embed_is_unsupported_endpoint(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="chat-only", input="x")
    error = assert_openai_error(caught.value.response.json())
    assert error["code"] == "unsupported_endpoint" and error["param"] == "model"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "emb", "input": ""}, "input"),
        ({"model": "emb", "input": ["ok", ""]}, "input[1]"),
        ({"model": "emb", "input": ["x"] * 2049}, "input"),
        ({"model": "emb", "input": [[1, "2"]]}, "input[0]"),
        ({"model": "emb", "input": [[[1]]]}, "input[0]"),
        ({"model": "emb", "input": "x", "dimensions": 0}, "dimensions"),
        ({"model": "emb", "input": "x", "encoding_format": "binary"}, "encoding_format"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_nothing_goes_upstream(
    embed_proxy: RunningProxy, fake_openai: FakeOpenAI, body: dict[str, Any], param: str
) -> None:
    answer = httpx.post(
        f"{embed_proxy.base_url}/embeddings",
        json=body,
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=10,
    )
    assert answer.status_code == 400
    assert assert_openai_error(answer.json())["param"] == param
    assert embedding_requests(fake_openai) == []


def test_a_body_over_the_limit_is_413(embed_proxy: RunningProxy, fake_openai: FakeOpenAI) -> None:
    body = {"model": "emb", "input": ["x" * 1000] * 100}
    answer = httpx.post(
        f"{embed_proxy.base_url}/embeddings",
        json=body,
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=10,
    )
    assert answer.status_code == 413
    assert_openai_error(answer.json())
    assert embedding_requests(fake_openai) == []


def test_keys_models_and_metrics(client: openai.OpenAI, embed_proxy: RunningProxy) -> None:
    with (
        openai.OpenAI(base_url=embed_proxy.base_url, api_key="sk-wrong", max_retries=0) as other,
        pytest.raises(openai.AuthenticationError),
    ):
        other.embeddings.create(model="emb", input="x")
    client.embeddings.create(model="emb", input=fresh("metrics"))
    names = {model.id for model in client.models.list()}
    assert {"emb", "tei-emb", "chat-only"} <= names  # one list for every kind of model
    text = httpx.get(f"{embed_proxy.url}/metrics", timeout=10).text
    assert any(
        line.startswith("llm_proxy_requests_total{") and 'api="embeddings"' in line
        and 'model="emb"' in line and 'status="200"' in line
        for line in text.splitlines()
    )  # fmt: skip
    assert "embeddings 200 model=emb" in embed_proxy.log()


# -- limits and spend, on a proxy of their own -----------------------------------------------


def limits_policy(openai_url: str) -> dict[str, Any]:
    oa = {"type": "openai", "base_url": openai_url, "api_key": UPSTREAM_KEY}
    return {
        "server": {"drain_timeout": 1},
        "upstreams": {"oa": oa},
        "models": {"emb": {"routes": [{"upstream": "oa", "model": "priced-embedder"}]}},
        "keys": [
            {"name": "tokens", "key": "sk-tokens", "limits": {"tokens": "10/minute"}},
            {"name": "dollar", "key": "sk-dollar", "budget": {"usd": 1, "period": "day"}},
        ],
        "prices": {"priced-embedder": {"input": 100_000, "output": 0}},  # $0.10 a token
        "cache": {"backend": "memory"},
    }


@pytest.fixture(scope="module")
def limits_proxy(
    proxy_launcher: ProxyLauncher, fake_openai_server: FakeOpenAI
) -> Iterator[RunningProxy]:
    running = proxy_launcher.start(limits_policy(fake_openai_server.base_url))
    yield running
    running.stop()


def key_usage(proxy: RunningProxy, key: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    answer = httpx.get(f"{proxy.base_url}/proxy/keys/me", headers=headers, timeout=10)
    usage: dict[str, Any] = answer.json()
    return usage


def test_input_tokens_count_against_token_limits_and_cache_hits_do_not(
    limits_proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    words = " ".join(f"w{i}" for i in range(8))  # 8 tokens upstream
    with openai.OpenAI(base_url=limits_proxy.base_url, api_key="sk-tokens", max_retries=0) as c:
        c.embeddings.create(model="emb", input=[words])
        c.embeddings.create(model="emb", input=[words])  # a hit: no tokens
        with pytest.raises(openai.RateLimitError) as caught:
            c.embeddings.create(model="emb", input=[words, "one more input that is long"])
    error = assert_openai_error(caught.value.response.json())
    assert error["code"] == "rate_limit_exceeded"
    assert len(embedding_requests(fake_openai)) == 1
    remaining = {s["kind"]: s["remaining"] for s in key_usage(limits_proxy, "sk-tokens")["limits"]}
    assert remaining["tokens"] == 2


def test_spend_is_input_tokens_at_the_input_price(
    limits_proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    with openai.OpenAI(base_url=limits_proxy.base_url, api_key="sk-dollar", max_retries=0) as c:
        c.embeddings.create(model="emb", input=["one two three"])  # 3 tokens: $0.30
        assert key_usage(limits_proxy, "sk-dollar")["budget"]["spent_usd"] == pytest.approx(0.3)
        c.embeddings.create(model="emb", input=["one two three", "a b c d e f g h"])  # +8: $1.10
        with pytest.raises(openai.RateLimitError) as caught:
            c.embeddings.create(model="emb", input=["anything new"])
    error = assert_openai_error(caught.value.response.json())
    assert "insufficient_quota" in {error["type"], error["code"]}
    assert [r.json["input"] for r in embedding_requests(fake_openai)] == [
        ["one two three"],
        ["a b c d e f g h"],
    ]
