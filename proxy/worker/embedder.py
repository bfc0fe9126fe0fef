"""`--task embed`: embedding requests admitted within a bounded queue, their inputs batched
across requests into forward passes of up to `max_batch_size` texts on one thread.

A request's inputs wait in one line with every other request's; the embedding thread runs one
forward pass over up to `max_batch_size` of them, then the next, and a request is answered once
its last input has been through. Passes run back to back without waiting for company: a lone
request goes at once, and whatever arrives during a pass shares the next one (waiting for a
burst to gather, as generation does, measured no faster and made single requests 10 ms
slower). A request whose client leaves is skipped if it has not started. At most
`max_batch_size + max_queue` requests are in the worker at once; one more is a 503 with
Retry-After, as for generation.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import torch
from loguru import logger

from proxy.errors import InternalError, ServiceUnavailableError
from proxy.worker.embed_protocol import (
    EmbeddingInputs,
    EmbeddingParams,
    check_dimensions,
    check_token_rows,
    to_base64,
)
from proxy.worker.encoder import LoadedEncoder, normalised

Vector = list[float] | str  # floats, or base64 of little-endian float32


class EmbeddingRequest:
    """One request's inputs as token rows; its vectors, filled by the embedding thread."""

    def __init__(
        self, rows: list[list[int]], params: EmbeddingParams, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.rows = rows
        self.dimensions = params.dimensions
        self.base64 = params.encoding_format == "base64"
        self.vectors: list[Vector | None] = [None] * len(rows)
        self.remaining = len(rows)
        self.cancelled = False
        self.loop = loop
        self.done: asyncio.Future[list[Vector]] = loop.create_future()

    @property
    def prompt_tokens(self) -> int:
        return sum(len(row) for row in self.rows)

    def vector(self, pooled: torch.Tensor) -> Vector:
        """One unit vector as the request asked: cut to `dimensions` (then normalised again)."""
        if self.dimensions is not None and self.dimensions < pooled.shape[-1]:
            pooled = normalised(pooled[: self.dimensions])
        values: list[float] = pooled.tolist()
        return to_base64(values) if self.base64 else values


@dataclass
class EmbedStats:
    """What /health reports; written by the embedding thread, read by the loop."""

    max_batch_size: int
    max_queue: int
    batch_sizes: Counter[int] = field(default_factory=Counter)  # texts per forward pass
    batch_seconds: float = 0.0
    requests: int = 0
    inputs: int = 0
    prompt_tokens: int = 0
    rejected: int = 0

    def record_batch(self, size: int, seconds: float, tokens: int) -> None:
        self.batch_sizes[size] += 1
        self.batch_seconds += seconds
        self.inputs += size
        self.prompt_tokens += tokens

    @property
    def average_batch_seconds(self) -> float:
        passes = sum(self.batch_sizes.values())
        return self.batch_seconds / passes if passes else 1.0

    def snapshot(self) -> dict[str, object]:
        return {
            "max_batch_size": self.max_batch_size,
            "max_queue": self.max_queue,
            "batches": {str(size): n for size, n in sorted(self.batch_sizes.items())},
            "largest_batch": max(self.batch_sizes, default=0),
            "requests": self.requests,
            "inputs": self.inputs,
            "prompt_tokens": self.prompt_tokens,
            "rejected": self.rejected,
        }


Item = tuple[EmbeddingRequest, int]  # a request and the index of one of its inputs


class EmbeddingEngine:
    def __init__(self, loaded: LoadedEncoder, max_batch_size: int, max_queue: int) -> None:
        self.loaded = loaded
        self.max_batch_size = max_batch_size
        self.capacity = max_batch_size + max_queue
        self.stats = EmbedStats(max_batch_size, max_queue)
        self.in_flight = 0
        self._pending: deque[Item] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="worker-embed", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def submit(self, params: EmbeddingParams, inputs: EmbeddingInputs) -> EmbeddingRequest:
        """On the event loop: admit the request or raise (503 when full, 400 when invalid)."""
        if self.in_flight >= self.capacity:
            self.stats.rejected += 1
            raise ServiceUnavailableError(
                f"The worker is full ({self.capacity} requests running or queued); "
                "try again later.",
                code="queue_full",
                retry_after=self.retry_after(),
            )
        loaded = self.loaded
        check_dimensions(params.dimensions, loaded.dimensions)
        rows = inputs.token_rows
        if rows is None:
            rows = loaded.tokenize(inputs.texts or [])
        check_token_rows(rows, loaded.vocab_size, loaded.max_tokens)
        request = EmbeddingRequest(rows, params, asyncio.get_running_loop())
        request.done.add_done_callback(self._release)
        self.in_flight += 1
        self.stats.requests += 1
        with self._cond:
            self._pending.extend((request, index) for index in range(len(rows)))
            self._cond.notify()
        return request

    def cancel(self, request: EmbeddingRequest) -> None:
        """The client went away: its inputs not yet embedded are skipped."""
        request.cancelled = True
        if not request.done.done():
            request.done.cancel()

    def retry_after(self) -> float:
        return float(min(max(math.ceil(self.stats.average_batch_seconds), 1), 30))

    def health(self) -> dict[str, object]:
        return {
            **self.loaded.describe(),
            **self.stats.snapshot(),
            "in_flight": self.in_flight,
            "queued": len(self._pending),
        }

    def _release(self, _: asyncio.Future[list[Vector]]) -> None:
        self.in_flight -= 1

    # -- the embedding thread ---------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if batch:
                self._embed(batch)

    def _next_batch(self) -> list[Item] | None:
        with self._cond:
            while not self._pending and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            batch: list[Item] = []
            while self._pending and len(batch) < self.max_batch_size:
                item = self._pending.popleft()
                if not item[0].cancelled:
                    batch.append(item)
            return batch

    def _embed(self, batch: list[Item]) -> None:
        started = time.perf_counter()
        rows = [request.rows[index] for request, index in batch]
        try:
            pooled = self.loaded.embed(rows)
        except Exception as exc:
            logger.opt(exception=exc).error("embedding failed for a batch of {}", len(batch))
            self._fail(batch, f"Embedding failed: {type(exc).__name__}: {exc}")
            return
        finished = []
        for (request, index), vector in zip(batch, pooled, strict=True):
            request.vectors[index] = request.vector(vector)
            request.remaining -= 1
            if request.remaining == 0:
                finished.append(request)
        tokens = sum(len(row) for row in rows)
        self.stats.record_batch(len(batch), time.perf_counter() - started, tokens)
        for request in finished:
            request.loop.call_soon_threadsafe(_answer, request)

    def _fail(self, batch: list[Item], message: str) -> None:
        failed = {id(request): request for request, _ in batch}
        for request in failed.values():
            request.cancelled = True  # its other inputs are skipped
            request.loop.call_soon_threadsafe(_reject, request, message)


def _answer(request: EmbeddingRequest) -> None:
    if not request.done.done():
        request.done.set_result([v for v in request.vectors if v is not None])


def _reject(request: EmbeddingRequest, message: str) -> None:
    if not request.done.done():
        request.done.set_exception(InternalError(message, code="embedding_failed"))
