"""What the operators' store keeps: runtime keys, usage rows and audit entries, and how a
key's fields become columns (JSON text for the structured ones, so both backends share it)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec

from proxy.accounting import RequestRecord
from proxy.config import BudgetConfig, LimitSpec

GROUPS = ("key", "model", "route", "day")  # what GET /admin/usage may group by


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A runtime key as stored: the secret only as its sha256 (hex)."""

    name: str
    digest: str
    models: tuple[str, ...] = ("*",)
    limits: LimitSpec | None = None
    budget: BudgetConfig | None = None
    expires_at: float | None = None  # epoch seconds
    metadata: Mapping[str, str] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0


# the columns of llm_proxy_keys, in this order everywhere
KEY_COLUMNS = (
    "name",
    "digest",
    "models",
    "limits",
    "budget",
    "expires_at",
    "metadata",
    "created_at",
    "updated_at",
)
CHANGEABLE = frozenset({"digest", "models", "limits", "budget", "expires_at", "metadata"})

_encode = msgspec.json.Encoder().encode


def column_value(name: str, value: Any) -> Any:
    """A key field as the database holds it."""
    if name == "models":
        return _encode(list(value)).decode()
    if name == "metadata":
        return _encode(dict(value)).decode()
    if name in ("limits", "budget"):
        return None if value is None else _encode(value).decode()
    return value


def key_columns(record: KeyRecord) -> tuple[Any, ...]:
    return tuple(column_value(name, getattr(record, name)) for name in KEY_COLUMNS)


def key_from_columns(row: Any) -> KeyRecord:
    """A KeyRecord from a row in KEY_COLUMNS order (a tuple or a database record)."""
    name, digest, models, limits, budget, expires_at, metadata, created, updated = tuple(row)
    return KeyRecord(
        name=name,
        digest=digest,
        models=tuple(msgspec.json.decode(models, type=list[str])),
        limits=None if limits is None else msgspec.json.decode(limits, type=LimitSpec),
        budget=None if budget is None else msgspec.json.decode(budget, type=BudgetConfig),
        expires_at=expires_at,
        metadata=msgspec.json.decode(metadata, type=dict[str, str]),
        created_at=created,
        updated_at=updated,
    )


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One admin change: what was done to which key; `changes` never holds a secret."""

    action: str  # create | update | delete | rotate
    key: str
    changes: Mapping[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)
    id: int | None = None

    def changes_json(self) -> str:
        return _encode(dict(self.changes)).decode()

    @classmethod
    def from_columns(cls, row: Any) -> AuditEntry:
        entry_id, at, action, key, changes = tuple(row)
        return cls(action, key, msgspec.json.decode(changes), at, entry_id)


class UsageRow(NamedTuple):
    """One request in the usage ledger (the columns of llm_proxy_usage, in order)."""

    at: float
    request_id: str
    key_name: str
    model: str
    route: str
    api: str
    status: int
    prompt_tokens: int
    completion_tokens: int
    spend_usd: float
    duration_ms: float
    cache: str


USAGE_COLUMNS = UsageRow._fields


def usage_row(record: RequestRecord, now: float, duration: float) -> UsageRow:
    return UsageRow(
        now,
        record.request_id,
        record.caller,
        record.model,
        record.route,
        record.api,
        record.status,
        record.prompt_tokens,
        record.completion_tokens,
        record.spend_usd,
        round(duration * 1000, 3),
        record.cache,
    )


@dataclass(frozen=True, slots=True)
class UsageQuery:
    group_by: str  # one of GROUPS
    since: float  # epoch seconds, inclusive
    until: float  # epoch seconds, exclusive


@dataclass(frozen=True, slots=True)
class UsageTotal:
    group: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    spend_usd: float
