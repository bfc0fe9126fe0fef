"""The attempts a request may make: a plan per model (its routes in strategy order, made by
the dispatcher), then one per fallback, each built only when reached; and the error when a
model has no usable route at all.

Only routes whose upstream can answer the request are planned (an embedding-only upstream
never gets a chat request, nor a chat-only one an embeddings request); a request that names
an upstream to continue on (`preferred_upstream`) tries that upstream's routes first.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from proxy.errors import UpstreamError, UpstreamNotConfiguredError
from proxy.formats.base import FrontRequest
from proxy.policy import Policy, ResolvedModel, Route
from proxy.routing.dispatch import Attempt, Dispatcher, Plan
from proxy.upstreams.base import UpstreamCall
from proxy.upstreams.pool import UpstreamPool


@dataclass(frozen=True, slots=True)
class Planning:
    """What planning needs besides the request itself."""

    policy: Policy
    upstreams: UpstreamPool
    dispatcher: Dispatcher
    request_id: str


def plans(planning: Planning, resolved: ResolvedModel, request: FrontRequest) -> Iterator[Plan]:
    """A plan for the model, then one per fallback, each made only when reached."""
    plan = _plan(planning, resolved, request)
    if not plan.attempts and not plan.parked:
        raise _unusable(planning.policy, resolved, request)
    yield plan
    for name in resolved.policy.fallbacks:
        fallback = planning.policy.resolve(name)
        if fallback is not None:
            yield _plan(planning, fallback, request)


def _plan(planning: Planning, resolved: ResolvedModel, request: FrontRequest) -> Plan:
    request_id = planning.request_id

    def make(route: Route) -> Attempt | None:
        upstream = planning.upstreams.get(route.upstream)
        if upstream is None or not request.serves(route.serves):
            return None
        model = resolved.upstream_model(route)

        def build() -> UpstreamCall:
            return request.call(route, model, request_id)

        return Attempt(route, upstream, resolved, build)

    plan = planning.dispatcher.plan(resolved, make)
    preferred = request.preferred_upstream
    if preferred is not None:
        plan.attempts.sort(key=lambda attempt: attempt.route.upstream != preferred)
    return plan


def _unusable(policy: Policy, resolved: ResolvedModel, request: FrontRequest) -> Exception:
    routes = resolved.policy.routes
    if not any(request.serves(route.serves) for route in routes):
        return request.unsupported(resolved.public)
    missing = {
        r.upstream: policy.unconfigured[r.upstream]
        for r in routes
        if r.upstream in policy.unconfigured
    }
    if missing:
        names = ", ".join(f"{var} (upstream '{up}')" for up, var in missing.items())
        return UpstreamNotConfiguredError(
            f"The model `{resolved.public}` cannot be served: its upstream is not "
            f"configured. Set the environment variable {names}."
        )
    return UpstreamError(f"The model `{resolved.public}` has no usable route.")
