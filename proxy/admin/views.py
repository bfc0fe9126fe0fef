"""What the admin API shows: keys (never a secret or a digest), audit entries, usage totals as
JSON rows or CSV, and the policy in force with every secret masked. Pure functions of data."""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec

from proxy.admin.records import AuditEntry, KeyRecord, UsageTotal
from proxy.config import BudgetConfig, KeyConfig, LimitSpec, ProxyConfig
from proxy.keys import parse_expiry

MASK = "***"
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s]+(?P<at>@)")
USAGE_FIELDS = ("requests", "prompt_tokens", "completion_tokens", "spend_usd")


def iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


def _limits(spec: LimitSpec | None) -> dict[str, Any] | None:
    if spec is None:
        return None
    return {k: v for k, v in msgspec.structs.asdict(spec).items() if v is not None}


def _budget(budget: BudgetConfig | None) -> dict[str, Any] | None:
    return None if budget is None else {"usd": budget.usd, "period": budget.period}


def key_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Key fields (as a KeyRecord holds them) as the API shows them; for the audit trail."""
    shown: dict[str, Callable[[Any], Any]] = {
        "models": lambda v: list(v),
        "limits": _limits,
        "budget": _budget,
        "expires_at": iso,
        "metadata": lambda v: dict(v),
    }
    return {name: shown[name](value) for name, value in fields.items() if name in shown}


def runtime_key(record: KeyRecord, shadowed: bool = False) -> dict[str, Any]:
    expired = record.expires_at is not None and time.time() >= record.expires_at
    return {
        "name": record.name,
        "source": "runtime",
        "models": list(record.models),
        "limits": _limits(record.limits),
        "budget": _budget(record.budget),
        "expires_at": iso(record.expires_at),
        "expired": expired,
        "active": not expired and not shadowed,
        "metadata": dict(record.metadata),
        "created_at": iso(record.created_at),
        "updated_at": iso(record.updated_at),
    }


def file_key(key: KeyConfig) -> dict[str, Any]:
    expires = parse_expiry(key.expires_at) if key.expires_at is not None else None
    expired = expires is not None and time.time() >= expires
    return {
        "name": key.name,
        "source": "file",
        "models": list(key.models),
        "limits": _limits(key.limits),
        "budget": _budget(key.budget),
        "expires_at": iso(expires),
        "expired": expired,
        "active": not expired,
        "metadata": dict(key.metadata),
        "created_at": None,
        "updated_at": None,
    }


def spend(report: dict[str, Any]) -> dict[str, Any] | None:
    """The budget part of the limiter's report on a key: spent, remaining, when it resets."""
    budget = report.get("budget")
    if budget is None:
        return None
    return {k: budget[k] for k in ("spent_usd", "remaining_usd", "resets_at")}


def audit_entry(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": iso(entry.at),
        "action": entry.action,
        "key": entry.key,
        "changes": dict(entry.changes),
    }


def usage_rows(group_by: str, totals: Iterable[UsageTotal]) -> list[dict[str, Any]]:
    return [
        {
            group_by: total.group,
            "requests": total.requests,
            "prompt_tokens": total.prompt_tokens,
            "completion_tokens": total.completion_tokens,
            "spend_usd": round(total.spend_usd, 9),
        }
        for total in totals
    ]


def usage_csv(group_by: str, rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow((group_by, *USAGE_FIELDS))
    writer.writerows([row[group_by], *(row[f] for f in USAGE_FIELDS)] for row in rows)
    return out.getvalue()


# -- the policy, masked ------------------------------------------------------------------------


def masked_policy(config: ProxyConfig, redact: Callable[[str], str]) -> dict[str, Any]:
    """The policy as data with every secret replaced by "***": upstream keys and header
    values, client keys and digests, the admin key, passwords in URLs; then every string
    through the redactor (configured secrets, anything shaped like a key)."""
    data: dict[str, Any] = msgspec.to_builtins(config)
    for upstream in data.get("upstreams", {}).values():
        if upstream.get("api_key"):
            upstream["api_key"] = MASK
        upstream["headers"] = dict.fromkeys(upstream.get("headers", {}), MASK)
    for key in data.get("keys", []):
        for secret in ("key", "sha256"):
            if key.get(secret):
                key[secret] = MASK
    admin = data.get("admin", {})
    if admin.get("key"):
        admin["key"] = MASK
    scrubbed: dict[str, Any] = _scrub(data, redact)
    return scrubbed


def without_password(url: str) -> str:
    return _URL_PASSWORD.sub(rf"\g<head>{MASK}\g<at>", url)


def _scrub(value: Any, redact: Callable[[str], str]) -> Any:
    if isinstance(value, dict):
        return {k: _scrub(v, redact) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, redact) for v in value]
    if isinstance(value, str):
        return redact(without_password(value))
    return value
