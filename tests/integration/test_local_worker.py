"""The local transformers worker through the running proxy, with the official openai SDK.

The proxy spawns `python -m proxy worker` on the tiny random model (tests/worker/tiny.py) and
supervises it. Checked: chat and stream, usage from the tokenizer's own count, stop strings,
max_tokens -> length, seeds, concurrent requests served in batches (the worker's /health
counts batch sizes), the bounded queue (503 + Retry-After; the proxy fails over), a client
leaving frees its slot, kill -9 -> supervised restart, and failover while the worker is down.
Tests run in file order; the crash test is last.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fakes.openai_upstream import DEFAULT_REPLY, FakeOpenAI
from fakes.proxy_harness import (
    UPSTREAM_KEY,
    ProxyLauncher,
    RunningProxy,
    free_port,
    without_unimplemented_tuning,
)
from worker.tiny import build_tiny_model, require_torch

require_torch()

WORKER_KEY = "wk-local-test-key"
MESSAGES: list[Any] = [{"role": "user", "content": "Say hello to the test suite"}]
BATCH, QUEUE = 8, 2


def local_policy(model: Path, port: int, fake_url: str) -> dict[str, Any]:
    worker_url = f"http://127.0.0.1:{port}"
    spawn = {
        "model": str(model),
        "device": "cpu",
        "port": port,
        "max_batch_size": BATCH,
        "max_queue": QUEUE,
    }
    return without_unimplemented_tuning(
        {
            "server": {"drain_timeout": 1},
            "upstreams": {
                "local": {"type": "local", "spawn": spawn, "api_key": WORKER_KEY},
                "remote": {"type": "local", "url": worker_url, "api_key": WORKER_KEY},
                "fake": {"type": "openai", "base_url": fake_url, "api_key": UPSTREAM_KEY},
            },
            "models": {
                "tiny": {"routes": [{"upstream": "local", "model": "tiny"}]},
                "tiny-url": {"routes": [{"upstream": "remote", "model": "tiny"}]},
                "tiny-or-fake": {
                    "routes": [
                        {"upstream": "local", "model": "tiny"},
                        {"upstream": "fake", "model": "fake-backup"},
                    ],
                    "strategy": "priority",
                },
            },
            "retry": {"attempts": 1, "initial_delay": 0.01, "max_delay": 0.05, "deadline": 30},
            "circuit_breaker": {"failures": 1000},
            "cache": {"backend": "none"},
        }
    )


def wait_ready(url: str, timeout: float = 60.0, not_pid: int | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2) as http:
        while time.monotonic() < deadline:
            try:
                if http.get(f"{url}/health/readiness").status_code == 200:
                    health: dict[str, Any] = http.get(f"{url}/health").json()
                    if health["pid"] != not_pid:
                        return health
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    raise AssertionError(f"the worker at {url} was not ready within {timeout}s")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory)


@pytest.fixture(scope="module")
def setup(
    proxy_launcher: ProxyLauncher, fake_openai_server: FakeOpenAI, tiny: Path
) -> Iterator[tuple[RunningProxy, str]]:
    port = free_port()
    proxy = proxy_launcher.start(local_policy(tiny, port, fake_openai_server.base_url))
    worker_url = f"http://127.0.0.1:{port}"
    wait_ready(worker_url)
    proxy.wait_for_log("local worker 'local' is ready", timeout=10)  # the supervisor saw it
    yield proxy, worker_url
    proxy.stop()
    assert_stopped(worker_url)  # the proxy stops the worker it spawned


def assert_stopped(url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/health/liveness", timeout=1)
        except httpx.TransportError:
            return
        time.sleep(0.1)
    raise AssertionError(f"the worker at {url} still answers after the proxy stopped")


@pytest.fixture
def proxy(setup: tuple[RunningProxy, str], fake_openai: FakeOpenAI) -> RunningProxy:
    return setup[0]


@pytest.fixture
def worker_url(setup: tuple[RunningProxy, str]) -> str:
    return setup[1]


@pytest.fixture
def client(proxy: RunningProxy) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=proxy.base_url, api_key="none", max_retries=0, timeout=60) as c:
        yield c


def worker_health(worker_url: str) -> dict[str, Any]:
    health: dict[str, Any] = httpx.get(f"{worker_url}/health", timeout=5).json()
    return health


def test_chat_usage_is_what_the_tokenizer_counts(client: openai.OpenAI, tiny: Path) -> None:
    from transformers import AutoTokenizer

    raw = client.chat.completions.with_raw_response.create(
        model="tiny", messages=MESSAGES, max_tokens=9, temperature=0
    )
    reply = raw.parse()
    prompt = AutoTokenizer.from_pretrained(str(tiny)).apply_chat_template(
        MESSAGES, add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]
    assert raw.headers["x-llm-proxy-route"] == "local/tiny"
    assert reply.model == "tiny" and reply.choices[0].message.role == "assistant"
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == len(prompt)
    assert reply.usage.completion_tokens == 9  # max_tokens reached ...
    assert reply.choices[0].finish_reason == "length"  # ... so finish_reason is length
    assert reply.usage.total_tokens == len(prompt) + 9


def test_stream_matches_the_json_reply(client: openai.OpenAI) -> None:
    params: dict[str, Any] = {
        "model": "tiny",
        "messages": MESSAGES,
        "max_tokens": 12,
        "temperature": 0,
    }
    whole = client.chat.completions.create(**params)
    stream = client.chat.completions.create(
        **params, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert text == whole.choices[0].message.content
    assert finishes[-1] == "length" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 12


def test_stop_strings_are_removed_and_finish_with_stop(client: openai.OpenAI) -> None:
    params: dict[str, Any] = {
        "model": "tiny",
        "messages": MESSAGES,
        "max_tokens": 24,
        "temperature": 1.0,
        "seed": 3,
    }
    full = client.chat.completions.create(**params).choices[0].message.content or ""
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    assert len(stop) == 2, full
    cut = client.chat.completions.create(**params, stop=[stop])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == full[: full.find(stop)]
    streamed = client.chat.completions.create(**params, stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == full[: full.find(stop)]


def test_seeded_requests_are_reproducible(client: openai.OpenAI) -> None:
    def ask(seed: int) -> str | None:
        return (
            client.chat.completions.create(
                model="tiny", messages=MESSAGES, max_tokens=16, temperature=1.0, seed=seed
            )
            .choices[0]
            .message.content
        )

    assert ask(11) == ask(11)
    assert ask(11) != ask(12)


def test_a_worker_given_by_url_and_its_api_key(client: openai.OpenAI, worker_url: str) -> None:
    reply = client.chat.completions.create(model="tiny-url", messages=MESSAGES, max_tokens=3)
    assert reply.usage is not None and reply.usage.completion_tokens == 3
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 2}
    refused = httpx.post(f"{worker_url}/v1/chat/completions", json=body, timeout=10)
    assert refused.status_code == 401 and refused.json()["error"]["type"] == "authentication_error"
    models = httpx.get(
        f"{worker_url}/v1/models", timeout=5, headers={"Authorization": f"Bearer {WORKER_KEY}"}
    ).json()
    assert len(models["data"]) == 1


def test_unsupported_fields_are_a_400_naming_them(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="tiny", messages=MESSAGES, n=2)
    assert raised.value.status_code == 400
    assert "'n'" in raised.value.message


async def test_concurrent_requests_are_served_in_batches(
    proxy: RunningProxy, worker_url: str
) -> None:
    before = worker_health(worker_url)
    async with openai.AsyncOpenAI(
        base_url=proxy.base_url, api_key="none", max_retries=0, timeout=60
    ) as aclient:

        async def one(i: int) -> tuple[str, str | None]:
            stream = await aclient.chat.completions.create(
                model="tiny",
                messages=[{"role": "user", "content": f"request {i}"}],
                max_tokens=24,
                temperature=0.7,
                stream=True,
            )
            parts, finish = [], None
            async for chunk in stream:
                if chunk.choices:
                    parts.append(chunk.choices[0].delta.content or "")
                    finish = chunk.choices[0].finish_reason or finish
            return "".join(parts), finish

        results = await asyncio.gather(*(one(i) for i in range(8)))
    assert all(finish in ("length", "stop") for _, finish in results)  # stop: a sampled EOS
    after = worker_health(worker_url)
    batches = sum(after["batches"].values()) - sum(before["batches"].values())
    assert after["requests"] - before["requests"] == 8
    assert batches < 8, after["batches"]  # 8 requests, fewer generate calls
    assert after["largest_batch"] >= 4, after


async def test_a_full_worker_answers_503_and_the_proxy_fails_over(
    proxy: RunningProxy, worker_url: str
) -> None:
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 300, "temperature": 0}
    headers = {"Authorization": f"Bearer {WORKER_KEY}"}
    async with httpx.AsyncClient(timeout=60) as http:
        direct = await asyncio.gather(
            *(
                http.post(f"{worker_url}/v1/chat/completions", json=body, headers=headers)
                for _ in range(BATCH + QUEUE + 4)
            )
        )
        full = [r for r in direct if r.status_code == 503]
        assert len(full) >= 4 and all(r.status_code == 200 for r in direct if r not in full)
        assert full[0].json()["error"]["code"] == "queue_full"
        assert int(full[0].headers["retry-after"]) >= 1
        via_proxy = await asyncio.gather(
            *(
                http.post(
                    f"{proxy.base_url}/chat/completions", json={**body, "model": "tiny-or-fake"}
                )
                for _ in range(BATCH + QUEUE + 4)
            )
        )
    assert all(r.status_code == 200 for r in via_proxy), [r.text for r in via_proxy]
    routes = [r.headers["x-llm-proxy-route"] for r in via_proxy]
    assert routes.count("fake/fake-backup") >= 4, routes
    assert any(r.json()["choices"][0]["message"]["content"] == DEFAULT_REPLY for r in via_proxy)


async def test_a_client_that_leaves_frees_its_slot(worker_url: str) -> None:
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 2000, "stream": True}
    headers = {"Authorization": f"Bearer {WORKER_KEY}"}
    async with httpx.AsyncClient(timeout=30) as http:
        async with http.stream(
            "POST", f"{worker_url}/v1/chat/completions", json=body, headers=headers
        ) as response:
            async for _ in response.aiter_bytes():
                break
            assert (await http.get(f"{worker_url}/health")).json()["in_flight"] == 1
        await wait_idle(http, worker_url)
        assert worker_health(worker_url)["in_flight"] == 0
        with pytest.raises(httpx.ReadTimeout):  # a JSON request whose client gives up
            await http.post(
                f"{worker_url}/v1/chat/completions",
                headers=headers,
                timeout=0.5,
                json={**body, "stream": False},
            )
        await wait_idle(http, worker_url)
    assert worker_health(worker_url)["in_flight"] == 0


async def wait_idle(http: httpx.AsyncClient, worker_url: str) -> None:
    for _ in range(50):
        if (await http.get(f"{worker_url}/health")).json()["in_flight"] == 0:
            return
        await asyncio.sleep(0.1)


def test_a_killed_worker_is_restarted_and_the_proxy_fails_over_meanwhile(
    proxy: RunningProxy, worker_url: str, client: openai.OpenAI
) -> None:
    old = worker_health(worker_url)["pid"]
    os.kill(old, signal.SIGKILL)
    proxy.wait_for_log("exited with code -9", timeout=10)
    started = time.monotonic()
    raw = client.chat.completions.with_raw_response.create(
        model="tiny-or-fake", messages=MESSAGES, max_tokens=5
    )
    assert raw.headers["x-llm-proxy-route"] == "fake/fake-backup"
    assert time.monotonic() - started < 2.0  # a down worker fails fast
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=5)
    assert raised.value.status_code == 503
    health = wait_ready(worker_url, timeout=60, not_pid=old)
    assert health["pid"] != old
    proxy.wait_for_log("restarting in", timeout=1)
    deadline = time.monotonic() + 10
    while True:  # the route may be parked for the worker's Retry-After
        raw = client.chat.completions.with_raw_response.create(
            model="tiny-or-fake", messages=MESSAGES, max_tokens=5
        )
        if raw.headers["x-llm-proxy-route"] == "local/tiny" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert raw.headers["x-llm-proxy-route"] == "local/tiny"
