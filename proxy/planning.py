"""The attempts a request may make: a plan per model (its routes in strategy order, made by
the dispatcher), then one per fallback, each built only when reached; and the error when a
model has no usable route at all."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from proxy.errors import UpstreamError, UpstreamNotConfiguredError
from proxy.policy import Policy, ResolvedModel, Route
from proxy.routing.dispatch import Attempt, Dispatcher, Plan
from proxy.upstreams.base import UpstreamCall
from proxy.upstreams.pool import UpstreamPool
from proxy.wire import ChatRequestHead, upstream_body


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    """What planning needs besides the request itself."""

    policy: Policy
    upstreams: UpstreamPool
    dispatcher: Dispatcher
    request_id: str


def plans(
    request: PlannedRequest, resolved: ResolvedModel, head: ChatRequestHead, body: bytes
) -> Iterator[Plan]:
    """A plan for the model, then one per fallback, each made only when reached."""
    plan = _plan(request, resolved, head, body)
    if not plan.attempts and not plan.parked:
        raise _unusable(request.policy, resolved)
    yield plan
    for name in resolved.policy.fallbacks:
        fallback = request.policy.resolve(name)
        if fallback is not None:
            yield _plan(request, fallback, head, body)


def _plan(
    request: PlannedRequest, resolved: ResolvedModel, head: ChatRequestHead, body: bytes
) -> Plan:
    request_id = request.request_id

    def make(route: Route) -> Attempt | None:
        upstream = request.upstreams.get(route.upstream)
        if upstream is None:
            return None
        model = resolved.upstream_model(route)

        def build() -> UpstreamCall:
            prepared = upstream_body(body, head, model, route.drop_params)
            return UpstreamCall(prepared, model, route.timeouts, request_id, route.drop_params)

        return Attempt(route, upstream, resolved, build)

    return request.dispatcher.plan(resolved, make)


def _unusable(policy: Policy, resolved: ResolvedModel) -> Exception:
    missing = {
        r.upstream: policy.unconfigured[r.upstream]
        for r in resolved.policy.routes
        if r.upstream in policy.unconfigured
    }
    if missing:
        names = ", ".join(f"{var} (upstream '{up}')" for up, var in missing.items())
        return UpstreamNotConfiguredError(
            f"The model `{resolved.public}` cannot be served: its upstream is not "
            f"configured. Set the environment variable {names}."
        )
    return UpstreamError(f"The model `{resolved.public}` has no usable route.")
