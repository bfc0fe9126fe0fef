"""Live reload: proxy.yaml edits (and SIGHUP) swap the policy without a restart.

The file's directory is watched, not the file: a Kubernetes ConfigMap mount updates by an
atomic `..data` symlink swap, which a watch on the file itself misses. A new policy is
validated fully before it is swapped in; a bad one leaves the old one serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
import time
from pathlib import Path

import watchfiles
from loguru import logger

from proxy.gateway import Gateway
from proxy.loader import ConfigError, load_file
from proxy.observability.logging import configure_logging


class PolicyReloader:
    def __init__(self, gateway: Gateway, path: str | Path) -> None:
        self.gateway = gateway
        self.path = Path(path)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._failed_version: str | None = None  # content that failed: not retried until edited
        # the file itself, or the symlink a Kubernetes ConfigMap swaps to update it
        self._names = {self.path.name, "..data", "..data_tmp"}

    async def start(self, watch: bool = True) -> None:
        """SIGHUP always reloads; `watch` also follows edits to the file."""
        loop = asyncio.get_running_loop()
        if watch:
            self._task = loop.create_task(self._watch())
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _on_sighup(self) -> None:
        asyncio.get_running_loop().create_task(self.reload("SIGHUP", force=True))

    async def _watch(self) -> None:
        directory = self.path.absolute().parent
        async for _ in watchfiles.awatch(
            directory,
            watch_filter=lambda _, changed: Path(changed).name in self._names,
            stop_event=self._stop,
            debounce=200,
            step=50,
            recursive=False,
        ):
            await self.reload("file changed")

    async def reload(self, reason: str, force: bool = False) -> bool | None:
        """Apply the file if it changed (or `force`); None when there was nothing to do,
        True when the file is in force, False when it was refused."""
        async with self._lock:
            try:
                text = await asyncio.to_thread(self.path.read_bytes)
            except OSError as exc:
                return self._failed(reason, [f"cannot read {self.path}: {exc.strerror}"])
            version = hashlib.sha256(text).hexdigest()[:12]
            if not force and version == self.gateway.policy.version:
                return self._back_to_serving(reason, version)
            if not force and version == self._failed_version:
                return None
            try:
                loaded = await asyncio.to_thread(load_file, self.path)
            except ConfigError as exc:
                self._failed_version = version
                return self._failed(reason, [p.render(str(self.path)) for p in exc.problems])
            self._failed_version = None
            logging_changed = loaded.config.logging != self.gateway.policy.config.logging
            await self.gateway.apply(loaded)
            if logging_changed:
                configure_logging(loaded.config.logging, self.gateway.redactor)
            self._record("ok", reason, [])
            logger.info("policy reloaded ({}): version {}", reason, self.gateway.policy.version)
            return True

    def _back_to_serving(self, reason: str, version: str) -> bool | None:
        """The file holds the policy already serving: nothing to apply, but an error left by
        an earlier version of the file no longer describes it (else /health would keep it)."""
        self._failed_version = None
        last = self.gateway.last_reload
        if last is None or last.get("result") != "error":
            return None
        self._record("ok", reason, [])
        logger.info(
            "policy file is back to the version serving ({}): the last reload error is cleared",
            version,
        )
        return True

    def _failed(self, reason: str, problems: list[str]) -> bool:
        problems = [self.gateway.redactor(problem) for problem in problems]
        self._record("error", reason, problems)
        logger.error(
            "policy reload failed ({}); the previous policy keeps serving:\n  {}",
            reason,
            "\n  ".join(problems),
        )
        return False

    def _record(self, result: str, reason: str, problems: list[str]) -> None:
        self.gateway.metrics.child(self.gateway.metrics.reloads, result).inc()
        self.gateway.last_reload = {
            "result": result,
            "reason": reason,
            "at": time.time(),
            "errors": problems,
        }
