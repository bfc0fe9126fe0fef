"""Admission and hand-off: a request becomes a Job on a batching backend, within a bounded queue.

At most `max_batch_size + max_queue` requests are in the worker at once (running or waiting);
one more is a 503 with Retry-After, which the proxy treats as "try another route". A job
holds its slot until its final output reaches the event loop, or until its client leaves.
"""

from __future__ import annotations

import asyncio
import math
from typing import Protocol

from proxy.errors import InvalidRequestError, ServiceUnavailableError
from proxy.worker.jobs import Job, Stats, deliver
from proxy.worker.model import LoadedModel
from proxy.worker.protocol import DEFAULT_MAX_TOKENS, ChatParams, chat_messages, sampling_of
from proxy.worker.textstream import decoder_for

BATCHING_MODES = ("auto", "dynamic", "continuous")


class Backend(Protocol):
    @property
    def running(self) -> int: ...

    @property
    def queued(self) -> int: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def submit(self, job: Job) -> None: ...

    def withdraw(self, job: Job) -> bool:
        """Cancel a job; True when the backend will send no final output for it."""
        ...


def resolve_mode(mode: str, device: str) -> str:
    """`auto`: continuous batching on GPUs; dynamic batching on CPU, where transformers' paged
    cache ran slower than a padded `generate` (bench/worker_bench.py)."""
    if mode not in BATCHING_MODES:
        raise ValueError(f"unknown batching mode {mode!r} (one of {', '.join(BATCHING_MODES)})")
    if mode != "auto":
        return mode
    return "continuous" if device.startswith("cuda") else "dynamic"


def make_backend(loaded: LoadedModel, mode: str, max_batch_size: int, stats: Stats) -> Backend:
    if mode == "continuous":
        from proxy.worker.continuous import ContinuousBatcher

        return ContinuousBatcher(loaded, max_batch_size, stats)
    from proxy.worker.dynamic import DynamicBatcher

    return DynamicBatcher(loaded, max_batch_size, stats)


class Engine:
    def __init__(
        self,
        loaded: LoadedModel,
        backend: Backend,
        stats: Stats,
        max_batch_size: int,
        max_queue: int,
    ) -> None:
        self.loaded = loaded
        self.backend = backend
        self.stats = stats
        self.capacity = max_batch_size + max_queue
        self.in_flight = 0
        self._new_decoder = decoder_for(loaded.tokenizer)

    def start(self) -> None:
        self.backend.start()

    def stop(self) -> None:
        self.backend.stop()

    def submit(self, params: ChatParams) -> Job:
        """On the event loop: admit the request or raise (503 when full, 400 when invalid)."""
        if self.in_flight >= self.capacity:
            self.stats.rejected += 1
            raise ServiceUnavailableError(
                f"The worker is full ({self.capacity} requests running or queued); "
                "try again later.",
                code="queue_full",
                retry_after=self.retry_after(),
            )
        prompt = self.loaded.render(chat_messages(params))
        sampling = sampling_of(params, self._default_max_tokens(len(prompt)))
        self._check_context(len(prompt), sampling.max_new_tokens)
        loop = asyncio.get_running_loop()
        job = Job(prompt, sampling, self._new_decoder(), self.loaded.eos_ids, loop)
        job.on_final = self._release
        self.in_flight += 1
        self.backend.submit(job)
        return job

    def cancel(self, job: Job) -> None:
        """The client went away: free the slot now if the job never started, else the backend
        finishes it at its next step."""
        if job.done:
            return
        job.cancelled.set()
        if self.backend.withdraw(job):
            job.finish("cancelled")
            output = job.take()
            if output is not None:
                deliver([(job, output)])

    def retry_after(self) -> float:
        return float(min(max(math.ceil(self.stats.average_batch_seconds), 1), 30))

    def health(self) -> dict[str, object]:
        return {
            **self.loaded.describe(),
            **self.stats.snapshot(),
            "in_flight": self.in_flight,
            "running": self.backend.running,
            "queued": self.backend.queued,
        }

    def _release(self, job: Job) -> None:
        self.in_flight -= 1

    def _default_max_tokens(self, prompt_tokens: int) -> int:
        context = self.loaded.max_context
        if context is None:
            return DEFAULT_MAX_TOKENS
        return max(min(DEFAULT_MAX_TOKENS, context - prompt_tokens), 1)

    def _check_context(self, prompt_tokens: int, max_new_tokens: int) -> None:
        context = self.loaded.max_context
        if context is not None and prompt_tokens + max_new_tokens > context:
            raise InvalidRequestError(
                f"This model's maximum context length is {context} tokens; the messages use "
                f"{prompt_tokens} and {max_new_tokens} more were asked for.",
                param="messages",
                code="context_length_exceeded",
            )
