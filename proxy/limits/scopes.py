"""What the limiter works with: a scope's compiled limits, what a request asks of a scope,
what an admitted scope holds until the request ends, and the two refusals."""

from __future__ import annotations

from dataclasses import dataclass, field

import limits

from proxy.config import LimitSpec
from proxy.limits.headers import WindowState
from proxy.limits.scripted import ScopeWindows


@dataclass(frozen=True, slots=True)
class Limits:
    scope: str  # key | model | upstream | route
    requests: tuple[limits.RateLimitItem, ...] = ()
    bucket: tuple[float, int] | None = None  # (seconds per request, capacity)
    tokens: tuple[limits.RateLimitItem, ...] = ()
    concurrency: int | None = None

    @property
    def empty(self) -> bool:
        return not (self.requests or self.bucket or self.tokens or self.concurrency)

    @property
    def windows_only(self) -> bool:
        """Only request and token windows: nothing held until the request ends."""
        return self.bucket is None and self.concurrency is None


def compile_limits(scope: str, spec: LimitSpec | None) -> Limits | None:
    if spec is None:
        return None
    requests = tuple(limits.parse_many(spec.requests)) if spec.requests else ()
    bucket = None
    if spec.burst is not None and requests:
        first, requests = requests[0], requests[1:]
        bucket = (first.get_expiry() / first.amount, spec.burst)
    tokens = tuple(limits.parse_many(spec.tokens)) if spec.tokens else ()
    compiled = Limits(scope, requests, bucket, tokens, spec.concurrency)
    return None if compiled.empty else compiled


class OverBudget(Exception):
    def __init__(self, spent: float) -> None:
        super().__init__(f"spent {spent}")
        self.spent = spent


class Refused(Exception):
    def __init__(self, scope: str, kind: str, retry_after: float | None) -> None:
        super().__init__(f"{scope} {kind} limit")
        self.scope = scope
        self.kind = kind
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Scope:
    """One scope a request asks admission of: `tokens` tests its token windows against the
    prompt estimate (not for a cached answer), `states` reports its windows for headers."""

    limits: Limits
    ident: str
    tokens: bool = True
    states: bool = False


@dataclass(slots=True)
class Hold:
    """What one admitted scope holds until the request ends."""

    limits: Limits
    ident: str
    entered: bool = False
    states: list[WindowState] = field(default_factory=list)
    windows: ScopeWindows | None = None  # its Redis keys, where admission is scripted
    lease: str = ""  # its concurrency slot, as the lease it holds in Redis
