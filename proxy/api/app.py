"""The Litestar app factory: the gateway is started in the lifespan and injected."""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.di import Provide
from litestar.exceptions import HTTPException

from proxy.api.errors import http_error, proxy_error, unexpected_error
from proxy.api.fastpath import FrontDoors
from proxy.api.guard import HeaderSizeGuard
from proxy.api.routes import FRONT_DOORS, ROUTES, metrics_handler
from proxy.errors import ProxyError
from proxy.gateway import Gateway
from proxy.observability.logging import configure_logging
from proxy.reload import PolicyReloader


def create_app(gateway: Gateway, policy_path: str | None = None) -> Litestar:
    """The app; with `policy_path`, SIGHUP reloads that file (and with `server.reload`,
    edits to it apply live)."""
    policy = gateway.policy
    server = policy.config.server

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await gateway.start()
        reloader = PolicyReloader(gateway, policy_path) if policy_path else None
        if reloader is not None:
            await reloader.start(watch=server.reload)
        # Everything built so far lives as long as the process: keep it out of the
        # collector's full scans, which otherwise show up as latency spikes.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            gateway.draining = True
            if reloader is not None:
                await reloader.stop()
            await gateway.close()

    def provide_gateway() -> Gateway:
        return gateway

    handlers = list(ROUTES)
    if gateway.admin is not None:
        from proxy.admin.routes import ADMIN_ROUTES

        handlers += ADMIN_ROUTES
    if policy.config.metrics.enabled:
        handlers.append(metrics_handler(policy.config.metrics.path))
    cors = CORSConfig(allow_origins=list(server.cors_origins)) if server.cors_origins else None
    middleware = []
    if policy.config.tracing.enabled:  # imported only then: free when off
        from proxy.observability.server_spans import server_spans

        middleware.append(server_spans)
    return Litestar(
        route_handlers=handlers,
        dependencies={"gateway": Provide(provide_gateway, use_cache=True, sync_to_thread=False)},
        exception_handlers={
            ProxyError: proxy_error,
            HTTPException: http_error,
            Exception: unexpected_error,
        },
        lifespan=[lifespan],
        cors_config=cors,
        middleware=middleware,
        openapi_config=None,
        logging_config=None,
        request_max_body_size=policy.max_body_bytes,
        debug=False,
    )


def create_asgi(gateway: Gateway, policy_path: str | None = None) -> HeaderSizeGuard:
    """What the server runs: the front doors' hot path (unless CORS asks for Litestar's
    middleware on every route), then the Litestar app, behind the header-size guard."""
    app: Any = create_app(gateway, policy_path)
    config = gateway.policy.config
    if not config.server.cors_origins:
        wrap = None
        if config.tracing.enabled:
            from proxy.observability.server_spans import server_spans

            wrap = server_spans
        app = FrontDoors(app, gateway, FRONT_DOORS, wrap)
    return HeaderSizeGuard(app, gateway)


def app_from_environment() -> HeaderSizeGuard:
    """Factory for server worker processes: the policy path comes from LLM_PROXY_CONFIG."""
    path = os.environ.get("LLM_PROXY_CONFIG", "proxy.yaml")
    gateway = Gateway.from_file(path)
    configure_logging(gateway.policy.config.logging, gateway.redactor)
    return create_asgi(gateway, path)
