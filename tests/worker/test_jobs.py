"""A job's accounting (EOS, limits, cancellation) and the per-row sampling of a batch."""

from __future__ import annotations

import asyncio

from proxy.worker.jobs import Job
from proxy.worker.protocol import Sampling
from worker.tiny import require_torch

PIECES = {1: "a", 2: "b", 3: "c", 9: ""}


def new_job(loop: asyncio.AbstractEventLoop, **sampling: object) -> Job:
    return Job(
        [5, 6, 7],
        Sampling(**{"max_new_tokens": 3, **sampling}),
        PIECES.get,  # type: ignore[arg-type]
        frozenset({9}),
        loop,
    )


async def test_eos_finishes_with_stop_and_counts_the_eos_token() -> None:
    job = new_job(asyncio.get_running_loop(), max_new_tokens=10)
    assert [job.accept(t) for t in (1, 2, 9)] == [False, False, True]
    output = job.take()
    assert output is not None and (output.text, output.finish_reason) == ("ab", "stop")
    assert (job.prompt_tokens, job.completion_tokens) == (3, 3)
    assert job.take() is None  # the final output is sent once


async def test_max_tokens_finishes_with_length() -> None:
    job = new_job(asyncio.get_running_loop())
    assert [job.accept(t) for t in (1, 2, 3)] == [False, False, True]
    output = job.take()
    assert output is not None and (output.text, output.finish_reason) == ("abc", "length")


async def test_a_cancelled_job_stops_at_its_next_token() -> None:
    job = new_job(asyncio.get_running_loop(), max_new_tokens=10)
    job.accept(1)
    job.cancelled.set()
    assert job.accept(2) is True
    assert job.finish_reason == "cancelled" and job.completion_tokens == 1


def test_row_sampling_keeps_rows_apart() -> None:
    require_torch()
    import torch

    from proxy.worker.dynamic import RowSampling

    loop = asyncio.new_event_loop()
    try:
        jobs = [
            new_job(loop, temperature=0.0),  # greedy: only the best token survives
            new_job(loop, temperature=2.0),  # halved logits, nothing filtered
            new_job(loop, top_p=0.5),  # only the most likely tokens up to half the mass
        ]
    finally:
        loop.close()
    scores = torch.tensor([[1.0, 3.0, 2.0, 0.0]] * 3)
    out = RowSampling(jobs, "cpu")(torch.zeros((3, 1), dtype=torch.long), scores)  # type: ignore[arg-type]
    assert torch.isinf(out[0]).tolist() == [True, False, True, True] and out[0][1] == 0
    assert out[1].tolist() == [0.5, 1.5, 1.0, 0.0]
    assert torch.isinf(out[2]).tolist() == [True, False, True, True]
