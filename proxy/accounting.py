"""What one request did, and the single place where that becomes metrics and a log line."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from proxy.observability.access_log import AccessLog
from proxy.observability.metrics import Metrics

MAX_LOGGED_ERROR = 500  # characters of an error message in the access line


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    started: float
    api: str = "chat"  # the front door: chat | responses | messages | embeddings
    caller: str = "-"
    model: str = "unknown"  # configured public name or pattern
    route: str = "none"  # <upstream>/<configured model>
    target: str | None = None  # <upstream>/<model id sent> of the last attempt
    status: int = 200
    attempts: int = 0
    stream: bool = False
    upstream_seconds: float = 0.0
    waited: float = 0.0  # retry backoff and waits for parked routes
    first_token: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    spend_usd: float = 0.0  # charged at the end, from the route's or the model's price
    relayed_bytes: int = 0  # streamed text sent so far (the estimate for a cut stream)
    upstream_model: str | None = None  # the model the upstream says answered
    cache: str = "bypass"  # hit | miss | bypass
    body: bytes | None = None  # the request, logged only with logging.log_bodies
    finish_reasons: list[str] = field(default_factory=list)
    error: str | None = None
    disconnected: bool = False

    def _measure(self, metrics: Metrics, duration: float) -> None:
        series = metrics.request(self.api, self.model, self.route, self.status)
        series.requests.inc()
        series.duration.observe(duration)
        series.overhead.observe(max(duration - self.upstream_seconds - self.waited, 0.0))
        if self.first_token is not None:
            metrics.observe_first_token(series, self.first_token)
        if self.prompt_tokens or self.completion_tokens:
            metrics.count_tokens(series, self.prompt_tokens, self.completion_tokens)

    def finish(self, metrics: Metrics, log: AccessLog) -> None:
        duration = time.perf_counter() - self.started
        if metrics.enabled:
            self._measure(metrics, duration)
        if log.enabled:
            log.write(self, duration)

    def bounded_error(self) -> str | None:
        error = self.error
        if error is not None and len(error) > MAX_LOGGED_ERROR:
            return error[:MAX_LOGGED_ERROR] + "..."
        return error

    def line(self, duration: float) -> str:
        """The access line's text (without time and level)."""
        ttft = f"{self.first_token * 1000:.1f}ms" if self.first_token is not None else "-"
        message = (
            f"{self.api} {self.status} model={self.model} route={self.route} "
            f"target={self.target or '-'} key={self.caller} "
            f"attempts={self.attempts} cache={self.cache} stream={self.stream} "
            f"{duration * 1000:.1f}ms ttft={ttft} "
            f"tokens={self.prompt_tokens}/{self.completion_tokens} request_id={self.request_id}"
        )
        error = self.bounded_error()
        return message + f" error={error!r}" if error else message

    def fields(self, duration: float) -> dict[str, Any]:
        """The access line's fields (JSON logs, loguru's extra)."""
        return {
            "request_id": self.request_id,
            "api": self.api,
            "key": self.caller,
            "model": self.model,
            "route": self.route,
            "target": self.target,
            "status": self.status,
            "attempts": self.attempts,
            "cache": self.cache,
            "stream": self.stream,
            "duration_ms": round(duration * 1000, 2),
            "ttft_ms": round(self.first_token * 1000, 2) if self.first_token else None,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "disconnected": self.disconnected,
            "error": self.bounded_error(),
        }
