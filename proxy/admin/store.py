"""The operators' store: one small interface, one module per backend (sqlite.py, postgres.py).

Every write of a key also adds 1 to the store's key revision and an audit entry, in one
transaction: replicas compare revisions to know their keys are current. A backend translates
its driver's failures into `StoreUnavailableError` in one place.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from proxy.admin.records import AuditEntry, KeyRecord, UsageQuery, UsageRow, UsageTotal
from proxy.config import AdminConfig


class StoreUnavailableError(Exception):
    """The store could not be reached, or failed (the driver's words, without the URL)."""


class KeyExistsError(Exception):
    """A runtime key of that name exists already."""


class KeyMissingError(Exception):
    """No runtime key of that name."""


@dataclass(frozen=True, slots=True)
class KeySnapshot:
    """Every runtime key at one revision, read in one transaction."""

    revision: int
    keys: list[KeyRecord]


Changed = Callable[[int], None]  # told the revision a change made
Lost = Callable[[], None]


class AdminStore(ABC):
    kind: ClassVar[str]
    refresh_every: ClassVar[float]  # seconds between the registry's checks of the revision

    def __init__(self, url: str) -> None:
        self.url = url

    @abstractmethod
    async def open(self) -> None:
        """Connect and apply the migrations; safe to call again after a failure."""

    @abstractmethod
    async def close(self) -> None: ...

    @property
    @abstractmethod
    def opened(self) -> bool: ...

    @abstractmethod
    async def snapshot(self) -> KeySnapshot: ...

    @abstractmethod
    async def revision(self) -> int: ...

    @abstractmethod
    async def create_key(self, record: KeyRecord, audit: AuditEntry) -> int:
        """Insert the key (KeyExistsError for a taken name); the new revision."""

    @abstractmethod
    async def update_key(
        self, name: str, fields: Mapping[str, Any], audit: AuditEntry
    ) -> tuple[int, KeyRecord]:
        """Set these fields of the key (KeyMissingError when absent); the new revision and
        the key as it now is."""

    @abstractmethod
    async def delete_key(self, name: str, audit: AuditEntry) -> int: ...

    @abstractmethod
    async def add_usage(self, rows: Sequence[UsageRow]) -> None: ...

    @abstractmethod
    async def usage(self, query: UsageQuery) -> list[UsageTotal]: ...

    @abstractmethod
    async def audit(self, limit: int, key: str | None = None) -> list[AuditEntry]:
        """The newest entries first."""

    @property
    def can_watch(self) -> bool:
        """Whether `watch` pushes changes (else the registry polls the revision)."""
        return False

    @property
    def watching(self) -> bool:
        return False

    async def watch(self, changed: Changed, lost: Lost) -> None:
        """Be told of every key change by any replica until the connection is lost."""
        raise NotImplementedError(f"the {self.kind} store pushes no changes")


# scheme -> "module:class", imported when used (asyncpg only for PostgreSQL)
BACKENDS = {
    "sqlite": "proxy.admin.sqlite:SQLiteStore",
    "postgresql": "proxy.admin.postgres:PostgresStore",
    "postgres": "proxy.admin.postgres:PostgresStore",
}
DEFAULT_FILE = "admin.db"


def store_url(config: AdminConfig, cache_path: str) -> str:
    """`admin.store`, else a SQLite file in the data directory (`cache.path`)."""
    if config.store:
        return config.store
    return f"sqlite:///{Path(cache_path) / DEFAULT_FILE}"


def open_store(url: str) -> AdminStore:
    scheme = url.split("://", 1)[0]
    module_name, _, class_name = BACKENDS[scheme].partition(":")
    backend: type[AdminStore] = getattr(importlib.import_module(module_name), class_name)
    return backend(url)
