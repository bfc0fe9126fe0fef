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


_NAMES = {
    kind: (
        f"x-ratelimit-limit-{kind}",
        f"x-ratelimit-remaining-{kind}",
        f"x-ratelimit-reset-{kind}",
    )
    for kind in ("requests", "tokens")
}


def rate_limit_headers(states: list[WindowState]) -> dict[str, str]:
    """The tightest window of each kind (least left, as a share of its limit)."""
    tightest: dict[str, WindowState] = {}
    for state in states:
        known = tightest.get(state.kind)
        if known is None or _tighter(state, known):
            tightest[state.kind] = state
    headers: dict[str, str] = {}
    for kind, state in tightest.items():
        limit, remaining, reset = _NAMES[kind]
        headers[limit] = str(state.limit)
        headers[remaining] = str(max(state.remaining, 0))
        headers[reset] = go_duration(state.reset)
    return headers


def _tighter(state: WindowState, than: WindowState) -> bool:
    share, other = state.remaining / max(state.limit, 1), than.remaining / max(than.limit, 1)
    return share < other or (share == other and state.remaining < than.remaining)
