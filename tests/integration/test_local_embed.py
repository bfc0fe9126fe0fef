"""`spawn: {task: embed}`: the proxy spawns `llm-proxy worker --task embed` on the tiny random
encoder (tests/worker/tiny.py); the worker's /v1/embeddings is driven by the official openai
SDK (which asks for base64 and decodes it), and the proxy's own client for it
(`LocalUpstream.embed`) is called in-process against the same worker."""

from __future__ import annotations

import asyncio
import json
import math
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

from proxy.config import LocalUpstreamConfig, SpawnConfig, Timeouts
from proxy.upstreams.base import UpstreamCall
from proxy.upstreams.local import LocalUpstream

require_torch()

WORKER_KEY = "wk-embed-test-key"
TEXTS = ["The quick brown fox jumps over the lazy dog.", "hello", "Streaming sends each piece."]
DIMENSIONS = 32  # the tiny encoder's hidden size


def embed_policy(encoder: Path, port: int, fake_url: str) -> dict[str, Any]:
    spawn = {"model": str(encoder), "device": "cpu", "port": port, "task": "embed",
             "max_batch_size": 16, "max_queue": 4}  # fmt: skip
    return without_unimplemented_tuning(
        {
            "server": {"drain_timeout": 1},
            "upstreams": {
                "emb": {"type": "local", "spawn": spawn, "api_key": WORKER_KEY},
                "fake": {"type": "openai", "base_url": fake_url, "api_key": UPSTREAM_KEY},
            },
            "models": {"other": {"routes": [{"upstream": "fake", "model": "other"}]}},
            "cache": {"backend": "none"},
        }
    )


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_encoder(tmp_path_factory)


@pytest.fixture(scope="module")
def worker_url(
    proxy_launcher: ProxyLauncher, fake_openai_server: FakeOpenAI, encoder: Path
) -> Iterator[str]:
    port = free_port()
    proxy: RunningProxy = proxy_launcher.start(
        embed_policy(encoder, port, fake_openai_server.base_url)
    )
    proxy.wait_for_log("local worker 'emb' is ready", timeout=45)
    yield f"http://127.0.0.1:{port}"
    proxy.stop()


@pytest.fixture
def client(worker_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{worker_url}/v1", api_key=WORKER_KEY, max_retries=0, timeout=30
    ) as c:
        yield c


def norm(vector: list[float]) -> float:
    return math.sqrt(sum(v * v for v in vector))


def test_the_sdk_gets_unit_vectors_in_base64_and_in_floats(client: openai.OpenAI) -> None:
    packed = client.embeddings.create(model="enc", input=TEXTS)  # the SDK asks for base64
    floats = client.embeddings.create(model="enc", input=TEXTS, encoding_format="float")
    assert packed.object == "list" and packed.model == "enc"
    assert [d.index for d in packed.data] == [0, 1, 2]
    for a, b in zip(packed.data, floats.data, strict=True):
        assert len(a.embedding) == DIMENSIONS and norm(a.embedding) == pytest.approx(1, abs=1e-5)
        assert a.embedding == pytest.approx(b.embedding, abs=1e-6)
    assert packed.usage.prompt_tokens == packed.usage.total_tokens > len(TEXTS)


def test_dimensions_and_token_ids(client: openai.OpenAI) -> None:
    full = client.embeddings.create(model="enc", input="hello").data[0].embedding
    cut = client.embeddings.create(model="enc", input="hello", dimensions=8).data[0].embedding
    assert len(cut) == 8 and norm(cut) == pytest.approx(1, abs=1e-5)
    scale = norm(full[:8])
    assert cut == pytest.approx([v / scale for v in full[:8]], abs=1e-5)
    by_ids = client.embeddings.create(model="enc", input=[[2, 40, 3]]).data[0].embedding
    assert len(by_ids) == DIMENSIONS


def test_bad_inputs_are_400s_the_sdk_raises(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.embeddings.create(model="enc", input="hello", dimensions=DIMENSIONS + 1)
    assert "dimensions" in raised.value.message
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="enc", input=["fine", ""])
    with pytest.raises(openai.NotFoundError):  # an embed worker does not chat
        client.chat.completions.create(model="enc", messages=[{"role": "user", "content": "x"}])


async def test_concurrent_requests_share_forward_passes(worker_url: str) -> None:
    before = httpx.get(f"{worker_url}/health", timeout=5).json()
    async with openai.AsyncOpenAI(
        base_url=f"{worker_url}/v1", api_key=WORKER_KEY, max_retries=0, timeout=30
    ) as aclient:
        replies = await asyncio.gather(
            *(aclient.embeddings.create(model="enc", input=[f"text {i}", "hello"])
              for i in range(8))
        )  # fmt: skip
    after = httpx.get(f"{worker_url}/health", timeout=5).json()
    passes = sum(after["batches"].values()) - sum(before["batches"].values())
    assert all(len(r.data) == 2 for r in replies)
    assert after["inputs"] - before["inputs"] == 16
    assert passes < 8, after["batches"]  # 16 inputs from 8 requests in fewer forward passes
    assert after["task"] == "embed"


async def test_the_proxy_client_embeds_through_the_worker(worker_url: str, encoder: Path) -> None:
    config = LocalUpstreamConfig(url=worker_url, task="embed", api_key=WORKER_KEY)
    upstream = LocalUpstream("emb-url", config)
    assert upstream.native_apis == frozenset({"embeddings"}) and not upstream.generates
    body = json.dumps({"model": "enc", "input": TEXTS[:2], "encoding_format": "float"}).encode()
    call = UpstreamCall(body, "enc", Timeouts(), "req-embed-1", api="embeddings")
    try:
        reply = json.loads(await upstream.embed(call))
    finally:
        await upstream.close()
    assert [len(d["embedding"]) for d in reply["data"]] == [DIMENSIONS, DIMENSIONS]
    assert upstream.in_flight == 0


async def test_a_spawned_embed_upstream_runs_the_worker_with_task_embed(encoder: Path) -> None:
    spawn = SpawnConfig(str(encoder), task="embed")
    upstream = LocalUpstream("emb", LocalUpstreamConfig(spawn=spawn))
    try:
        assert upstream.native_apis == frozenset({"embeddings"}) and not upstream.generates
        assert upstream.worker is not None
        command = upstream.worker.command()
        assert command[command.index("--task") + 1] == "embed"
    finally:
        await upstream.close()
