"""Running the app under uvicorn (uvloop + httptools), one or several processes.

The listening socket is bound before the app's start-up runs: a taken address is reported as such
(exit 3), and "listening on" is logged only once connections are accepted.

Shutdown (docs/semantics.md, "Shutdown"): on SIGTERM readiness turns 503 at once; new
connections are refused after a short grace; requests and streams in flight get until
`server.drain_timeout` after the signal; streams still open then end with an in-band error and
[DONE].
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import socket
import tempfile
import time
from pathlib import Path
from types import FrameType

import uvicorn
from loguru import logger
from uvicorn.supervisors import Multiprocess

from proxy.api.app import create_asgi
from proxy.api.protocol import HttpProtocol
from proxy.gateway import Gateway
from proxy.loader import LoadedConfig
from proxy.observability.logging import configure_logging
from proxy.observability.tracing import configure_exporter

MAX_ACCEPT_GRACE = 2.0  # seconds between readiness 503 and refusing connections
SHUTDOWN_SLACK = 3.0  # uvicorn cancels what is left this long after the in-band endings
STARTUP_FAILURE = 3  # the exit status uvicorn gives a start-up that failed


class DrainingServer(uvicorn.Server):
    def __init__(
        self, config: uvicorn.Config, gateway: Gateway, drain_timeout: float, where: str
    ) -> None:
        super().__init__(config)
        self.where = where  # the address and policy, for the "listening" line
        self.gateway = gateway
        self.drain_timeout = drain_timeout
        self.grace = min(MAX_ACCEPT_GRACE, drain_timeout)
        self.drain_started: float | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            logger.info("llm-proxy listening on {}", self.where)

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


def listen_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_listener(host: str, port: int) -> socket.socket:
    """The listening socket, bound (not yet listening) and inheritable by worker processes."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
    except OSError:
        listener.close()
        raise
    listener.set_inheritable(True)
    return listener


def _uvicorn_options(loaded: LoadedConfig) -> dict[str, object]:
    server = loaded.config.server
    return {
        "loop": "uvloop",
        # httptools with a header timeout, declining upgrades without losing the body;
        # a partial rather than a class made here, so worker processes can unpickle it
        "http": functools.partial(HttpProtocol, header_timeout=server.header_timeout),
        "ws": "none",  # no websocket routes: an upgrade to one is declined like h2c
        "log_config": None,
        "log_level": loaded.config.logging.level.lower().replace("trace", "debug"),
        "access_log": False,
        "proxy_headers": False,
        "server_header": False,
        "lifespan": "on",
        "timeout_graceful_shutdown": int(server.drain_timeout + SHUTDOWN_SLACK),
    }


def _serve_workers(
    listener: socket.socket, options: dict[str, object], path: str, workers: int, where: str
) -> int:
    os.environ["LLM_PROXY_CONFIG"] = os.path.abspath(path)
    _multiprocess_metrics_dir()
    app = "proxy.api.app:app_from_environment"
    config = uvicorn.Config(app, factory=True, workers=workers, **options)  # type: ignore[arg-type]
    logger.info("llm-proxy listening on {} with {} worker processes", where, workers)
    Multiprocess(config, sockets=[listener]).run()
    return 0


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
    try:
        listener = bind_listener(host, port)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        logger.error("cannot listen on {}: {}", listen_address(host, port), reason)
        return STARTUP_FAILURE
    where = f"http://{listen_address(host, listener.getsockname()[1])} (policy {path})"
    options = _uvicorn_options(loaded)
    workers = workers or server.workers
    if workers > 1:
        return _serve_workers(listener, options, path, workers, where)
    config = uvicorn.Config(create_asgi(gateway, path), **options)  # type: ignore[arg-type]
    app_server = DrainingServer(config, gateway, server.drain_timeout, where)
    app_server.run(sockets=[listener])
    return 0 if app_server.started else STARTUP_FAILURE
