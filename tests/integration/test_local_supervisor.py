"""The `spawn:` supervisor in-process, with small stand-in children (plain Python, no model)
on loopback: readiness counts only with the token the supervisor gave its own child, and a
child that could not listen is reported as such."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator

import pytest
from fakes.proxy_harness import free_port
from loguru import logger

from proxy.config import SpawnConfig
from proxy.upstreams.local import WorkerProcess
from proxy.worker.contract import EXIT_PORT_IN_USE, TOKEN_ENV, TOKEN_HEADER

# A stand-in worker: answers 200 on every GET, with `x-llm-proxy-worker-token` set to what
# ECHO says (the token from its environment, or a wrong one).
STAND_IN = """
import os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
echo = os.environ[{token_env!r}] if sys.argv[2] == "own" else "someone-else"
class Ready(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header({header!r}, echo)
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
HTTPServer(("127.0.0.1", int(sys.argv[1])), Ready).serve_forever()
"""


@pytest.fixture
def log() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), format="{message}")
    yield lines
    logger.remove(sink)


def supervisor(command: list[str]) -> WorkerProcess:
    port = free_port()
    worker = WorkerProcess("w", SpawnConfig("unused"), port, api_key=None)
    worker.command = lambda: [part.replace("PORT", str(port)) for part in command]  # type: ignore[method-assign]
    return worker


def stand_in(echo: str) -> list[str]:
    script = STAND_IN.format(token_env=TOKEN_ENV, header=TOKEN_HEADER)
    return [sys.executable, "-c", script, "PORT", echo]


async def test_its_own_child_echoing_the_token_is_ready() -> None:
    worker = supervisor(stand_in("own"))
    try:
        await worker.start(wait=10)
        assert worker.ready and worker.state == "ready"
    finally:
        await worker.stop()


async def test_a_child_without_the_token_is_never_ready() -> None:
    worker = supervisor(stand_in("wrong"))
    try:
        await worker.start(wait=2)
        assert not worker.ready and worker.state == "starting"
    finally:
        await worker.stop()


async def test_a_child_that_could_not_listen_is_reported_as_such(log: list[str]) -> None:
    worker = supervisor([sys.executable, "-c", f"raise SystemExit({EXIT_PORT_IN_USE})"])
    try:
        await worker.start(wait=0.1)
        for _ in range(100):
            if any("could not listen" in line for line in log):
                break
            await asyncio.sleep(0.05)
    finally:
        await worker.stop()
    expected = f"local worker 'w' could not listen: port {worker.port} is in use by another process"
    assert any(expected in line for line in log), log
