"""A local transformers worker (`llm-proxy worker`) as an upstream.

The worker speaks OpenAI's chat wire format, so requests go through `OpenAIUpstream`
unchanged. With `url:` the worker runs elsewhere (its own Deployment, a GPU box). With
`spawn:` the proxy starts `python -m proxy worker ...` itself in `start()`, waits (briefly)
for its readiness, restarts it with exponential backoff whenever it exits, and stops it in
`close()`. While a spawned worker is not ready, requests fail at once with a 503 carrying
Retry-After, so the gateway moves on to the model's next route instead of waiting.

Readiness counts only when the answer carries the random token this supervisor gave its child
(in the environment): another process that happens to listen on the port is never taken for
the worker. A port held by someone else is reported and waited for, never spawned onto.

The worker's task decides what the upstream serves: chat (`generate`) or embeddings (`embed`).
Calls in flight are counted, so a reload that removes or replaces the upstream closes it (and
stops its worker) as soon as they end.

Nothing here imports torch: the worker is another process.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import secrets
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator, Mapping

import aiohttp
from loguru import logger

from proxy.config import LocalUpstreamConfig, OpenAIUpstreamConfig, SpawnConfig
from proxy.errors import ServiceUnavailableError, UpstreamError
from proxy.upstreams.base import UpstreamCall
from proxy.upstreams.openai import OpenAIUpstream
from proxy.worker.contract import (
    API_KEY_ENV,
    EXIT_PORT_IN_USE,
    PARENT_ENV,
    TOKEN_ENV,
    TOKEN_HEADER,
)

READY_WAIT = 10.0  # seconds start() waits for a spawned worker before the proxy serves anyway
READY_POLL = 0.2
PORT_POLL = 0.2
INITIAL_BACKOFF = 1.0
MAX_BACKOFF = 30.0
STABLE_AFTER = 60.0  # a worker that ran this long resets the backoff
STOP_GRACE = 10.0
WORKER_HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((WORKER_HOST, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether a worker could listen on `port` now (bound as the worker binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((WORKER_HOST, port))
        except OSError:
            return False
        return True


class WorkerProcess:
    """Runs and supervises one spawned worker process."""

    def __init__(self, name: str, spawn: SpawnConfig, port: int, api_key: str | None) -> None:
        self.name = name
        self.spawn = spawn
        self.port = port
        self.api_key = api_key
        self.url = f"http://{WORKER_HOST}:{port}"
        self.token = secrets.token_urlsafe(24)
        self.state = "stopped"  # waiting for port | starting | ready | restarting | stopped
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
            "--task", spawn.task,
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        env = {**os.environ, PARENT_ENV: str(os.getpid()), "PYTHONUNBUFFERED": "1"}
        env[TOKEN_ENV] = self.token  # secrets stay off the command line, where ps shows it
        if self.api_key:
            env[API_KEY_ENV] = self.api_key
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
            await self._wait_for_port()
            started = loop.time()
            code = await self._run_once()
            if loop.time() - started >= STABLE_AFTER:
                backoff = INITIAL_BACKOFF
            self._next_start = loop.time() + backoff
            why = (
                f"could not listen: port {self.port} is in use by another process"
                if code == EXIT_PORT_IN_USE
                else f"exited with code {code}"
            )
            logger.error("local worker '{}' {}; restarting in {:.0f}s", self.name, why, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
            self.restarts += 1

    async def _wait_for_port(self) -> None:
        """Never spawn onto a port another process listens on: say so once, then wait."""
        if port_is_free(self.port):
            return
        self.state = "waiting for port"
        logger.error(
            "local worker '{}': port {} is in use by another process; waiting for it to be "
            "free before starting the worker",
            self.name,
            self.port,
        )
        while not port_is_free(self.port):
            await asyncio.sleep(PORT_POLL)
        logger.info("local worker '{}': port {} is free now", self.name, self.port)

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
        """Until this supervisor's own child answers ready (its token proves it)."""
        assert self._session is not None
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with self._session.get(f"{self.url}/health/readiness") as response:
                    if response.status == 200 and self._is_own(response.headers):
                        return
            await asyncio.sleep(READY_POLL)

    def _is_own(self, headers: Mapping[str, str]) -> bool:
        echoed = headers.get(TOKEN_HEADER, "")
        return hmac.compare_digest(echoed.encode(), self.token.encode())

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
        logger.info("local worker '{}' stopped", self.name)


class LocalUpstream:
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
        task = config.spawn.task if config.spawn is not None else config.task
        self.generates = task == "generate"
        self.native_apis: frozenset[str] = (
            frozenset() if self.generates else frozenset({"embeddings"})
        )
        client = OpenAIUpstreamConfig(
            base_url=url + "/v1",
            api_key=config.api_key,
            headers=dict(config.headers),
            timeout=config.timeout,
            max_connections=config.max_connections,
        )
        self._client = OpenAIUpstream(name, client, session)
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self) -> None:
        if self.worker is not None:
            await self.worker.start()

    @contextlib.contextmanager
    def _call(self) -> Iterator[None]:
        """One call in flight: refused at once while a spawned worker is not ready."""
        worker = self.worker
        if worker is not None and not worker.ready:
            raise ServiceUnavailableError(
                f"The local worker '{self.name}' is not ready ({worker.state}).",
                code="worker_not_ready",
                retry_after=worker.retry_after(),
            )
        self.in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()

    async def drained(self) -> None:
        """Returns once no call is in flight."""
        await self._idle.wait()

    async def complete(self, call: UpstreamCall) -> bytes:
        with self._call():
            return await self._client.complete(call)

    async def stream(self, call: UpstreamCall) -> AsyncIterator[list[bytes]]:
        with self._call():
            async for events in self._client.stream(call):
                yield events

    async def embed(self, call: UpstreamCall) -> bytes:
        if self.generates:
            raise UpstreamError(f"The upstream '{self.name}' cannot embed (its task is generate).")
        with self._call():
            return await self._client.embed(call)

    async def close(self) -> None:
        if self.worker is not None:
            await self.worker.stop()
        await self._client.close()
