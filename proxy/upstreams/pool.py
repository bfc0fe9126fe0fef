"""The live upstream clients. A reload reuses the client of every upstream whose settings
did not change; removed and replaced clients are closed once the requests that may still use
them are done, never under a request in flight: at once when the client counts its calls in
flight (a local worker's, whose process should not outlive its last request), else after the
longest time a request may take."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from loguru import logger

from proxy.config import UpstreamConfig
from proxy.upstreams.base import Upstream
from proxy.upstreams.registry import build_upstream

RETIRE_SLACK = 5.0


@runtime_checkable
class Drainable(Protocol):
    """A client that knows when its last call in flight has ended."""

    async def drained(self) -> None: ...


class UpstreamPool:
    def __init__(self) -> None:
        self._live: dict[str, tuple[UpstreamConfig, Upstream]] = {}
        self._retiring: dict[asyncio.Task[None], Upstream] = {}

    def get(self, name: str) -> Upstream | None:
        entry = self._live.get(name)
        return entry[1] if entry is not None else None

    async def update(
        self, configs: Mapping[str, UpstreamConfig], unconfigured: Mapping[str, str]
    ) -> None:
        """Make the live set match `configs` (minus the unconfigured ones). A replacement is
        live before it has started, so that requests meanwhile get its own answer (a spawned
        worker's 503 while it loads) rather than finding no upstream at all."""
        wanted = {n: c for n, c in configs.items() if n not in unconfigured}
        for name in list(self._live):
            config, upstream = self._live[name]
            if wanted.get(name) != config:
                del self._live[name]
                self._retire(name, config, upstream, removed=name not in wanted)
        added = []
        for name, config in wanted.items():
            if name not in self._live:
                upstream = build_upstream(name, config)
                self._live[name] = (config, upstream)
                added.append(upstream)
        await asyncio.gather(*(upstream.start() for upstream in added))

    def _retire(
        self, name: str, config: UpstreamConfig, upstream: Upstream, *, removed: bool
    ) -> None:
        why = "removed" if removed else "settings changed"
        delay = config.timeout.total + RETIRE_SLACK
        if isinstance(upstream, Drainable):
            logger.info("upstream {}: {}; the old client closes once its requests end", name, why)
        else:
            logger.info("upstream {}: {}; the old client closes in {:g}s", name, why, delay)
        task = asyncio.get_running_loop().create_task(self._close_later(upstream, delay))
        self._retiring[task] = upstream
        task.add_done_callback(lambda done: self._retiring.pop(done, None))

    @staticmethod
    async def _close_later(upstream: Upstream, delay: float) -> None:
        """Close once idle (a Drainable) or after `delay`, whichever comes first."""
        if isinstance(upstream, Drainable):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(upstream.drained(), delay)
        else:
            await asyncio.sleep(delay)
        await upstream.close()

    async def close(self) -> None:
        for task, retiring in list(self._retiring.items()):
            task.cancel()
            await retiring.close()
        for _, upstream in self._live.values():
            await upstream.close()
        self._live.clear()
