"""OpenAI's x-ratelimit-* headers for the caller's tightest limits."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WindowState:
    kind: str  # "requests" | "tokens"
    limit: int
    remaining: int
    reset: float  # seconds until the window has room again


def go_duration(seconds: float) -> str:
    """Durations as OpenAI writes them: 12ms, 1s, 6m0s, 1h2m3s."""
    if seconds < 1:
        return f"{max(int(seconds * 1000), 0)}ms"
    whole = int(seconds)
    fraction = seconds - whole
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs + fraction:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    if minutes:
        return f"{minutes}m{text}"
    return text


def rate_limit_headers(states: list[WindowState]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for kind in ("requests", "tokens"):
        windows = [s for s in states if s.kind == kind]
        if not windows:
            continue
        tightest = min(windows, key=lambda s: (s.remaining / max(s.limit, 1), s.remaining))
        headers[f"x-ratelimit-limit-{kind}"] = str(tightest.limit)
        headers[f"x-ratelimit-remaining-{kind}"] = str(max(tightest.remaining, 0))
        headers[f"x-ratelimit-reset-{kind}"] = go_duration(tightest.reset)
    return headers
