"""Continuous batching with transformers' own manager (`init_continuous_batching`, paged KV
cache): requests join and leave the running batch at every step. The default on GPUs.

Per-request temperature and top-p go through the manager's per-request logits processors;
greedy is top-p ~0 (only the best token survives). Stop strings and client disconnects cancel
the request in the manager. Seeded requests cannot have their own generator inside a shared
batch, so they run alone through `model.generate` while the loop is paused.
"""

from __future__ import annotations

from typing import Any

from transformers import GenerationConfig
from transformers.generation.configuration_utils import ContinuousBatchingConfig

from proxy.worker.dynamic import DynamicBatcher
from proxy.worker.jobs import Job, Stats, send
from proxy.worker.model import LoadedModel

GREEDY_TOP_P = 1e-9  # 1 - p rounds to 1.0 in float32: every token but the best is filtered
# On CPU the manager's memory sizing has nothing to measure: keep the paged cache small.
CPU_CACHE = {"num_blocks": 256, "page_size": 32, "max_batch_tokens": 512}


class ContinuousBatcher:
    def __init__(self, loaded: LoadedModel, max_batch_size: int, stats: Stats) -> None:
        self.loaded = loaded
        self.stats = stats
        generation = GenerationConfig(  # type: ignore[no-untyped-call, unused-ignore]
            do_sample=True,
            temperature=0.5,  # not 1.0, or no temperature processor would exist to override
            top_p=0.5,
            top_k=0,
            max_new_tokens=256,
            eos_token_id=sorted(loaded.eos_ids) or -1,
            pad_token_id=loaded.pad_id,
        )
        sizes: dict[str, Any] = CPU_CACHE if loaded.device == "cpu" else {}
        config = ContinuousBatchingConfig(
            per_request_processors=True, max_requests_per_batch=max_batch_size, **sizes
        )
        self._manager = loaded.model.init_continuous_batching(
            generation_config=generation, continuous_batching_config=config
        )
        self._solo = DynamicBatcher(loaded, 1, stats, guard=self._manager.pause)
        self._active: dict[str, Job] = {}
        self.queued = 0

    @property
    def running(self) -> int:
        return len(self._active)

    def start(self) -> None:
        self._manager.start()
        self._solo.start()

    def stop(self) -> None:
        self._solo.stop()
        self._manager.stop(block=True, timeout=5)

    def submit(self, job: Job) -> None:
        """On the event loop (the manager calls our handler there)."""
        if job.sampling.seed is not None:
            self._solo.submit(job)
            return
        sampling = job.sampling
        self._active[job.id] = job
        self._manager.register_result_handler(job.id, lambda out: self._on_output(job, out))
        self._manager.add_request(
            job.prompt_ids,
            request_id=job.id,
            max_new_tokens=sampling.max_new_tokens,
            streaming=True,
            eos_token_id=sorted(job.eos_ids) or -1,
            temperature=1.0 if sampling.greedy else float(sampling.temperature),
            top_p=GREEDY_TOP_P if sampling.greedy else float(sampling.top_p),
        )
        self.stats.note_running(len(self._active))  # every active request is in each step

    def withdraw(self, job: Job) -> bool:
        """Cancel `job`; True when no final output will come from the manager."""
        if self._solo.withdraw(job):
            return True
        if self._active.pop(job.id, None) is None:
            return False
        self._manager.cancel_request(job.id)
        router = self._manager.output_router  # a cancelled request gets no final output
        with router._lock:
            router.result_handlers.pop(job.id, None)
        return True

    def _on_output(self, job: Job, output: Any) -> None:
        fresh = output.generated_tokens[job.completion_tokens :]
        for token in fresh:
            if job.accept(int(token)):
                break
        if output.error is not None:
            job.fail(str(output.error))
        elif output.is_finished():
            job.finish("length")
        if job.done:
            if self._active.pop(job.id, None) is not None and not output.is_finished():
                self._manager.cancel_request(job.id)
            self.stats.record_request(job.completion_tokens)
        send([job])
