"""One generation request as both sides see it: the generation thread feeds it token ids, the
event loop reads text from it. Plus the counters the worker reports in /health.

Thread side: `accept(token)` per generated token, then `take()` for what to send. Loop side:
`outputs` (an asyncio.Queue) filled by `deliver`, which the thread schedules with one
`call_soon_threadsafe` per decoding step for the whole batch.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from proxy.worker.protocol import Sampling
from proxy.worker.textstream import DecodeStep, TextAssembler

_ids = itertools.count(1)


@dataclass(slots=True)
class Output:
    text: str = ""
    finish_reason: str | None = None  # stop | length | cancelled, on the last output only
    error: str | None = None


class Job:
    def __init__(
        self,
        prompt_ids: list[int],
        sampling: Sampling,
        decode: DecodeStep,
        eos_ids: frozenset[int],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.id = f"job-{next(_ids)}"
        self.prompt_ids = prompt_ids
        self.sampling = sampling
        self.eos_ids = eos_ids
        self.cancelled = threading.Event()
        self.completion_tokens = 0
        self.finish_reason: str | None = None
        self.error: str | None = None
        self.outputs: asyncio.Queue[Output] = asyncio.Queue()
        self.loop = loop
        self.on_final: Callable[[Job], None] | None = None
        self._assembler = TextAssembler(decode, sampling.stop)
        self._pending: list[str] = []
        self._final_taken = False

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    # -- generation thread ------------------------------------------------------------------

    def accept(self, token: int) -> bool:
        """Take one generated token; True once the job wants no more."""
        if self.finish_reason is not None:
            return True
        if self.cancelled.is_set():
            return self.finish("cancelled")
        self.completion_tokens += 1
        if token in self.eos_ids:
            return self.finish("stop")
        piece, stopped = self._assembler.feed(token)
        if piece:
            self._pending.append(piece)
        if stopped:
            self.finish_reason = "stop"
            return True
        if self.completion_tokens >= self.sampling.max_new_tokens:
            return self.finish("length")
        return False

    def finish(self, reason: str) -> bool:
        if self.finish_reason is None:
            if reason != "cancelled":
                rest = self._assembler.flush()
                if rest:
                    self._pending.append(rest)
            self.finish_reason = reason
        return True

    def fail(self, message: str) -> None:
        if self.finish_reason is None:
            self.error = message
            self.finish_reason = "error"

    def take(self) -> Output | None:
        """What to send since the last call (None: nothing new)."""
        if self._final_taken:
            return None
        text = "".join(self._pending)
        self._pending.clear()
        if self.finish_reason is None:
            return Output(text) if text else None
        self._final_taken = True
        return Output(text, self.finish_reason, self.error)

    @property
    def text(self) -> str:
        return self._assembler.text


def deliver(items: Sequence[tuple[Job, Output]]) -> None:
    """On the event loop: hand each output to its job; the final one releases the job's slot."""
    for job, output in items:
        job.outputs.put_nowait(output)
        if output.finish_reason is not None and job.on_final is not None:
            job.on_final(job)


def send(jobs: Sequence[Job]) -> None:
    """From the generation thread: one loop wake-up per step for every job with news."""
    items = [(job, out) for job in jobs if (out := job.take()) is not None]
    if items:
        items[0][0].loop.call_soon_threadsafe(deliver, items)


@dataclass
class Stats:
    """What /health reports; written by the generation thread, read by the loop."""

    batching: str
    max_batch_size: int
    max_queue: int
    batch_sizes: Counter[int] = field(default_factory=Counter)
    batch_seconds: float = 0.0
    requests: int = 0
    completion_tokens: int = 0
    rejected: int = 0
    peak_running: int = 0
    started: float = field(default_factory=time.time)

    def record_batch(self, size: int, seconds: float, tokens: int) -> None:
        self.batch_sizes[size] += 1
        self.batch_seconds += seconds
        self.requests += size
        self.completion_tokens += tokens
        self.note_running(size)

    def record_request(self, tokens: int) -> None:
        self.requests += 1
        self.completion_tokens += tokens

    def note_running(self, running: int) -> None:
        self.peak_running = max(self.peak_running, running)

    @property
    def average_batch_seconds(self) -> float:
        batches = sum(self.batch_sizes.values())
        return self.batch_seconds / batches if batches else 1.0

    def snapshot(self) -> dict[str, object]:
        return {
            "batching": self.batching,
            "max_batch_size": self.max_batch_size,
            "max_queue": self.max_queue,
            "batches": {str(size): n for size, n in sorted(self.batch_sizes.items())},
            "largest_batch": self.peak_running,
            "requests": self.requests,
            "completion_tokens": self.completion_tokens,
            "rejected": self.rejected,
            "uptime_seconds": round(time.time() - self.started, 3),
        }
