"""The compiled, immutable runtime policy built from a validated ProxyConfig.

A request reads one Policy object from start to end; a reload builds a new one and swaps
a single reference.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from proxy.config import (
    ModelConfig,
    ParamBounds,
    ProxyConfig,
    Timeouts,
    match_pattern,
    parse_size,
)
from proxy.keys import NO_KEYS, Caller, ClientKey, authenticate, key_from_config
from proxy.loader import LoadedConfig
from proxy.routing.rules import Rule, compile_rule, rule_headers
from proxy.upstreams.registry import serves

# Names resolved through a pattern are client text: their memo is bounded in entries and in
# bytes, and a name that resolves to nothing is never kept.
_RESOLVE_CACHE_SIZE = 4096
_RESOLVE_CACHE_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class Route:
    upstream: str
    model: str | None  # None: the part of the name a pattern matched
    weight: float
    label: str  # "<upstream>/<configured model or pattern>", for metrics and health
    timeouts: Timeouts
    drop_params: frozenset[str] = frozenset()
    ident: str = ""  # "<public model>#<index>": this route of this model (its limits, price)
    serves: frozenset[str] = frozenset({"chat"})  # wire formats its upstream takes


@dataclass(frozen=True, slots=True)
class ModelPolicy:
    name: str  # the configured public name or pattern
    routes: tuple[Route, ...]
    strategy: str
    is_pattern: bool
    fallbacks: tuple[str, ...] = ()
    params: dict[str, ParamBounds] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    public: str  # what the client asked for
    policy: ModelPolicy
    matched: str | None = None  # what a pattern's '*' matched

    def upstream_model(self, route: Route) -> str:
        if route.model is not None and self.matched is not None and "*" in route.model:
            return route.model.replace("*", self.matched, 1)  # "claude-*" keeps its prefix
        return route.model or self.matched or self.public


@dataclass(frozen=True, slots=True)
class _Pattern:
    prefix: str
    suffix: str
    policy: ModelPolicy

    def match(self, name: str) -> str | None:
        return match_pattern(self.policy.name, name)


@dataclass
class Policy:
    config: ProxyConfig
    source: str
    version: str
    unconfigured: dict[str, str]
    secrets: tuple[str, ...]
    models: dict[str, ModelPolicy]
    patterns: tuple[_Pattern, ...]
    keys: dict[bytes, ClientKey]
    max_body_bytes: int
    max_header_bytes: int = 65536
    rules: tuple[Rule, ...] = ()
    rule_headers: frozenset[bytes] = frozenset()
    loaded_at: float = field(default_factory=time.time)
    _resolved: dict[str, ResolvedModel] = field(default_factory=dict)
    _resolved_bytes: int = 0

    @property
    def public_models(self) -> list[str]:
        return [name for name, model in self.models.items() if not model.is_pattern]

    def resolve(self, name: str) -> ResolvedModel | None:
        """Exact names beat patterns; among patterns the longest literal prefix wins."""
        try:
            return self._resolved[name]
        except KeyError:
            pass
        resolved = self._resolve(name)
        if resolved is None:
            return None
        size = len(name) + len(resolved.matched or "")
        if (
            len(self._resolved) >= _RESOLVE_CACHE_SIZE
            or self._resolved_bytes + size > _RESOLVE_CACHE_BYTES
        ):
            self._resolved.clear()
            self._resolved_bytes = 0
        self._resolved[name] = resolved
        self._resolved_bytes += size
        return resolved

    def _resolve(self, name: str) -> ResolvedModel | None:
        exact = self.models.get(name)
        if exact is not None:
            return ResolvedModel(name, exact)
        for pattern in self.patterns:
            matched = pattern.match(name)
            if matched is not None:
                return ResolvedModel(name, pattern.policy, matched)
        return None

    def authenticate(
        self, authorization: str | None, runtime: Mapping[bytes, ClientKey] = NO_KEYS
    ) -> Caller:
        """The caller: the policy's keys, then the keys made at run time."""
        return authenticate(authorization, self.keys, runtime)


def compile_policy(loaded: LoadedConfig) -> Policy:
    config = loaded.config
    models = {name: _compile_model(name, model, config) for name, model in config.models.items()}
    patterns = sorted(
        (_pattern(name, policy) for name, policy in models.items() if policy.is_pattern),
        key=lambda p: (len(p.prefix), len(p.suffix)),
        reverse=True,
    )
    keys = {key.digest: key for key in map(key_from_config, config.keys)}
    rules = tuple(map(compile_rule, config.rules))
    return Policy(
        config=config,
        source=loaded.source,
        version=hashlib.sha256(loaded.text.encode()).hexdigest()[:12],
        unconfigured=dict(loaded.unconfigured),
        secrets=tuple(s for s in loaded.secrets if s),
        models=models,
        patterns=tuple(patterns),
        keys=keys,
        max_body_bytes=parse_size(config.server.max_body_bytes),
        max_header_bytes=parse_size(config.server.max_header_bytes),
        rules=rules,
        rule_headers=rule_headers(rules),
    )


def _pattern(name: str, policy: ModelPolicy) -> _Pattern:
    prefix, _, suffix = name.partition("*")
    return _Pattern(prefix, suffix, policy)


def _compile_model(name: str, model: ModelConfig, config: ProxyConfig) -> ModelPolicy:
    routes = []
    for index, route in enumerate(model.routes):
        base = config.upstreams[route.upstream].timeout
        override = model.timeout
        timeouts = base
        if override is not None:
            timeouts = Timeouts(
                connect=override.connect or base.connect,
                first_token=override.first_token or base.first_token,
                idle=override.idle or base.idle,
                total=override.total or base.total,
            )
        label = f"{route.upstream}/{route.model or name}"
        drop = frozenset(route.drop_params)
        formats = serves(config.upstreams[route.upstream])
        routes.append(
            Route(
                route.upstream,
                route.model,
                route.weight,
                label,
                timeouts,
                drop,
                ident=route_ident(name, index),
                serves=formats,
            )
        )
    return ModelPolicy(
        name,
        tuple(routes),
        model.strategy,
        "*" in name,
        tuple(model.fallbacks),
        dict(model.params),
    )


def route_ident(model: str, index: int) -> str:
    """The identity of one route of one model (route limits and prices belong to it)."""
    return f"{model}#{index}"
