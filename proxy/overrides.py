"""Environment variables that override proxy.yaml (CLI flags > environment > file > defaults).

Each row names the variable, the key path it sets and how its text becomes a value. Rows
are added together with the section they set, so that no variable is accepted and ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _boolean(text: str) -> bool | str:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    return text  # left as text: the schema check then names the key and the bad value


def _upper(text: str) -> str:
    return text.strip().upper()


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text  # left as text: the schema check names the key and the bad value


def _retries(text: str) -> int | str:
    """MAX_RETRIES=n means n retries after the first call: attempts = n + 1."""
    try:
        return int(text) + 1
    except ValueError:
        return text


def _per_second(text: str) -> str:
    return f"{text.strip()}/second"


def _integer(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text


def _size(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text.strip()  # "1GiB" and the like; the schema checks the form


OVERRIDES: tuple[tuple[str, tuple[str, ...], Callable[[str], Any]], ...] = (
    ("LOG_LEVEL", ("logging", "level"), _upper),
    ("LOG_FILE", ("logging", "file"), str),
    ("LOG_JSON", ("logging", "json"), _boolean),
    ("MAX_RETRIES", ("retry", "attempts"), _retries),
    ("INITIAL_RETRY_DELAY", ("retry", "initial_delay"), _number),
    ("MAX_RETRY_DELAY", ("retry", "max_delay"), _number),
    ("DEFAULT_RATE_LIMIT", ("limits", "default", "requests"), _per_second),
    ("DEFAULT_BURST_LIMIT", ("limits", "default", "burst"), _integer),
    ("REDIS_URL", ("limits", "storage"), str),
    ("CACHE_TTL", ("cache", "ttl"), _number),
    ("CACHE_MAX_SIZE", ("cache", "max_size"), _size),
)


def apply_env_overrides(data: dict[str, Any], env: Mapping[str, str]) -> list[str]:
    """Set the overridden keys in `data` in place; return their dotted paths."""
    applied = []
    for variable, path, convert in OVERRIDES:
        text = env.get(variable)
        if text is None or text == "":
            continue
        section = data
        for part in path[:-1]:
            child = section.get(part)
            if not isinstance(child, dict):
                child = section[part] = {}
            section = child
        section[path[-1]] = convert(text)
        applied.append(f"{'.'.join(path)} (from {variable})")
    applied += _cache_switches(data, env)
    return applied


def _cache_switches(data: dict[str, Any], env: Mapping[str, str]) -> list[str]:
    """CACHE_ENABLED and REDIS_URL choose the cache backend (docs/semantics.md):
    REDIS_URL moves the cache to Redis unless it is `none`; CACHE_ENABLED=false turns it
    off, and =true turns a `none` cache on (on disk)."""
    cache = data.get("cache")
    if not isinstance(cache, dict):
        cache = data["cache"] = {}
    applied = []
    enabled = env.get("CACHE_ENABLED")
    if enabled:
        switch = _boolean(enabled)
        if switch is False:
            cache["backend"] = "none"
        elif switch is True:
            if cache.get("backend", "disk") == "none":
                cache["backend"] = "disk"
        else:
            cache["enabled"] = enabled  # not a boolean: the schema names the key
        applied.append("cache.backend (from CACHE_ENABLED)")
    redis_url = env.get("REDIS_URL")
    if redis_url and cache.get("backend", "disk") != "none":
        cache.update(backend="redis", url=redis_url)
        applied += ["cache.backend (from REDIS_URL)", "cache.url (from REDIS_URL)"]
    return applied
