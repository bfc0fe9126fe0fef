"""The policy and the parts built from it, as one value a reload swaps whole: a request reads
it once and uses the same policy, dispatcher, limiter and cache from start to end."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.cache.cache import ResponseCache
from proxy.cache.flow import CacheFlow
from proxy.limits.limiter import Limiter
from proxy.observability.access_log import AccessLog
from proxy.observability.tracing import Tracing
from proxy.policy import Policy
from proxy.routing.dispatch import Dispatcher


@dataclass(frozen=True, slots=True)
class Services:
    policy: Policy
    dispatcher: Dispatcher
    limiter: Limiter
    cache: ResponseCache
    cache_flow: CacheFlow
    tracing: Tracing
    access_log: AccessLog
