"""`/v1/embeddings` through the proxy to a local worker it spawns with `task: embed` (a tiny
random encoder built in the test): the openai SDK gets the worker's own vectors in both
encodings, and the per-input cache sends the worker only the inputs it has not embedded."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fakes.openai_upstream import FakeOpenAI
from fakes.proxy_harness import (
    UPSTREAM_KEY,
    ProxyLauncher,
    RunningProxy,
    free_port,
    without_unimplemented_tuning,
)
from worker.tiny import build_tiny_encoder, require_torch

require_torch()

WORKER_KEY = "wk-proxy-embeddings"
DIMENSIONS = 32  # the tiny encoder's hidden size


def local_policy(encoder: Path, port: int, fake_url: str) -> dict[str, Any]:
    spawn = {"model": str(encoder), "device": "cpu", "port": port, "task": "embed",
             "max_batch_size": 16}  # fmt: skip
    return without_unimplemented_tuning(
        {
            "server": {"drain_timeout": 1},
            "upstreams": {
                "worker": {"type": "local", "spawn": spawn, "api_key": WORKER_KEY},
                "fake": {"type": "openai", "base_url": fake_url, "api_key": UPSTREAM_KEY},
            },
            "models": {
                "local-emb": {"routes": [{"upstream": "worker", "model": "tiny-encoder"}]},
                "chat": {"routes": [{"upstream": "fake", "model": "chat-model"}]},
            },
            "cache": {"backend": "memory"},
        }
    )


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_encoder(tmp_path_factory)


@pytest.fixture(scope="module")
def local_proxy(
    proxy_launcher: ProxyLauncher, fake_openai_server: FakeOpenAI, encoder: Path
) -> Iterator[tuple[RunningProxy, str]]:
    port = free_port()
    running = proxy_launcher.start(local_policy(encoder, port, fake_openai_server.base_url))
    running.wait_for_log("local worker 'worker' is ready", timeout=45)
    yield running, f"http://127.0.0.1:{port}"
    running.stop()


@pytest.fixture
def client(local_proxy: tuple[RunningProxy, str]) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=local_proxy[0].base_url, api_key="x", max_retries=0) as c:
        yield c


@pytest.fixture
def worker(local_proxy: tuple[RunningProxy, str]) -> Iterator[openai.OpenAI]:
    """The worker itself, without the proxy."""
    with openai.OpenAI(
        base_url=f"{local_proxy[1]}/v1", api_key=WORKER_KEY, max_retries=0, timeout=30
    ) as c:
        yield c


def embedded_inputs(local_proxy: tuple[RunningProxy, str]) -> int:
    health = httpx.get(f"{local_proxy[1]}/health", timeout=5).json()
    return int(health["inputs"])


def test_the_sdk_gets_the_workers_vectors_in_both_encodings(
    client: openai.OpenAI, worker: openai.OpenAI
) -> None:
    texts = ["a local embedding", f"another {uuid.uuid4().hex}"]
    packed = client.embeddings.create(model="local-emb", input=texts)  # base64
    floats = client.embeddings.create(model="local-emb", input=texts, encoding_format="float")
    direct = worker.embeddings.create(model="tiny-encoder", input=texts, encoding_format="float")
    assert packed.model == "local-emb"
    for a, b, c in zip(packed.data, floats.data, direct.data, strict=True):
        assert len(a.embedding) == DIMENSIONS
        assert a.embedding == pytest.approx(c.embedding, abs=1e-6)
        assert b.embedding == pytest.approx(c.embedding, abs=1e-6)


def test_only_new_inputs_reach_the_worker(
    client: openai.OpenAI, local_proxy: tuple[RunningProxy, str], worker: openai.OpenAI
) -> None:
    a, new, b = (f"{word} {uuid.uuid4().hex}" for word in ("first", "second", "third"))
    client.embeddings.create(model="local-emb", input=[a, b])
    before = embedded_inputs(local_proxy)
    raw = client.embeddings.with_raw_response.create(model="local-emb", input=[a, new, b])
    assert embedded_inputs(local_proxy) - before == 1
    assert raw.headers["x-llm-proxy-cache"] == "miss"
    direct = worker.embeddings.create(model="tiny-encoder", input=[a, new, b])
    for got, expected in zip(raw.parse().data, direct.data, strict=True):
        assert got.embedding == pytest.approx(expected.embedding, abs=1e-6)
    hit = client.embeddings.with_raw_response.create(model="local-emb", input=[new, a])
    assert hit.headers["x-llm-proxy-cache"] == "hit"


def test_token_ids_and_dimensions_reach_the_worker(client: openai.OpenAI) -> None:
    cut = client.embeddings.create(model="local-emb", input=[[2, 40, 3], [5, 6]], dimensions=8)
    assert [len(item.embedding) for item in cut.data] == [8, 8]
    assert cut.usage.prompt_tokens > 0


def test_a_worker_refusal_is_the_clients_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="local-emb", input="x", dimensions=DIMENSIONS + 1)
    assert "dimensions" in caught.value.message


def test_the_chat_model_still_chats_beside_it(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.model == "chat"
