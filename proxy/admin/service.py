"""The admin operations behind the HTTP handlers: runtime keys (create, change, delete,
rotate), the usage report, the audit trail, the overview and the policy in force.

A write goes to the store first (with its audit entry, in one transaction) and then into this
replica's key registry, before the call answers: a created key works at once, a deleted or
rotated-out one is refused at once. Keys from proxy.yaml are shown but never changed here.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from msgspec import UNSET

from proxy.admin import bodies, views
from proxy.admin.bodies import KeyCreate, KeyPatch
from proxy.admin.records import AuditEntry, KeyRecord
from proxy.admin.registry import KeyRegistry
from proxy.admin.store import (
    AdminStore,
    KeyExistsError,
    KeyMissingError,
    StoreUnavailableError,
)
from proxy.admin.traffic import RecentTraffic
from proxy.config import KeyConfig
from proxy.errors import NotFoundError, ProxyError, ServiceUnavailableError
from proxy.keys import Caller, ClientKey, key_from_config

if TYPE_CHECKING:
    from proxy.gateway import Gateway

SECRET_BYTES = 32
USAGE_READS_AT_ONCE = 16  # limiter reads in flight while listing keys (Redis round trips)


class ConflictError(ProxyError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


def new_secret() -> str:
    return "sk-" + secrets.token_urlsafe(SECRET_BYTES)


def digest_of(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _unavailable() -> ServiceUnavailableError:
    return ServiceUnavailableError(
        "The admin store is unreachable; nothing was changed. Try again.", retry_after=1.0
    )


class AdminService:
    def __init__(
        self,
        gateway: Gateway,
        store: AdminStore,
        registry: KeyRegistry,
        traffic: RecentTraffic,
    ) -> None:
        self.gateway = gateway
        self.store = store
        self.registry = registry
        self.traffic = traffic

    def file_keys(self) -> dict[str, KeyConfig]:
        return {key.name: key for key in self.gateway.policy.config.keys}

    # -- reading keys ----------------------------------------------------------------------

    async def list_keys(self) -> dict[str, Any]:
        """File keys in policy order, then runtime keys by name, each with its spend."""
        files, compiled = self.file_keys(), self._compiled_file_keys()
        listed = [(views.file_key(key), compiled[key.name]) for key in files.values()]
        listed += [self._runtime_view(name, files) for name in sorted(self.registry.records)]
        gate = asyncio.Semaphore(USAGE_READS_AT_ONCE)

        async def usage(key: ClientKey) -> dict[str, Any]:
            async with gate:
                return await self._usage(key, detail=False)

        usages = await asyncio.gather(*(usage(key) for _, key in listed))
        return {"data": [{**view, **used} for (view, _), used in zip(listed, usages, strict=True)]}

    async def get_key(self, name: str) -> dict[str, Any]:
        files = self.file_keys()
        if name in files:
            view, key = views.file_key(files[name]), self._compiled_file_keys()[name]
        elif self.registry.get(name) is not None:
            view, key = self._runtime_view(name, files)
        else:
            raise self._missing(name)
        return {**view, **await self._usage(key, detail=True)}

    def _compiled_file_keys(self) -> dict[str, ClientKey]:
        """File keys as the request path holds them, by name (two names sharing one secret
        share one entry there: the other is compiled here)."""
        compiled = {key.name: key for key in self.gateway.policy.keys.values()}
        for key in self.gateway.policy.config.keys:
            if key.name not in compiled:
                compiled[key.name] = key_from_config(key)
        return compiled

    def _runtime_view(
        self, name: str, files: Mapping[str, KeyConfig]
    ) -> tuple[dict[str, Any], ClientKey]:
        record, compiled = self.registry.compiled(name)
        return views.runtime_key(record, shadowed=name in files), compiled

    async def _usage(self, key: ClientKey, detail: bool) -> dict[str, Any]:
        """Spend against the budget (from the limiter, where budgets live); with `detail`,
        the key's limits and their state too."""
        if not detail and key.budget is None:
            return {"spend": None}
        report = await self.gateway.limiter.usage(Caller(key.name, key))
        shown: dict[str, Any] = {"spend": views.spend(report)}
        if detail:
            shown["limits_state"] = report["limits"]
            shown["concurrency"] = report.get("concurrency")
        return shown

    # -- changing keys ---------------------------------------------------------------------

    async def create_key(self, body: KeyCreate) -> dict[str, Any]:
        if body.name in self.file_keys() or self.registry.get(body.name) is not None:
            raise self._taken(body.name)
        secret, now = new_secret(), time.time()
        expires = bodies.expiry(body.expires_at) if body.expires_at is not None else None
        record = KeyRecord(
            body.name,
            digest_of(secret),
            tuple(body.models),
            body.limits,
            body.budget,
            expires,
            dict(body.metadata),
            now,
            now,
        )
        fields = {name: getattr(record, name) for name in DESCRIBED}
        audit = AuditEntry("create", body.name, views.key_fields(fields), now)
        try:
            revision = await self.store.create_key(record, audit)
        except KeyExistsError:
            raise self._taken(body.name) from None
        except StoreUnavailableError:
            raise _unavailable() from None
        self.registry.put(revision, record)
        return {**views.runtime_key(record), "key": secret}

    async def update_key(self, name: str, patch: KeyPatch) -> dict[str, Any]:
        self._changeable(name)
        fields = _patched_fields(patch)
        if not fields:
            return await self.get_key(name)
        audit = AuditEntry("update", name, views.key_fields(fields))
        record = await self._write(name, fields, audit)
        usage = await self._usage(self.registry.compiled(name)[1], detail=True)
        return {**views.runtime_key(record), **usage}

    async def rotate_key(self, name: str) -> dict[str, Any]:
        self._changeable(name)
        secret = new_secret()
        audit = AuditEntry("rotate", name, {"secret": "replaced"})
        record = await self._write(name, {"digest": digest_of(secret)}, audit)
        return {**views.runtime_key(record), "key": secret}

    async def delete_key(self, name: str) -> dict[str, Any]:
        self._changeable(name)
        try:
            revision = await self.store.delete_key(name, AuditEntry("delete", name))
        except KeyMissingError:
            raise self._missing(name) from None
        except StoreUnavailableError:
            raise _unavailable() from None
        self.registry.remove(revision, name)
        return {"name": name, "deleted": True}

    async def _write(self, name: str, fields: Mapping[str, Any], audit: AuditEntry) -> KeyRecord:
        try:
            revision, record = await self.store.update_key(name, fields, audit)
        except KeyMissingError:
            raise self._missing(name) from None
        except StoreUnavailableError:
            raise _unavailable() from None
        self.registry.put(revision, record)
        return record

    def _changeable(self, name: str) -> None:
        if name in self.file_keys():
            raise ConflictError(
                f"The key '{name}' comes from the policy file and is read-only here: "
                "change it in proxy.yaml.",
                param="name",
            )
        if self.registry.get(name) is None:
            raise self._missing(name)

    @staticmethod
    def _missing(name: str) -> NotFoundError:
        return NotFoundError(f"No key named '{name}'.", param="name", code="key_not_found")

    @staticmethod
    def _taken(name: str) -> ConflictError:
        return ConflictError(f"A key named '{name}' exists already.", param="name")

    # -- reports ---------------------------------------------------------------------------

    async def usage(self, params: Mapping[str, str]) -> tuple[str, Any]:
        """('json', {"data": rows}) or ('csv', text)."""
        query, output = bodies.usage_query(params)
        try:
            totals = await self.store.usage(query)
        except StoreUnavailableError:
            raise _unavailable() from None
        rows = views.usage_rows(query.group_by, totals)
        if output == "csv":
            return output, views.usage_csv(query.group_by, rows)
        return output, {"data": rows}

    async def audit(self, params: Mapping[str, str]) -> dict[str, Any]:
        limit = bodies.audit_limit(params)
        try:
            entries = await self.store.audit(limit, params.get("key"))
        except StoreUnavailableError:
            raise _unavailable() from None
        return {"data": [views.audit_entry(entry) for entry in entries]}

    async def overview(self, params: Mapping[str, str]) -> dict[str, Any]:
        window = bodies.minutes(params, self.traffic.seconds // 60) * 60
        gateway = self.gateway
        health = await gateway.health()
        policy = gateway.policy
        models = [
            {
                "name": model.name,
                "strategy": model.strategy,
                "routes": [route.label for route in model.routes],
                "fallbacks": list(model.fallbacks),
            }
            for model in policy.models.values()
        ]
        return {
            "traffic": self.traffic.summary(window),
            "models": models,
            "routes": health["routes"],
            "upstreams": health["upstreams"],
            "policy": health["policy"],
            "storage": health["storage"],
            "keys": {"file": len(policy.config.keys), "runtime": len(self.registry.records)},
        }

    def policy(self) -> dict[str, Any]:
        gateway = self.gateway
        policy = gateway.policy
        return {
            "version": policy.version,
            "source": policy.source,
            "loaded_at": policy.loaded_at,
            "last_reload": gateway.last_reload,
            "admin_store": gateway.redactor(views.without_password(self.store.url)),
            "policy": views.masked_policy(policy.config, gateway.redactor),
        }


DESCRIBED = ("models", "limits", "budget", "expires_at", "metadata")  # what the audit shows


def _patched_fields(patch: KeyPatch) -> dict[str, Any]:
    """The store's fields a patch sets; `null` means the default."""
    cleared: dict[str, Any] = {"models": ("*",), "metadata": {}}
    fields: dict[str, Any] = {}
    for name in DESCRIBED:
        value = getattr(patch, name)
        if value is UNSET:
            continue
        if value is None:
            fields[name] = cleared.get(name)
        elif name == "models":
            fields[name] = tuple(value)
        elif name == "expires_at":
            fields[name] = bodies.expiry(value)
        else:
            fields[name] = value
    return fields
