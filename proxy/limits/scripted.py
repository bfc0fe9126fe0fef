"""Every scope of a request admitted in Redis with one script: one round trip, atomic, all or
nothing. It tests concurrency, the token bucket and the sliding-window counters of every
scope, and only when all have room takes the slots and hits the request windows; the end of
a request (token charges and concurrency releases) is a second script.

A concurrency slot is a lease: the request's own token in a sorted set, scored by when it
expires. Releasing it twice, or releasing one that was never taken, changes nothing, so an
admission that timed out (and may yet run in Redis) can be undone safely later.

The windows are the `limits` library's sliding-window counters, in its own keys and
arithmetic (a previous and a current counter per window, the previous one weighted by the
time it has left), so the library reads what these scripts write and the other way round.
That format is private to the library: tests/unit/limiting/test_limits_key_format.py compares
it with what the installed library writes, and pyproject.toml holds `limits` to the minor
release that test passed on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from proxy.limits.counters import BUCKET_LUA, LEASES_LUA, NOW_LUA
from proxy.limits.headers import WindowState
from proxy.limits.resp import Script, ScriptClient

_WINDOW_LUA = """
local function window(previous, current, expiry)
  local current_ttl = tonumber(redis.call('PTTL', current))
  if current_ttl > 0 and current_ttl < expiry then
    redis.call('RENAME', current, previous)
    redis.call('SET', current, 0, 'PX', current_ttl + expiry)
  end
  local previous_count = tonumber(redis.call('GET', previous)) or 0
  local previous_ttl = math.max(tonumber(redis.call('PTTL', previous)), 0)
  local current_count = tonumber(redis.call('GET', current)) or 0
  current_ttl = math.max(tonumber(redis.call('PTTL', current)), 0)
  local used = math.floor(previous_count * previous_ttl / expiry) + current_count
  return used, previous_count, previous_ttl, current_count, current_ttl
end

local function reset(previous_count, previous_ttl, current_count, current_ttl, expiry)
  local soonest = -1
  if previous_count > 0 then soonest = (previous_ttl / 1000) % (expiry / 1000 / previous_count) end
  if current_count > 0 and current_ttl > 0 then
    local current_reset = ((current_ttl - 1) % expiry + 1) / 1000  -- a new window: all of it
    if soonest < 0 or current_reset < soonest then soonest = current_reset end
  end
  return math.max(soonest, 0)
end

local function hit(current, amount, expiry)
  if redis.call('EXISTS', current) == 1 then
    redis.call('INCRBY', current, amount)
  else
    redis.call('SET', current, amount, 'PX', expiry * 2)
  end
end
"""

# ARGV[1]: the plan, one entry per scope: {c: concurrency cap or 0, b: [seconds per request,
# capacity] or false, s: 1 to report states, w: [[limit, expiry ms, cost, kind, test, hit]]}.
# KEYS, per scope in order: its concurrency key (when c > 0), its bucket key (when b), then
# the previous and current key of each window.
# ARGV[2]: how long a lease lives (seconds); ARGV[3]: this request's lease token; ARGV[4]: the
# key's budget in USD or "", its spend then the last of KEYS.
# Returns {1, kind, limit, remaining, reset, ...} or {0, scope index, kind, retry after}, or
# {0, 0, 'budget', spent} when the budget is spent.
_ADMIT_LUA = (
    _WINDOW_LUA
    + BUCKET_LUA
    + LEASES_LUA
    + NOW_LUA
    + """
