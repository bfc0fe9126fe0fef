"""What one request did, and the single place where that becomes metrics and a log line."""

from __future__ import annotations

import time
from dataclasses import dataclass

from loguru import logger

from proxy.observability.metrics import Metrics


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    started: float
    caller: str = "-"
    model: str = "unknown"  # configured public name or pattern
    route: str = "none"  # <upstream>/<configured model>
    status: int = 200
    attempts: int = 0
    stream: bool = False
    upstream_seconds: float = 0.0
    first_token: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    disconnected: bool = False

    def finish(self, metrics: Metrics) -> None:
        duration = time.perf_counter() - self.started
        overhead = max(duration - self.upstream_seconds, 0.0)
        metrics.record(self.model, self.route, self.status, duration, overhead)
        if self.first_token is not None:
            metrics.child(metrics.first_token, self.model, self.route).observe(self.first_token)
        if self.prompt_tokens or self.completion_tokens:
            metrics.record_tokens(
                self.model, self.route, self.prompt_tokens, self.completion_tokens
            )
        logger.info(
            "chat {status} model={model} route={route} key={key} attempts={attempts} "
            "stream={stream} {ms:.1f}ms ttft={ttft} tokens={prompt}/{completion} "
            "request_id={request_id}{error}",
            status=self.status,
            model=self.model,
            route=self.route,
            key=self.caller,
            attempts=self.attempts,
            stream=self.stream,
            ms=duration * 1000,
            ttft=f"{self.first_token * 1000:.1f}ms" if self.first_token is not None else "-",
            prompt=self.prompt_tokens,
            completion=self.completion_tokens,
            request_id=self.request_id,
            error=f" error={self.error!r}" if self.error else "",
            disconnected=self.disconnected,
        )
