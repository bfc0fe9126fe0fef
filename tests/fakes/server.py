"""What the fake upstreams share: an aiohttp server on 127.0.0.1 (a free port) in a background
thread with its own event loop, so synchronous and asynchronous tests can drive it alike.

    class FakeThing(FakeServer):
        thread_name = "fake-thing"

        def _app(self) -> web.Application:   # the fake's routes
            ...

    with FakeThing() as fake:                 # or fake = FakeThing().start(); fake.stop()
        ... drive something against fake.url ...
"""

from __future__ import annotations

import asyncio
import threading
from typing import Self

from aiohttp import web


class FakeServer:
    """Start, stop and the port; a subclass gives its routes in `_app`."""

    thread_name = "fake-server"

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    def _app(self) -> web.Application:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:  # surfaced to start()
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name=self.thread_name, daemon=True)
        self._thread.start()
        if not started.wait(10) or failure:
            raise RuntimeError(f"{self.thread_name} did not start: {failure}")
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._loop = self._thread = self._runner = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _serve(self) -> None:
        # handler_cancellation: a client that goes away cancels the handler, so tests can see
        # that the proxy really closed its upstream request.
        self._runner = web.AppRunner(
            self._app(), access_log=None, handler_cancellation=True, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