local plan = cjson.decode(ARGV[1])
if ARGV[4] ~= '' then
  local spent = tonumber(redis.call('GET', KEYS[#KEYS]) or '0')
  if spent >= tonumber(ARGV[4]) then return {0, 0, 'budget', tostring(spent)} end
end
local taken = {}

local k = 1
for i, scope in ipairs(plan) do
  local entry = {}
  if scope.c > 0 then
    entry.inflight = KEYS[k]
    k = k + 1
    if leases_held(entry.inflight, now) >= scope.c then return {0, i, 'concurrency', '1'} end
  end
  if scope.b then
    local interval, capacity = scope.b[1], scope.b[2]
    entry.bucket = KEYS[k]
    k = k + 1
    local wait
    entry.tat, wait, entry.left = bucket_test(entry.bucket, now, interval, capacity)
    if wait > 0 then return {0, i, 'requests', tostring(wait)} end
  end
  entry.windows = {}
  for _, w in ipairs(scope.w) do
    local limit, expiry, cost = w[1], w[2], w[3]
    local previous, current = KEYS[k], KEYS[k + 1]
    k = k + 2
    local used, pc, pt, cc, ct = window(previous, current, expiry)
    if w[5] == 1 and used + cost > limit then
      return {0, i, w[4], tostring(reset(pc, pt, cc, ct, expiry))}
    end
    table.insert(entry.windows, {current, used, pc, pt, cc, ct, w})
  end
  taken[i] = entry
end

local states = {1}
for i, scope in ipairs(plan) do
  local entry = taken[i]
  if entry.inflight then
    lease_take(entry.inflight, now, ARGV[2], ARGV[3])
  end
  if entry.bucket then
    local interval, capacity = scope.b[1], scope.b[2]
    bucket_take(entry.bucket, entry.tat, interval, capacity)
    if scope.s == 1 then
      table.insert(states, 'requests')
      table.insert(states, capacity)
      table.insert(states, entry.left)
      table.insert(states, tostring((capacity - entry.left) * interval))
    end
  end
  for _, seen in ipairs(entry.windows) do
    local current, used, pc, pt, cc, ct, w = unpack(seen)
    local limit, expiry = w[1], w[2]
    if w[6] == 1 then
      hit(current, w[3], expiry)
      used = used + w[3]
      if cc == 0 then ct = tonumber(redis.call('PTTL', current)) end
      cc = cc + w[3]
    end
    if scope.s == 1 then
      table.insert(states, w[4])
      table.insert(states, limit)
      table.insert(states, math.max(limit - used, 0))
      table.insert(states, tostring(reset(pc, pt, cc, ct, expiry)))
    end
  end
end
return states
"""
)

# ARGV[1]: tokens to charge; ARGV[2]: a list, per scope: [lease to release or "", [[limit,
# expiry ms]]]. KEYS, per scope in order: its concurrency key, then the previous and current
# key of each token window. A charge larger than what is left fills the window. ARGV[3], [4]:
# spend to add (USD, or "") and its key's lifetime in seconds; the key is the last of KEYS.
_SETTLE_LUA = (
    _WINDOW_LUA
    + """
local tokens = tonumber(ARGV[1])
local plan = cjson.decode(ARGV[2])
local k = 1
for _, scope in ipairs(plan) do
  local inflight = KEYS[k]
  k = k + 1
  if scope[1] ~= '' then redis.call('ZREM', inflight, scope[1]) end
  for _, w in ipairs(scope[2]) do
    local limit, expiry = w[1], w[2]
    local previous, current = KEYS[k], KEYS[k + 1]
    k = k + 2
    if tokens > 0 then
      local used = window(previous, current, expiry)
      local charge = math.min(tokens, limit - used)
      if charge > 0 then hit(current, charge, expiry) end
    end
  end
end
if ARGV[3] ~= '' then
  redis.call('INCRBYFLOAT', KEYS[#KEYS], ARGV[3])
  redis.call('EXPIRE', KEYS[#KEYS], ARGV[4])
end
return 1
"""
)


@dataclass(frozen=True, slots=True)
class ScopeWindows:
    """One scope as the admit script sees it, with the library's keys for its windows."""

    inflight_key: str | None
    concurrency: int
    bucket_key: str | None
    bucket: tuple[float, int] | None
    windows: tuple[tuple[str, str, int, int, str], ...]  # previous, current, limit, ms, kind


@dataclass(frozen=True, slots=True)
class Refusal:
    scope: int  # index into the scopes given
    kind: str
    retry_after: float


@dataclass(frozen=True, slots=True)
class BudgetSpent:
    spent: float  # USD, at least the budget


PLANS_KEPT = 10_000  # admission plans remembered (one per set of scopes seen)
_ADMIT = Script.of(_ADMIT_LUA)
_SETTLE = Script.of(_SETTLE_LUA)


class ScriptedLimits:
    def __init__(self, scripts: ScriptClient, concurrency_ttl: int) -> None:
        self._scripts = scripts
        self._ttl = concurrency_ttl
        self._plans: dict[tuple[tuple[ScopeWindows, bool, bool], ...], tuple[list[str], bytes]] = {}
        self._encode = msgspec.json.Encoder().encode

    async def admit(
        self,
        scopes: Sequence[tuple[ScopeWindows, bool, bool]],
        estimate: int,
        lease: str,
        budget: tuple[str, float] | None = None,
    ) -> list[list[WindowState]] | Refusal | BudgetSpent:
        """Scopes as (windows, test token windows, report states); concurrency slots are
        taken under `lease`; `budget` as (spend key, USD). Returns each scope's states (empty
        unless asked), or the first refusal with nothing taken."""
        keys, plan = self._plan(scopes, estimate)
        if budget is not None:
            keys = [*keys, budget[0]]
        usd = "" if budget is None else repr(budget[1])
        args = [plan, self._ttl, lease, usd]
        reply = await self._scripts.run(_ADMIT, keys, args)
        if reply[0] == 0 and int(reply[1]) == 0:
            return BudgetSpent(float(reply[3]))
        if reply[0] == 0:
            return Refusal(int(reply[1]) - 1, _text(reply[2]), float(reply[3]))
        found: list[list[WindowState]] = [[] for _ in scopes]
        wanted = next((i for i, (_, _, states) in enumerate(scopes) if states), 0)
        values = reply[1:]
        for at in range(0, len(values), 4):
            kind, limit, remaining, reset = values[at : at + 4]
            found[wanted].append(WindowState(_text(kind), int(limit), int(remaining), float(reset)))
        return found

    def _plan(
        self, scopes: Sequence[tuple[ScopeWindows, bool, bool]], estimate: int
    ) -> tuple[list[str], bytes]:
        """The script's keys and plan; the same scopes without a token window to test give
        the same plan whatever the estimate, made once."""
        varies = any(w[4] == "tokens" for scope, _, _ in scopes for w in scope.windows)
        signature = None if varies else tuple(scopes)
        if signature is not None and (known := self._plans.get(signature)) is not None:
            return known
        keys: list[str] = []
        plan = []
        for scope, tokens, states in scopes:
            if scope.inflight_key is not None:
                keys.append(scope.inflight_key)
            if scope.bucket_key is not None:
                keys.append(scope.bucket_key)
            windows = []
            for previous, current, limit, expiry, kind in scope.windows:
                keys += (previous, current)
                requests = kind == "requests"
                cost = 1 if requests else max(min(estimate, limit), 1)
                test = 1 if requests or tokens else 0
                windows.append((limit, expiry, cost, kind, test, int(requests)))
            plan.append(
                {"c": scope.concurrency, "b": scope.bucket or False, "s": int(states), "w": windows}
            )
        made = keys, self._encode(plan)
        if signature is not None:
            if len(self._plans) >= PLANS_KEPT:
                self._plans.clear()
            self._plans[signature] = made
        return made

    async def settle(
        self,
        scopes: Sequence[tuple[ScopeWindows, str, bool]],
        tokens: int,
        spend: tuple[str, float, int] | None = None,
    ) -> None:
        """Scopes as (windows, the lease to release or "", charge its token windows); `spend`
        as (spend key, USD, seconds the key lives)."""
        keys: list[str] = []
        plan = []
        for scope, lease, charge in scopes:
            keys.append(scope.inflight_key or "")
            charged = [w for w in scope.windows if charge and w[4] == "tokens"]
            for previous, current, *_ in charged:
                keys += (previous, current)
            plan.append((lease, [(w[2], w[3]) for w in charged]))
        usd, ttl = "", 0
        if spend is not None:
            keys.append(spend[0])
            usd, ttl = repr(spend[1]), spend[2]
        await self._scripts.run(_SETTLE, keys, [tokens, self._encode(plan), usd, ttl])

    async def close(self) -> None:
        await self._scripts.close()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
