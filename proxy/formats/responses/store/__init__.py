"""The store behind `previous_response_id` and GET/DELETE /v1/responses/{id}, built from the
policy's `responses` section."""

from __future__ import annotations

from pathlib import Path

from proxy.config import ProxyConfig, parse_duration
from proxy.formats.responses.store.backends import (
    DiskBackend,
    MemoryBackend,
    RedisBackend,
    StoreBackend,
)
from proxy.formats.responses.store.store import (
    NEW_CONVERSATION,
    Conversation,
    ResponseStore,
    StoredResponse,
)

__all__ = [
    "NEW_CONVERSATION",
    "Conversation",
    "ResponseStore",
    "StoredResponse",
    "build_store",
    "store_settings",
]


def store_settings(config: ProxyConfig) -> tuple[str, str, float]:
    """(backend, where, ttl): a reload rebuilds the store only when these change. Without
    a `storage` setting, Redis when the limits are kept in Redis (replicas share the
    responses too), else the disk."""
    section = config.responses
    limits = config.limits.storage
    storage = section.storage
    if storage is None:
        storage = "redis" if limits.startswith(("redis://", "rediss://")) else "disk"
    ttl = parse_duration(section.ttl)
    if storage == "redis":
        url = section.url or limits
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("responses.storage redis: set responses.url or a Redis limits.storage")
        return storage, url, ttl
    if storage == "disk":
        return storage, section.path or str(Path(config.cache.path) / "responses"), ttl
    return storage, "", ttl


def build_store(config: ProxyConfig) -> ResponseStore:
    storage, where, ttl = store_settings(config)
    backend: StoreBackend
    if storage == "redis":
        backend = RedisBackend(where)
    elif storage == "disk":
        backend = DiskBackend(Path(where))
    else:
        backend = MemoryBackend()
    return ResponseStore(backend, ttl)
