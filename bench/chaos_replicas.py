"""The chaos run's checks of replicas behind the same Redis: a key's request limit holds exactly
across them, and a breaker opened on one replica shows open on the others.

Both use upstreams of their own (up-steady always answers, up-dead always fails) and requests
of their own, outside the load, so that their figures depend on the proxy alone."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.chaos_policy import EXACT_LIMIT, KEYS

LIMIT_BURST = EXACT_LIMIT * 3 // 2  # sent at once; exactly EXACT_LIMIT of them may pass
SHARED_WITHIN = 3.0  # seconds for the others to adopt an opening (they poll Redis every 0.5 s)
MAX_FAILING = 8  # requests to up-dead before its breaker must be open (failures: 5, 2 attempts)
OPENED = frozenset({"open", "half-open"})  # half-open: the (2 s) cooldown is over, still shared


@dataclass
class Verdict:
    ok: bool
    what: str  # one line for the ledger's events
    figures: dict[str, Any] = field(default_factory=dict)


def _body(model: str, text: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": f"echo: {text}"}]}


async def _post(http: httpx.AsyncClient, url: str, body: dict[str, Any], key: str) -> str:
    """'<status> <code>' of the answer ('200' when it is one), or the transport error."""
    headers = {"Authorization": f"Bearer {key}"}
    try:
        resp = await http.post(f"{url}/v1/chat/completions", json=body, headers=headers)
    except httpx.HTTPError as exc:
        return type(exc).__name__
    if resp.status_code == 200:
        return "200"
    try:
        code = resp.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = "malformed"
    return f"{resp.status_code} {code}"


async def limit_burst(http: httpx.AsyncClient, urls: list[str]) -> Verdict:
    """LIMIT_BURST requests at once on the "exact" key, request i to replica i mod n."""
    key = KEYS["exact"]
    started = time.monotonic()
    answers = await asyncio.gather(
        *(
            _post(http, urls[i % len(urls)], _body("chat-exact", f"exact{i}"), key)
            for i in range(LIMIT_BURST)
        )
    )
    took = time.monotonic() - started
    counts = Counter(answers)
    passed, refused = counts["200"], counts["429 rate_limit_exceeded"]
    ok = passed == EXACT_LIMIT and refused == LIMIT_BURST - EXACT_LIMIT
    what = (
        f"key limit {EXACT_LIMIT}/minute across {len(urls)} replicas: {passed} of {LIMIT_BURST} "
        f"answered 200, {refused} 429 rate_limit_exceeded (burst of {took:.1f} s)"
    )
    others = {a: n for a, n in counts.items() if a not in ("200", "429 rate_limit_exceeded")}
    if others:
        what += f", others: {others}"
    figures = {"limit": EXACT_LIMIT, "sent": LIMIT_BURST, "answers": dict(counts)}
    return Verdict(ok, what, figures | {"seconds": round(took, 2)})


async def _route_state(http: httpx.AsyncClient, url: str, label: str) -> str | None:
    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
        state: str = (await http.get(f"{url}/health")).json()["routes"][label]["state"]
        return state
    return None


async def _dead_route(http: httpx.AsyncClient, url: str) -> str:
    routes: dict[str, dict[str, Any]] = (await http.get(f"{url}/health")).json()["routes"]
    return next(label for label, route in routes.items() if route["upstream"] == "up-dead")


async def breaker_shared(http: httpx.AsyncClient, urls: list[str]) -> Verdict:
    """Fail requests through the first replica until up-dead's breaker opens there; then every
    other replica must show it open within SHARED_WITHIN seconds, without a request of its own."""
    first, others = urls[0], urls[1:]
    label = await _dead_route(http, first)
    answers: Counter[str] = Counter()
    while sum(answers.values()) < MAX_FAILING:
        if await _route_state(http, first, label) in OPENED:
            break
        answers[await _post(http, first, _body("chat-dead", "dead"), KEYS["svc"])] += 1
    sent = sum(answers.values())
    figures: dict[str, Any] = {"route": label, "failing_requests": sent, "answers": dict(answers)}
    if (state := await _route_state(http, first, label)) not in OPENED:
        return Verdict(False, f"breaker of {label} still {state} after {sent} failures", figures)
    opened = time.monotonic()
    seen: dict[int, float] = {}
    while len(seen) < len(others) and time.monotonic() - opened < SHARED_WITHIN:
        for replica, url in enumerate(others, 2):
            if replica not in seen and await _route_state(http, url, label) in OPENED:
                seen[replica] = round(time.monotonic() - opened, 2)
        await asyncio.sleep(0.05)
    figures["seen_open_after_s"] = seen
    shown = ", ".join(f"replica {r} after {s:.1f} s" for r, s in seen.items()) or "none"
    what = (
        f"breaker of {label} opened on replica 1 ({sent} failing requests); open on the "
        f"others: {shown} ({len(seen)}/{len(others)} within {SHARED_WITHIN:.0f} s)"
    )
    return Verdict(len(seen) == len(others), what, figures)
