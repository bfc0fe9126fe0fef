"""The policy's limits per scope: the caller's key (or `limits.default`), the model (all
callers together), and per attempt the route and its upstream. Key and model limits answer
429; a full route or upstream is skipped by the router. Budgets are checked at admission
and spend is charged, with token usage, when the request ends."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy.config import BudgetConfig, PriceConfig, ProxyConfig
from proxy.errors import InsufficientQuotaError, RateLimitError
from proxy.keys import Caller
from proxy.limits.budgets import cost_usd, period_end, spend_key, spend_ttl
from proxy.limits.headers import WindowState, rate_limit_headers
from proxy.limits.scopes import Hold, Limits, OverBudget, Refused, Scope, compile_limits
from proxy.limits.store import LimitStore
from proxy.observability.metrics import Metrics
from proxy.policy import route_ident


@dataclass(slots=True)
class Admission:
    """What a request holds from admission to its end."""

    caller: str
    estimate: int
    budget: BudgetConfig | None = None  # the key's budget, spend is added to it at the end
    holds: list[Hold] = field(default_factory=list)
    route_holds: dict[str, list[Hold]] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    finished: bool = False


class Limiter:
    def __init__(self, config: ProxyConfig, metrics: Metrics, spend_dir: Path) -> None:
        self.store = LimitStore(config.limits, metrics, spend_dir)
        self.metrics = metrics
        self.configure(config)

    def configure(self, config: ProxyConfig) -> None:
        """Take a reloaded policy's limits (counters in storage carry over)."""
        self.default = compile_limits("key", config.limits.default)
        self.models = {n: compile_limits("model", m.limits) for n, m in config.models.items()}
        self.upstreams = {
            n: compile_limits("upstream", u.limits) for n, u in config.upstreams.items()
        }
        # a route's limits and price belong to that route of that model (a quota shared by
        # every model on one deployment is the upstream's `limits`)
        self.routes: dict[str, Limits | None] = {}
        self.prices: dict[str, PriceConfig] = dict(config.prices)
        self.priced = bool(config.prices)
        self.route_prices: dict[str, PriceConfig] = {}
        for name, model in config.models.items():
            for index, route in enumerate(model.routes):
                ident = route_ident(name, index)
                self.routes[ident] = compile_limits("route", route.limits)
                if route.price is not None:
                    self.route_prices[ident] = route.price
                    self.priced = True
        # whether any route or upstream has limits: without, attempts need no admission
        self.routes_limited = any(self.routes.values()) or any(self.upstreams.values())

    def key_limits(self, caller: Caller) -> Limits | None:
        """The key's own limits, else `limits.default` (which also covers anonymous)."""
        key = caller.key
        return key.limits if key is not None and key.own_limits else self.default

    async def admit(
        self, caller: Caller, model: str, estimate: int, cached: bool = False
    ) -> Admission:
        """Key and model limits and the key's budget: a 429 when any is exhausted. A cached
        answer (`cached`) counts against request limits only: it costs no tokens, no spend."""
        key_budget = caller.key.budget if caller.key is not None else None
        admission = Admission(caller.name, estimate, key_budget)
        key_limits, model_limits = self.key_limits(caller), self.models.get(model)
        scopes = []
        if key_limits is not None:
            scopes.append(Scope(key_limits, caller.name, tokens=not cached, states=True))
        if model_limits is not None:
            scopes.append(Scope(model_limits, model, tokens=not cached))
        budget = key_budget if not cached else None
        spend = (spend_key(caller.name, budget.period), budget.usd) if budget else None
        try:
            admission.holds = await self.store.admit(scopes, estimate, spend)
        except Refused as refused:
            self.metrics.child(self.metrics.rate_limited, refused.scope).inc()
            if key_limits is not None:
                admission.headers = rate_limit_headers(
                    await self.store.states(key_limits, caller.name)
                )
            raise _too_many(refused, admission.headers) from None
        except OverBudget:
            assert budget is not None
            self.metrics.child(self.metrics.rate_limited, "budget").inc()
            raise InsufficientQuotaError(
                f"The key '{caller.name}' has spent its budget of ${budget.usd:g} for this "
                f"{budget.period} (resets {period_end(budget.period):%Y-%m-%d} UTC)."
            ) from None
        if key_limits is not None:
            admission.headers = rate_limit_headers(admission.holds[0].states)
        return admission

    async def admit_route(self, admission: Admission, route: str, upstream: str) -> bool:
        """The route's and its upstream's limits; False when either is full (skip it).
        `route` is the route's identity (`route_ident`)."""
        pairs = ((self.routes.get(route), route), (self.upstreams.get(upstream), upstream))
        scopes = [Scope(lim, ident) for lim, ident in pairs if lim is not None]
        if not scopes:
            return True
        try:
            admission.route_holds[route] = await self.store.admit(scopes, admission.estimate)
        except Refused as refused:
            self.metrics.child(self.metrics.rate_limited, refused.scope).inc()
            return False
        return True

    async def release_route(self, admission: Admission, route: str) -> None:
        for hold in admission.route_holds.pop(route, []):
            await self.store.release(hold)

    async def finish(
        self,
        admission: Admission,
        route: str | None,
        upstream_model: str | None,
        model: str,
        prompt: int,
        completion: int,
    ) -> float:
        """Charge usage on every scope that admitted the request, add its spend, and let go
        of its concurrency slots; the spend in USD. Safe to call twice."""
        if admission.finished:
            return 0.0
        admission.finished = True
        if not self.to_settle(admission):
            return 0.0
        served = admission.route_holds.get(route, []) if route else []
        ends = [(hold, True) for hold in admission.holds + served]
        for ident, holds in admission.route_holds.items():
            ends += [(hold, False) for hold in holds if ident != route]
        price = self.route_prices.get(route or "") or self.prices.get(upstream_model or "")
        usd = cost_usd(price, prompt, completion)
        spend = None
        if usd > 0:
            self.metrics.child(self.metrics.spend, admission.caller, model).inc(usd)
            budget = admission.budget
            if budget is not None:
                period = budget.period
                spend = (spend_key(admission.caller, period), usd, spend_ttl(period))
        await self.store.settle(ends, prompt + completion, spend)
        admission.route_holds.clear()
        return usd

    def to_settle(self, admission: Admission) -> bool:
        """Does the end of this request charge or release anything (a token window, a
        concurrency slot, a route's hold, a price)? When not, it needs no storage at all."""
        if self.priced or admission.route_holds:
            return True
        return any(hold.entered or hold.limits.tokens for hold in admission.holds)

    async def release(self, admission: Admission) -> None:
        for hold in admission.holds:
            await self.store.release(hold)
        for ident in list(admission.route_holds):
            await self.release_route(admission, ident)

    async def usage(self, caller: Caller) -> dict[str, Any]:
        """A key's limits, their current state, and its budget (GET /v1/proxy/keys/me)."""
        lim = self.key_limits(caller)
        states: list[WindowState] = await self.store.states(lim, caller.name) if lim else []
        report: dict[str, Any] = {
            "key": caller.name,
            "limits": [
                {
                    "kind": s.kind,
                    "limit": s.limit,
                    "remaining": s.remaining,
                    "reset_seconds": round(s.reset, 3),
                }
                for s in states
            ],
        }
        if lim is not None and lim.concurrency is not None:
            in_flight = await self.store.in_flight(lim, caller.name)
            report["concurrency"] = {"limit": lim.concurrency, "in_flight": in_flight}
        budget = caller.key.budget if caller.key is not None else None
        if budget is not None:
            spent = await self.store.spend(spend_key(caller.name, budget.period))
            report["budget"] = {
                "usd": budget.usd,
                "period": budget.period,
                "spent_usd": round(spent, 6),
                "remaining_usd": round(max(budget.usd - spent, 0.0), 6),
                "resets_at": period_end(budget.period).isoformat(),
            }
        return report

    async def close(self) -> None:
        await self.store.close()


def _too_many(refused: Refused, headers: dict[str, str]) -> RateLimitError:
    what = "concurrent requests" if refused.kind == "concurrency" else refused.kind
    return RateLimitError(
        f"Rate limit reached for {what} ({refused.scope} limit); try again later.",
        retry_after=refused.retry_after,
        headers=headers,
    )
