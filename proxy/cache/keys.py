"""Whether a request may use the cache, and its key (docs/semantics.md, "Cache key").

The key is sha256 over the caller's namespace, the resolved public model, the front door
(for every door but chat, whose keys predate the others) and the canonical JSON (sorted
keys, no whitespace) of the client's whole body, params applied, minus the fields that never
change the answer; every other field counts, so a field we have never heard of cannot cause
a wrong hit.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from proxy.config import CacheConfig, ModelCacheConfig
from proxy.wire import decode_body

if TYPE_CHECKING:
    from proxy.formats.base import FrontRequest

IGNORED_FIELDS = ("stream", "stream_options", "user", "metadata", "store")
_canonical = msgspec.json.Encoder(order="sorted").encode
_MAX_AGE = re.compile(r"max-age\s*=\s*(\d+)")


@dataclass(frozen=True, slots=True)
class CacheDecision:
    key: str
    read: bool  # look up (not with Cache-Control: no-cache)
    ttl: float
    max_age: float | None  # the client accepts only entries younger than this


def cache_key(namespace: str, model: str, body: bytes, api: str = "chat") -> str:
    data = decode_body(body)
    for name in IGNORED_FIELDS:
        data.pop(name, None)
    data.pop("model", None)  # the resolved public model stands in for it
    digest = hashlib.sha256()
    for part in (namespace.encode(), b"\x00", model.encode(), b"\x00"):
        digest.update(part)
    if api != "chat":
        digest.update(api.encode() + b"\x00")
    digest.update(_canonical(data))
    return digest.hexdigest()


def decide(
    config: CacheConfig,
    model_cache: ModelCacheConfig | bool | None,
    request: FrontRequest,
    namespace: str,
    model: str,
    cache_control: str | None,
) -> CacheDecision | None:
    """The cache plan for this request, or None: bypass (neither read nor written)."""
    if config.backend == "none" or model_cache is False or not request.cacheable:
        return None
    override = model_cache if isinstance(model_cache, ModelCacheConfig) else None
    directives = (cache_control or "").lower()
    if "no-store" in directives:
        return None
    deterministic_only = config.deterministic_only
    if override is not None and override.deterministic_only is not None:
        deterministic_only = override.deterministic_only
    if deterministic_only and not request.deterministic:
        return None
    ttl = override.ttl if override is not None and override.ttl is not None else config.ttl
    max_age = _MAX_AGE.search(directives)
    return CacheDecision(
        key=cache_key(
            "*" if config.shared_across_keys else namespace, model, request.key_body, request.api
        ),
        read="no-cache" not in directives,
        ttl=ttl,
        max_age=float(max_age.group(1)) if max_age else None,
    )
