"""The engine in-process on the tiny random model: usage from real token ids, finish reasons,
stop strings, seeds, batching, cancellation and the bounded queue."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from worker.tiny import require_torch

require_torch()

from proxy.errors import InvalidRequestError, ServiceUnavailableError  # noqa: E402
from proxy.worker.engine import Engine, make_backend  # noqa: E402
from proxy.worker.jobs import Job, Output, Stats  # noqa: E402
from proxy.worker.model import LoadedModel, load_model, load_tokenizer  # noqa: E402
from proxy.worker.protocol import decode_params  # noqa: E402
from proxy.worker.replies import collect  # noqa: E402

USER = [{"role": "user", "content": "Say hello to the test suite"}]


@pytest.fixture(scope="module")
def loaded(tiny_model: Path) -> LoadedModel:
    return load_model(str(tiny_model), "cpu", load_tokenizer(str(tiny_model)))


def new_engine(
    loaded: LoadedModel, batch: int = 8, queue: int = 8, mode: str = "dynamic"
) -> Engine:
    stats = Stats(mode, batch, queue)
    return Engine(loaded, make_backend(loaded, mode, batch, stats), stats, batch, queue)


@pytest.fixture(scope="module")
def engine(loaded: LoadedModel) -> Iterator[Engine]:
    engine = new_engine(loaded)
    engine.start()
    yield engine
    engine.stop()


def submit(engine: Engine, **fields: Any) -> Job:
    body = {"model": "tiny", "messages": USER, **fields}
    return engine.submit(decode_params(json.dumps(body).encode()))


async def run(engine: Engine, **fields: Any) -> tuple[str, Output, Job]:
    job = submit(engine, **fields)
    text, final = await asyncio.wait_for(collect(job), 30)
    return text, final, job


def assert_ended(job: Job, final: Output, limit: int) -> None:
    """At the token limit, or earlier on an end-of-sequence token a sampled row may draw."""
    if final.finish_reason == "length":
        assert job.completion_tokens == limit
    else:
        assert final.finish_reason == "stop" and job.completion_tokens <= limit


async def test_usage_counts_real_token_ids_and_max_tokens_is_length(
    engine: Engine, loaded: LoadedModel
) -> None:
    _text, final, job = await run(engine, max_tokens=7, temperature=0)
    expected_prompt = loaded.tokenizer.apply_chat_template(
        USER, add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]
    assert job.prompt_tokens == len(expected_prompt)
    assert job.completion_tokens == 7
    assert final.finish_reason == "length" and final.error is None
    assert engine.in_flight == 0


async def test_seeded_requests_are_reproducible(engine: Engine) -> None:
    first, _, _ = await run(engine, max_tokens=16, temperature=1.0, seed=7)
    again, _, _ = await run(engine, max_tokens=16, temperature=1.0, seed=7)
    other, _, _ = await run(engine, max_tokens=16, temperature=1.0, seed=8)
    assert first == again
    assert first != other


async def test_stop_strings_end_the_reply_before_them(engine: Engine) -> None:
    full, _, full_job = await run(engine, max_tokens=24, temperature=1.0, seed=3)
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    assert len(stop) == 2, full
    text, final, job = await run(engine, max_tokens=24, temperature=1.0, seed=3, stop=[stop])
    assert final.finish_reason == "stop"
    assert text == full[: full.find(stop)]
    assert stop not in text
    assert job.completion_tokens < full_job.completion_tokens


async def test_requests_that_arrive_together_run_as_one_batch(engine: Engine) -> None:
    jobs = [submit(engine, max_tokens=5 + i, temperature=0.0 if i % 2 else 0.8) for i in range(5)]
    results = await asyncio.wait_for(asyncio.gather(*(collect(j) for j in jobs)), 30)
    for job, (_, final), limit in zip(jobs, results, [5, 6, 7, 8, 9], strict=True):
        assert_ended(job, final, limit)
    for _ in range(100):  # the batch is recorded just after its last row's output is sent
        if engine.stats.batch_sizes[5]:
            break
        await asyncio.sleep(0.01)
    assert engine.stats.batch_sizes[5] == 1, engine.stats.batch_sizes
    assert engine.health()["largest_batch"] == 5


async def test_a_client_leaving_frees_its_slot(engine: Engine) -> None:
    running = submit(engine, max_tokens=400, temperature=0)
    await asyncio.wait_for(running.outputs.get(), 30)  # it has started
    waiting = submit(engine, max_tokens=400, temperature=0)
    assert engine.in_flight == 2
    engine.cancel(waiting)  # never started: released at once
    assert engine.in_flight == 1
    assert (await waiting.outputs.get()).finish_reason == "cancelled"
    engine.cancel(running)  # running: finished at its next step
    _, final = await asyncio.wait_for(collect(running), 30)
    assert final.finish_reason == "cancelled"
    assert running.completion_tokens < 400
    assert engine.in_flight == 0


async def test_a_full_queue_is_a_503_with_retry_after(loaded: LoadedModel) -> None:
    small = new_engine(loaded, batch=1, queue=1)
    small.start()
    try:
        jobs = [submit(small, max_tokens=400) for _ in range(2)]
        with pytest.raises(ServiceUnavailableError) as raised:
            submit(small, max_tokens=5)
        assert raised.value.status == 503 and raised.value.code == "queue_full"
        assert raised.value.retry_after is not None and raised.value.retry_after >= 1
        assert small.stats.rejected == 1
        for job in jobs:
            small.cancel(job)
        await asyncio.wait_for(asyncio.gather(*(collect(j) for j in jobs)), 30)
        assert small.in_flight == 0
    finally:
        small.stop()


async def test_a_prompt_beyond_the_context_is_a_400(engine: Engine) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        submit(engine, max_tokens=5000)
    assert raised.value.code == "context_length_exceeded"


async def test_continuous_batching_backend(loaded: LoadedModel) -> None:
    """transformers' continuous batching (the GPU default), forced on CPU."""
    engine = new_engine(loaded, batch=4, mode="continuous")
    engine.start()
    try:
        jobs = [submit(engine, max_tokens=6, temperature=0.0 if i else 0.9) for i in range(3)]
        results = await asyncio.wait_for(asyncio.gather(*(collect(j) for j in jobs)), 60)
        for job, (_, final) in zip(jobs, results, strict=True):
            assert_ended(job, final, 6)
        assert engine.health()["largest_batch"] == 3
        seeded = [await run(engine, max_tokens=8, temperature=1.0, seed=5) for _ in range(2)]
        assert seeded[0][0] == seeded[1][0]  # served alone, with the loop paused
        running = submit(engine, max_tokens=400, temperature=0)
        await asyncio.wait_for(running.outputs.get(), 30)
        engine.cancel(running)
        assert engine.in_flight == 0
    finally:
        engine.stop()
