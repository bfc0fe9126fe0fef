"""What the gateway tells about itself and its policy: the models a key may use, a key's own
usage, health (routes, breakers, storage, the policy's version) and stats. A mixin of
`Gateway`, which owns the state it reads."""

from __future__ import annotations

from typing import Any

from proxy.cache.cache import ResponseCache
from proxy.errors import ModelNotFoundError
from proxy.limits.limiter import Limiter
from proxy.observability.metrics import Metrics
from proxy.policy import Policy
from proxy.routing.health import HealthBoard
from proxy.wire import Model, ModelList


class GatewayStatus:
    _policy: Policy
    board: HealthBoard
    limiter: Limiter
    cache: ResponseCache
    metrics: Metrics
    started: bool
    draining: bool
    last_reload: dict[str, Any] | None

    async def key_usage(self, authorization: str | None) -> dict[str, Any]:
        """The caller's own limits, their state and its budget."""
        return await self.limiter.usage(self._policy.authenticate(authorization))

    def list_models(self, authorization: str | None) -> ModelList:
        policy = self._policy
        caller = policy.authenticate(authorization)
        created = int(policy.loaded_at)
        names = [name for name in policy.public_models if caller.allows(name)]
        return ModelList([Model(id=name, created=created) for name in names])

    def get_model(self, authorization: str | None, model_id: str) -> Model:
        policy = self._policy
        caller = policy.authenticate(authorization)
        if not caller.allows(model_id) or policy.resolve(model_id) is None:
            raise ModelNotFoundError(
                f"The model `{model_id}` does not exist or you do not have access to it.",
                param="model",
            )
        return Model(id=model_id, created=int(policy.loaded_at))

    @property
    def ready(self) -> bool:
        return self.started and not self.draining

    async def health(self) -> dict[str, Any]:
        """What /health shows: routes and their breakers, recent error rates, storage
        reachability, the policy version and the last reload."""
        policy = self._policy
        upstreams: dict[str, dict[str, Any]] = {}
        for name, config in policy.config.upstreams.items():
            upstreams[name] = {"type": config.__struct_config__.tag, "configured": True}
            if name in policy.unconfigured:
                upstreams[name].update(configured=False, missing_env=policy.unconfigured[name])
        routes = {}
        for model in policy.models.values():
            for route in model.routes:
                state = self.board[route.label]
                rate, calls = state.error_rate()
                routes[route.label] = {
                    "upstream": route.upstream,
                    "state": state.state(),
                    "inflight": state.inflight,
                    "latency_ms": round(state.latency * 1000, 1) if state.latency else None,
                    "error_rate_1m": None if rate is None else round(rate, 3),
                    "calls_1m": calls,
                }
        return {
            "status": "draining" if self.draining else ("ok" if self.started else "starting"),
            "ready": self.ready,
            "policy": {
                "version": policy.version,
                "source": policy.source,
                "loaded_at": policy.loaded_at,
                "last_reload": self.last_reload,
            },
            "upstreams": upstreams,
            "routes": routes,
            "storage": {
                "limits": await self.limiter.store.reachable(),
                "cache": await self.cache.reachable(),
            },
        }

    def stats(self) -> dict[str, list[dict[str, Any]]]:
        return self.metrics.snapshot()
