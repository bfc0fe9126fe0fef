"""Dynamic batching: requests that arrive together run as one left-padded `model.generate`.

One generation thread takes up to `max_batch_size` waiting jobs (after a short window, so a
burst lands in one batch), runs them to the end, then takes the next ones. Each row keeps its
own sampling (temperature, top_p, greedy), token limit, stop strings and cancellation: a
`StoppingCriteria` sees every new token per row, so a row that is done (or whose client went
away) is finished at once and the batch ends when its last row does. A seeded request runs
alone, right after `torch.manual_seed`, so its output depends only on its seed.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch
from loguru import logger
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteria

from proxy.worker.jobs import Job, Stats, send
from proxy.worker.model import LoadedModel

# Once a request waits, more are gathered until none arrives for BATCH_IDLE seconds (a burst
# of requests reaches the server spread over a few milliseconds), BATCH_WINDOW at most.
BATCH_IDLE = 0.010
BATCH_WINDOW = 0.050


class RowSampling(LogitsProcessor):
    """Per-row temperature and top-p; greedy rows keep only their best token."""

    def __init__(self, jobs: list[Job], device: str) -> None:
        temps = [1.0 if j.sampling.greedy else j.sampling.temperature for j in jobs]
        self.temperature = torch.tensor(temps, device=device).unsqueeze(-1)
        self.top_p = torch.tensor([j.sampling.top_p for j in jobs], device=device)
        self.greedy = torch.tensor([j.sampling.greedy for j in jobs], device=device)
        self.any_top_p = any(j.sampling.top_p < 1.0 for j in jobs)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        out: torch.Tensor = scores / self.temperature
        if self.any_top_p:
            ordered, order = torch.sort(out, descending=False, dim=-1)
            cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
            remove = cumulative <= (1 - self.top_p).unsqueeze(-1)
            remove[..., -1:] = False
            out = out.masked_fill(remove.scatter(-1, order, remove), -float("inf"))
        if bool(self.greedy.any()):
            best = torch.full_like(out, -float("inf"))
            best.scatter_(-1, out.argmax(dim=-1, keepdim=True), 0.0)
            out = torch.where(self.greedy.unsqueeze(-1), best, out)
        return out  # type: ignore[return-value, unused-ignore]


class RowStepper(StoppingCriteria):
    """Hands each row's newest token to its job and reports which rows are finished."""

    def __init__(self, jobs: list[Job], device: str) -> None:
        self.jobs = jobs
        self.device = device

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> Any:
        tokens = input_ids[:, -1].tolist()
        done = [job.accept(token) for job, token in zip(self.jobs, tokens, strict=True)]
        send(self.jobs)
        return torch.tensor(done, dtype=torch.bool, device=self.device)


def left_padded(rows: list[list[int]], pad_id: int, device: str) -> dict[str, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = [[pad_id] * (width - len(r)) + r for r in rows]
    mask = [[0] * (width - len(r)) + [1] * len(r) for r in rows]
    return {
        "input_ids": torch.tensor(ids, dtype=torch.long, device=device),
        "attention_mask": torch.tensor(mask, dtype=torch.long, device=device),
    }


class DynamicBatcher:
    def __init__(
        self,
        loaded: LoadedModel,
        max_batch_size: int,
        stats: Stats,
        guard: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
    ) -> None:
        self.loaded = loaded
        self.max_batch_size = max_batch_size
        self.stats = stats
        self._guard = guard  # e.g. pausing a continuous-batching loop that shares the model
        self._pending: deque[Job] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self.running = 0
        self._thread = threading.Thread(target=self._run, name="worker-generate", daemon=True)

    @property
    def queued(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def submit(self, job: Job) -> None:
        with self._cond:
            self._pending.append(job)
            self._cond.notify()

    def withdraw(self, job: Job) -> bool:
        """Remove a job that has not started; False when it is already running."""
        with self._cond:
            try:
                self._pending.remove(job)
            except ValueError:
                return False
            return True

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._generate(batch)

    def _next_batch(self) -> list[Job] | None:
        with self._cond:
            while not self._pending and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            self._gather()
            return self._take()

    def _gather(self) -> None:
        deadline = time.monotonic() + BATCH_WINDOW
        seen = len(self._pending)
        while seen < self.max_batch_size:
            quiet = min(BATCH_IDLE, deadline - time.monotonic())
            if quiet <= 0 or not self._cond.wait(quiet) or len(self._pending) == seen:
                return  # nothing new within the idle time (or the window is over)
            seen = len(self._pending)

    def _take(self) -> list[Job]:
        if self._pending[0].sampling.seed is not None:
            return [self._pending.popleft()]
        batch = [j for j in self._pending if j.sampling.seed is None][: self.max_batch_size]
        for job in batch:
            self._pending.remove(job)
        return batch

    def _generate(self, jobs: list[Job]) -> None:
        started = time.perf_counter()
        self.running = len(jobs)
        try:
            with self._guard():
                self._call_generate(jobs)
            for job in jobs:
                job.finish("length")  # the model's own length limit ended the batch
        except Exception as exc:
            logger.opt(exception=exc).error("generation failed for a batch of {}", len(jobs))
            for job in jobs:
                job.fail(f"Generation failed: {type(exc).__name__}: {exc}")
        finally:
            self.running = 0
        tokens = sum(j.completion_tokens for j in jobs)
        self.stats.record_batch(len(jobs), time.perf_counter() - started, tokens)
        send(jobs)  # after the stats: whoever reads the last output sees them

    @torch.inference_mode()
    def _call_generate(self, jobs: list[Job]) -> None:
        loaded = self.loaded
        inputs = left_padded([j.prompt_ids for j in jobs], loaded.pad_id, loaded.device)
        greedy = all(j.sampling.greedy for j in jobs)
        config = GenerationConfig(  # type: ignore[no-untyped-call, unused-ignore]
            max_new_tokens=max(j.sampling.max_new_tokens for j in jobs),
            do_sample=not greedy,
            # sampling is all RowSampling's: the stock warpers stay off (unset when greedy, or
            # transformers warns that they do nothing)
            temperature=None if greedy else 1.0,
            top_p=None if greedy else 1.0,
            top_k=None if greedy else 0,
            eos_token_id=sorted(loaded.eos_ids) or None,
            pad_token_id=loaded.pad_id,
        )
        processors = LogitsProcessorList([] if greedy else [RowSampling(jobs, loaded.device)])
        seed = jobs[0].sampling.seed
        if seed is not None:
            torch.manual_seed(seed)
        loaded.model.generate(
            **inputs,
            generation_config=config,
            logits_processor=processors,
            stopping_criteria=[RowStepper(jobs, loaded.device)],
        )
