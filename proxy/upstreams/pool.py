"""The live upstream clients. A reload reuses the client of every upstream whose settings
did not change; replaced clients are closed once the requests that may still use them are
done (their longest timeout later), never under a request in flight."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from loguru import logger

from proxy.config import UpstreamConfig
from proxy.upstreams.base import Upstream
from proxy.upstreams.registry import build_upstream

RETIRE_SLACK = 5.0


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
        """Make the live set match `configs` (minus the unconfigured ones)."""
        wanted = {n: c for n, c in configs.items() if n not in unconfigured}
        for name in list(self._live):
            config, upstream = self._live[name]
            if wanted.get(name) != config:
                del self._live[name]
                self._retire(name, config, upstream)
        for name, config in wanted.items():
            if name not in self._live:
                upstream = build_upstream(name, config)
                await upstream.start()
                self._live[name] = (config, upstream)

    def _retire(self, name: str, config: UpstreamConfig, upstream: Upstream) -> None:
        delay = config.timeout.total + RETIRE_SLACK
        logger.info("upstream {}: settings changed; old client closes in {:g}s", name, delay)
        task = asyncio.get_running_loop().create_task(self._close_later(upstream, delay))
        self._retiring[task] = upstream
        task.add_done_callback(lambda done: self._retiring.pop(done, None))

    @staticmethod
    async def _close_later(upstream: Upstream, delay: float) -> None:
        await asyncio.sleep(delay)
        await upstream.close()

    async def close(self) -> None:
        for task, retiring in list(self._retiring.items()):
            task.cancel()
            await retiring.close()
        for _, upstream in self._live.values():
            await upstream.close()
        self._live.clear()
