"""Running the app under uvicorn (uvloop + httptools), one or several processes.

Shutdown (DESIGN.md): on SIGTERM readiness turns 503 at once; new connections are refused
after a short grace; requests and streams in flight get until `server.drain_timeout` after
the signal; streams still open then end with an in-band error and [DONE].
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import tempfile
import time
from pathlib import Path
from types import FrameType

import uvicorn
from loguru import logger

from proxy.api.app import create_asgi
from proxy.api.protocol import HttpProtocol
from proxy.gateway import Gateway
from proxy.loader import LoadedConfig
from proxy.observability.logging import configure_logging
from proxy.observability.tracing import configure_exporter

MAX_ACCEPT_GRACE = 2.0  # seconds between readiness 503 and refusing connections
SHUTDOWN_SLACK = 3.0  # uvicorn cancels what is left this long after the in-band endings


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, gateway: Gateway, drain_timeout: float) -> None:
        super().__init__(config)
        self.gateway = gateway
        self.drain_timeout = drain_timeout
        self.grace = min(MAX_ACCEPT_GRACE, drain_timeout)
        self.drain_started: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self.drain_started is None:
            self.drain_started = time.monotonic()
            self.gateway.draining = True
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        started = self.drain_started
        if (
            started is not None
            and not self.should_exit
            and time.monotonic() - started >= self.grace
        ):
            logger.info("draining: no new connections; in-flight requests may finish")
            self.should_exit = True
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.gateway.draining = True
        started = self.drain_started or time.monotonic()
        remaining = max(started + self.drain_timeout - time.monotonic(), 0.0)
        ender = asyncio.get_running_loop().call_later(remaining, self._end_streams)
        try:
            await super().shutdown(sockets)
        finally:
            ender.cancel()

    def _end_streams(self) -> None:
        ended = self.gateway.end_streams()
        if ended:
            logger.warning("drain time over: ended {} open stream(s) in-band", ended)


def _multiprocess_metrics_dir() -> None:
    """Several worker processes: prometheus_client keeps metrics in shared files."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        for stale in Path(directory).glob("*.db"):
            stale.unlink()
    else:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="llm-proxy-metrics-")


def run(
    loaded: LoadedConfig,
    path: str,
    *,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
) -> int:
    if loaded.config.tracing.enabled:
        configure_exporter()  # before the gateway, so its tracer comes from this provider
    gateway = Gateway(loaded)
    server = loaded.config.server
    configure_logging(loaded.config.logging, gateway.redactor)
    for warning in loaded.warnings:
        logger.warning(warning)
    if not loaded.config.keys:
        logger.warning("no client keys are configured: anyone who can reach this proxy may use it")
    host = host or server.host
    port = server.port if port is None else port
    workers = workers or server.workers
    options: dict[str, object] = {
        "host": host,
        "port": port,
        "loop": "uvloop",
        "http": HttpProtocol,  # httptools, declining upgrades without losing the body
        "log_config": None,
        "log_level": loaded.config.logging.level.lower().replace("trace", "debug"),
        "access_log": False,
        "proxy_headers": False,
        "server_header": False,
        "lifespan": "on",
        "timeout_graceful_shutdown": int(server.drain_timeout + SHUTDOWN_SLACK),
    }
    logger.info("llm-proxy listening on http://{}:{} (policy {})", host, port, path)
    if workers > 1:
        os.environ["LLM_PROXY_CONFIG"] = os.path.abspath(path)
        _multiprocess_metrics_dir()
        uvicorn.run("proxy.api.app:app_from_environment", factory=True, workers=workers, **options)  # type: ignore[arg-type]
        return 0
    config = uvicorn.Config(create_asgi(gateway, path), **options)  # type: ignore[arg-type]
    DrainingServer(config, gateway, server.drain_timeout).run()
    return 0
