"""The chaos run's check of the admin API under load: a runtime key made on one replica, used
on every replica, rotated on another, revoked on the first. Each change must reach every
replica within ADMIN_WITHIN seconds (the replica that made it at once): the new key answered,
the rotated-out secret refused, the revoked key refused; the audit trail names the three
changes. Replicas share the admin store, a SQLite file that each polls every second.

The key's requests go to chat-exact (up-steady, always answering), so a refusal is the key's."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import httpx

from bench.chaos_policy import ADMIN_KEY
from bench.chaos_replicas import Verdict

ADMIN_WITHIN = 1.0  # seconds for a key change to show on every replica
GIVE_UP = 4.0  # seconds of probing before a replica counts as never seeing the change
PROBE_EVERY = 0.05
RUNTIME_KEY = "chaos-runtime"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
BODY = {"model": "chat-exact", "messages": [{"role": "user", "content": "echo: admin"}]}


async def _probe(http: httpx.AsyncClient, url: str, secret: str) -> int | str:
    try:
        resp = await http.post(
            f"{url}/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {secret}"}
        )
    except httpx.HTTPError as exc:
        return type(exc).__name__
    return resp.status_code


async def _seen(
    http: httpx.AsyncClient, url: str, secret: str, wanted: int, since: float
) -> tuple[float | None, Counter[Any]]:
    """Seconds from `since` until `url` answers `wanted` for `secret` (None: never), and the
    other answers it gave meanwhile."""
    others: Counter[Any] = Counter()
    while time.monotonic() - since < GIVE_UP:
        status = await _probe(http, url, secret)
        if status == wanted:
            return round(time.monotonic() - since, 3), others
        others[status] += 1
        await asyncio.sleep(PROBE_EVERY)
    return None, others


async def _everywhere(
    http: httpx.AsyncClient,
    urls: list[str],
    secret: str,
    wanted: int,
    what: str,
    at: int,
    since: float,
) -> Verdict:
    """Every replica must answer `wanted` for `secret` within ADMIN_WITHIN seconds of `since`
    (when the change was answered), the one (index `at`) that made it at the first probe."""
    seen = await asyncio.gather(*(_seen(http, url, secret, wanted, since) for url in urls))
    took = {replica: s for replica, (s, _) in enumerate(seen, 1)}
    first_probe = not seen[at][1]
    within = [s for s in took.values() if s is not None and s <= ADMIN_WITHIN]
    ok = len(within) == len(urls) and first_probe
    shown = ", ".join(
        f"replica {r} {'never' if s is None else f'{s:.2f} s'}" for r, s in took.items()
    )
    line = f"{what} on {len(within)}/{len(urls)} replicas within {ADMIN_WITHIN:.0f} s ({shown})"
    if not first_probe:
        line += f"; replica {at + 1}, which made the change, answered {dict(seen[at][1])} first"
    return Verdict(ok, line, {"seconds": took})


async def _admin(http: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> Any:
    resp = await http.request(method, url, headers=ADMIN, **kwargs)
    if resp.status_code >= 300:
        raise RuntimeError(f"{method} {url} answered {resp.status_code}: {resp.text[:200]}")
    return resp.json()


async def runtime_key_cycle(http: httpx.AsyncClient, urls: list[str]) -> list[Verdict]:
    """Create, use, rotate, revoke; one verdict per step (the audit checked with the last)."""
    first, last = 0, len(urls) - 1
    keys = f"{urls[first]}/admin/keys"
    try:
        body = {"name": RUNTIME_KEY, "models": ["chat-exact"]}
        made = await _admin(http, "POST", keys, json=body)
    except (RuntimeError, httpx.HTTPError) as exc:
        return [Verdict(False, f"runtime key not made: {exc}")]
    since = time.monotonic()
    created = await _everywhere(http, urls, made["key"], 200, "runtime key answered", first, since)
    try:
        rotate = f"{urls[last]}/admin/keys/{RUNTIME_KEY}/rotate"
        rotated = await _admin(http, "POST", rotate)
    except (RuntimeError, httpx.HTTPError) as exc:
        return [created, Verdict(False, f"runtime key not rotated: {exc}")]
    since = time.monotonic()
    old, new = await asyncio.gather(
        _everywhere(http, urls, made["key"], 401, "rotated-out secret refused", last, since),
        _everywhere(http, urls, rotated["key"], 200, "rotated secret answered", last, since),
    )
    rotation = Verdict(
        old.ok and new.ok, f"{old.what}; {new.what}", {"old": old.figures, "new": new.figures}
    )
    try:
        await _admin(http, "DELETE", f"{keys}/{RUNTIME_KEY}")
    except (RuntimeError, httpx.HTTPError) as exc:
        return [created, rotation, Verdict(False, f"runtime key not revoked: {exc}")]
    since = time.monotonic()
    revoked = await _everywhere(
        http, urls, rotated["key"], 401, "revoked key refused", first, since
    )
    return [created, rotation, await _with_audit(http, urls[last], revoked)]


async def _with_audit(http: httpx.AsyncClient, url: str, revoked: Verdict) -> Verdict:
    try:
        audit = await _admin(http, "GET", f"{url}/admin/audit", params={"key": RUNTIME_KEY})
        actions = [entry["action"] for entry in reversed(audit["data"])]
    except (RuntimeError, httpx.HTTPError, KeyError, TypeError) as exc:
        actions = [f"unreadable: {exc}"]
    ok = revoked.ok and actions == ["create", "rotate", "delete"]
    what = f"{revoked.what}; audit trail {', '.join(map(str, actions))}"
    return Verdict(ok, what, revoked.figures | {"audit": actions})
