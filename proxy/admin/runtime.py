"""The operators' backend of one gateway: its store, key registry, usage ledger and recent
traffic, started and closed with the gateway, and what /health says of them.

It hears of every settled request (a settlement listener: the ledger queues a row, the
traffic ring counts it) and publishes the runtime keys into `Gateway.runtime_keys`.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from loguru import logger

from proxy.accounting import RequestRecord
from proxy.admin.console import Console
from proxy.admin.ledger import UsageLedger
from proxy.admin.registry import KeyRegistry
from proxy.admin.service import AdminService
from proxy.admin.store import StoreUnavailableError, open_store, store_url
from proxy.admin.traffic import RecentTraffic
from proxy.config import AdminConfig
from proxy.keys import ClientKey

if TYPE_CHECKING:
    from proxy.gateway import Gateway

START_TIMEOUT = 10.0  # seconds for the first connection and load; the registry retries after
UNAUTHENTICATED = "-"  # RequestRecord.caller before the key is known


class AdminRuntime:
    def __init__(self, gateway: Gateway, config: AdminConfig) -> None:
        self.gateway = gateway
        self.config = config
        self.store = open_store(store_url(config, gateway.policy.config.cache.path))
        self.registry = KeyRegistry(self.store, self._publish, self._file_key_names, self._failed)
        self.ledger = UsageLedger(self.store, self._failed)
        self.traffic = RecentTraffic()
        self.service = AdminService(gateway, self.store, self.registry, self.traffic)
        self.console = Console.load(self._admin_key) if config.ui else None

    def _admin_key(self) -> str | None:
        return self.gateway.policy.config.admin.key

    def _publish(self, keys: dict[bytes, ClientKey]) -> None:
        self.gateway.runtime_keys = keys

    def _file_key_names(self) -> set[str]:
        return {key.name for key in self.gateway.policy.config.keys}

    def _failed(self, error: StoreUnavailableError) -> None:
        metrics = self.gateway.metrics
        metrics.child(metrics.storage_errors, "admin").inc()

    def settled(self, record: RequestRecord) -> None:
        """Every settled request (a Settlement listener: queues, never waits). A request
        refused before its key was known (caller "-") is traffic, not usage: no ledger row,
        so that junk from outside never fills the database."""
        if record.caller != UNAUTHENTICATED:
            self.ledger.record(record)
        self.traffic.record(record.status, time.perf_counter() - record.started)

    async def start(self) -> None:
        """Connect, migrate and load the keys before the proxy is ready; an unreachable store
        is logged and retried in the background (runtime keys appear once it answers)."""
        self.gateway.settlement.listeners.append(self.settled)
        try:
            async with asyncio.timeout(START_TIMEOUT):
                loaded = await self.registry.check_safely()
        except TimeoutError:
            loaded = False
            self._failed(StoreUnavailableError("timed out"))
        if loaded:
            logger.info(
                "admin on: {} store, {} runtime keys", self.store.kind, len(self.registry.records)
            )
        self.registry.start()
        self.ledger.start()

    def policy_applied(self, config: AdminConfig) -> None:
        """A reloaded policy: file keys may have come or gone (they shadow runtime keys)."""
        if (config.store, config.ui) != (self.config.store, self.config.ui):
            logger.warning("admin.store and admin.ui changes apply at the next restart")
        self.registry.publish()

    async def close(self) -> None:
        if self.settled in self.gateway.settlement.listeners:
            self.gateway.settlement.listeners.remove(self.settled)
        await self.registry.stop()
        await self.ledger.close()
        await self.store.close()

    def health(self) -> dict[str, Any]:
        """The `admin` entry of /health's storage (never a URL or the admin key)."""
        report = {"store": self.store.kind, **self.registry.health()}
        error = report.get("last_error")
        if isinstance(error, str):
            report["last_error"] = self.gateway.redactor(error)
        return {**report, "ledger": self.ledger.health()}
