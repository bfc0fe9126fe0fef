"""Running the app under uvicorn (uvloop + httptools), one or several processes."""

from __future__ import annotations

import os

import uvicorn
from loguru import logger

from proxy.api.app import create_app
from proxy.gateway import Gateway
from proxy.loader import LoadedConfig
from proxy.observability.logging import configure_logging


def run(
    loaded: LoadedConfig,
    path: str,
    *,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
) -> int:
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
        "http": "httptools",
        "log_config": None,
        "access_log": False,
        "server_header": False,
        "lifespan": "on",
        "timeout_graceful_shutdown": int(server.drain_timeout) or None,
    }
    logger.info("llm-proxy listening on http://{}:{} (policy {})", host, port, path)
    if workers > 1:
        os.environ["LLM_PROXY_CONFIG"] = os.path.abspath(path)
        uvicorn.run("proxy.api.app:app_from_environment", factory=True, workers=workers, **options)  # type: ignore[arg-type]
    else:
        uvicorn.run(create_app(gateway), **options)  # type: ignore[arg-type]
    return 0
