"""What the gateway tells about itself and its policy: the models a key may use, a key's own
usage, health (routes, breakers, storage, the policy's version). A view over the gateway's
live state (it changes on every reload), owned by the gateway."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from proxy.errors import ModelNotFoundError
from proxy.wire import Model, ModelList

if TYPE_CHECKING:
    from proxy.gateway import Gateway


class GatewayStatus:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def key_usage(self, authorization: str | None) -> dict[str, Any]:
        """The caller's own limits, their state and its budget."""
        gateway = self.gateway
        return await gateway.limiter.usage(gateway.authenticate(authorization))

    def list_models(self, authorization: str | None) -> ModelList:
        policy = self.gateway.policy
        caller = self.gateway.authenticate(authorization)
        created = int(policy.loaded_at)
        names = [name for name in policy.public_models if caller.allows(name)]
        return ModelList([Model(id=name, created=created) for name in names])

    def get_model(self, authorization: str | None, model_id: str) -> Model:
        policy = self.gateway.policy
        caller = self.gateway.authenticate(authorization)
        if not caller.allows(model_id) or policy.resolve(model_id) is None:
            raise ModelNotFoundError(
                f"The model `{model_id}` does not exist or you do not have access to it.",
                param="model",
            )
        return Model(id=model_id, created=int(policy.loaded_at))

    async def health(self) -> dict[str, Any]:
        """What /health shows: routes and their breakers, recent error rates, storage
        reachability, the policy version and the last reload."""
        gateway = self.gateway
        policy = gateway.policy
        upstreams: dict[str, dict[str, Any]] = {}
        for name, config in policy.config.upstreams.items():
            upstreams[name] = {"type": config.__struct_config__.tag, "configured": True}
            if name in policy.unconfigured:
                upstreams[name].update(configured=False, missing_env=policy.unconfigured[name])
        routes = {}
        for model in policy.models.values():
            for route in model.routes:
                state = gateway.board[route.label]
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
            "status": "draining" if gateway.draining else ("ok" if gateway.started else "starting"),
            "ready": gateway.ready,
            "policy": {
                "version": policy.version,
                "source": policy.source,
                "loaded_at": policy.loaded_at,
                "last_reload": gateway.last_reload,
            },
            "upstreams": upstreams,
            "routes": routes,
            "storage": {
                "limits": await gateway.limiter.store.reachable(),
                "cache": await gateway.cache.reachable(),
            },
        }
