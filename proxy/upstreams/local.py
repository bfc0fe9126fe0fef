"""A local transformers worker (`llm-proxy worker`) as an upstream.

The worker speaks OpenAI's chat wire format, so requests go through `OpenAIUpstream`
unchanged. With `url:` the worker runs elsewhere (its own Deployment, a GPU box). With
`spawn:` the proxy starts `python -m proxy worker ...` itself in `start()`, waits (briefly)
for its readiness, restarts it with exponential backoff whenever it exits, and stops it in
`close()`. While a spawned worker is not ready, requests fail at once with a 503 carrying
Retry-After, so the gateway moves on to the model's next route instead of waiting.

Nothing here imports torch: the worker is another process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator

import aiohttp
from loguru import logger

from proxy.config import LocalUpstreamConfig, OpenAIUpstreamConfig, SpawnConfig
from proxy.errors import ServiceUnavailableError, UpstreamError
from proxy.upstreams.base import UpstreamCall
from proxy.upstreams.openai import OpenAIUpstream

READY_WAIT = 10.0  # seconds start() waits for a spawned worker before the proxy serves anyway
READY_POLL = 0.2
INITIAL_BACKOFF = 1.0
MAX_BACKOFF = 30.0
STABLE_AFTER = 60.0  # a worker that ran this long resets the backoff
STOP_GRACE = 10.0
WORKER_HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((WORKER_HOST, 0))
        return int(s.getsockname()[1])


class WorkerProcess:
    """Runs and supervises one spawned worker process."""

    def __init__(self, name: str, spawn: SpawnConfig, port: int, api_key: str | None) -> None:
        self.name = name
        self.spawn = spawn
        self.port = port
        self.api_key = api_key
        self.url = f"http://{WORKER_HOST}:{port}"
        self.state = "stopped"  # starting | ready | restarting | stopped
        self.restarts = 0
        self.pid: int | None = None
        self._next_start = 0.0
        self._ready = asyncio.Event()
        self._process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def command(self) -> list[str]:
        spawn = self.spawn
        return [
            sys.executable, "-m", "proxy", "worker",
            "--model", spawn.model,
            "--device", spawn.device,
            "--host", WORKER_HOST,
            "--port", str(self.port),
            "--max-batch-size", str(spawn.max_batch_size),
            "--max-queue", str(spawn.max_queue),
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        env = {**os.environ, "LLM_PROXY_WORKER_PARENT": str(os.getpid()), "PYTHONUNBUFFERED": "1"}
        if self.api_key:
            env["WORKER_API_KEY"] = self.api_key  # not on the command line, where ps shows it
        return env

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def retry_after(self) -> float:
        loop = asyncio.get_running_loop()
        return max(self._next_start - loop.time(), 1.0)

    async def start(self, wait: float = READY_WAIT) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2))
        self._task = asyncio.get_running_loop().create_task(self._supervise())
        try:
            await asyncio.wait_for(self._ready.wait(), wait)
        except TimeoutError:
            logger.warning(
                "local worker '{}' not ready after {:.0f}s (still loading?): its routes answer "
                "503 until it is",
                self.name,
                wait,
            )

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = INITIAL_BACKOFF
        while True:
            started = loop.time()
            code = await self._run_once()
            if loop.time() - started >= STABLE_AFTER:
                backoff = INITIAL_BACKOFF
            self._next_start = loop.time() + backoff
            logger.error(
                "local worker '{}' exited with code {}; restarting in {:.0f}s",
                self.name,
                code,
                backoff,
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
            self.restarts += 1

    async def _run_once(self) -> int:
        self.state = "starting"
        try:
            process = await asyncio.create_subprocess_exec(
                *self.command(), env=self.environment(), stdin=asyncio.subprocess.DEVNULL
            )
        except OSError as exc:
            logger.error("local worker '{}' could not be started: {}", self.name, exc)
            return -1
        self._process, self.pid = process, process.pid
        logger.info("local worker '{}' started (pid {}) on {}", self.name, process.pid, self.url)
        exited = asyncio.ensure_future(process.wait())
        ready = asyncio.ensure_future(self._poll_ready())
        try:
            await asyncio.wait({exited, ready}, return_when=asyncio.FIRST_COMPLETED)
            if ready.done() and not exited.done():
                self.state = "ready"
                self._ready.set()
                logger.info("local worker '{}' is ready", self.name)
            return await exited
        finally:
            ready.cancel()
            self._ready.clear()
            self.state = "restarting"

    async def _poll_ready(self) -> None:
        assert self._session is not None
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with self._session.get(f"{self.url}/health/readiness") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(READY_POLL)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        process = self._process
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_GRACE)
            except TimeoutError:
                process.kill()
                await process.wait()
        self.state = "stopped"
        if self._session is not None:
            await self._session.close()


class LocalUpstream:
    native_apis: frozenset[str] = frozenset()
    generates = True

    def __init__(
        self,
        name: str,
        config: LocalUpstreamConfig,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.worker: WorkerProcess | None = None
        if config.spawn is not None:
            port = config.spawn.port or free_port()
            self.worker = WorkerProcess(name, config.spawn, port, config.api_key)
            url = self.worker.url
        elif config.url is not None:
            url = config.url.rstrip("/")
        else:
            raise ValueError(f"local upstream '{name}' needs 'url' or 'spawn'")
        self.url = url
        client = OpenAIUpstreamConfig(
            base_url=url + "/v1",
            api_key=config.api_key,
            headers=dict(config.headers),
            timeout=config.timeout,
            max_connections=config.max_connections,
        )
        self._client = OpenAIUpstream(name, client, session)

    async def start(self) -> None:
        if self.worker is not None:
            await self.worker.start()

    def _check_ready(self) -> None:
        worker = self.worker
        if worker is not None and not worker.ready:
            raise ServiceUnavailableError(
                f"The local worker '{self.name}' is not ready ({worker.state}).",
                code="worker_not_ready",
                retry_after=worker.retry_after(),
            )

    async def complete(self, call: UpstreamCall) -> bytes:
        self._check_ready()
        return await self._client.complete(call)

    async def stream(self, call: UpstreamCall) -> AsyncIterator[list[bytes]]:
        self._check_ready()
        async for events in self._client.stream(call):
            yield events

    async def embed(self, call: UpstreamCall) -> bytes:
        raise UpstreamError(f"The upstream '{self.name}' cannot embed.")

    async def close(self) -> None:
        if self.worker is not None:
            await self.worker.stop()
        await self._client.close()
