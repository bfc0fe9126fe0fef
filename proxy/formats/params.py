"""A model's `params`: numeric request fields given a default when absent and clamped into
[min, max] (never refused). Names are chat-completions field names; a door whose format names
a field otherwise passes its own name for it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from proxy.config import ParamBounds

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode

# A bound on one of these also applies to the other when the client sent only that one:
# OpenAI accepts either name for the same limit.
ALIASES = {"max_tokens": "max_completion_tokens", "max_completion_tokens": "max_tokens"}


def bounded(value: Any, bounds: ParamBounds) -> Any:
    """The value the bounds make of a field's value (None: absent)."""
    if value is None:
        return bounds.default
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value  # not a number: the request's validation (or the upstream) judges it
    if bounds.max is not None and value > bounds.max:
        return bounds.max
    if bounds.min is not None and value < bounds.min:
        return bounds.min
    return value


def apply_params(
    fields: dict[str, msgspec.Raw],
    params: Mapping[str, ParamBounds],
    names: Mapping[str, str | None] | None = None,
) -> bool:
    """Apply `params` to a body's raw top-level fields in place; True when one changed.
    `names` maps a chat field name to the door's own (None: the door has no such field)."""
    changed = False
    for name, bounds in params.items():
        field = _field_for(name, fields, names)
        if field is None:
            continue
        raw = fields.get(field)
        current = _decode(raw) if raw is not None else None
        value = bounded(current, bounds)
        if value is not None and (type(value) is not type(current) or value != current):
            fields[field] = msgspec.Raw(_encode(value))
            changed = True
    return changed


def _field_for(
    name: str, fields: Mapping[str, Any], names: Mapping[str, str | None] | None
) -> str | None:
    if names is not None and name in names:
        return names[name]
    alias = ALIASES.get(name)
    if alias is not None and name not in fields and alias in fields:
        return alias
    return name
