"""`llm-proxy worker`: serve one transformers model over OpenAI's chat wire format
(`--task generate`) or its embeddings wire format (`--task embed`).

The port is bound first: a port another process holds ends the worker at once with exit code
EXIT_PORT_IN_USE and a message saying so. For generation the tokenizer (and its chat
template) is checked before the server starts, so a model that cannot chat fails at once with
a clear message. The weights load in the background while liveness already answers and
readiness says "loading"; a load failure stops the process.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

import msgspec
import uvicorn
from loguru import logger

from proxy.config import LoggingConfig
from proxy.observability.logging import Redactor, configure_logging
from proxy.worker.contract import API_KEY_ENV, EXIT_PORT_IN_USE, PARENT_ENV, TOKEN_ENV
from proxy.worker.embedder import EmbeddingEngine
from proxy.worker.engine import Engine, make_backend, resolve_mode
from proxy.worker.jobs import Stats
from proxy.worker.model import ModelLoadError, load_model, load_tokenizer, pick_device
from proxy.worker.server import WorkerState, create_worker_app

BATCHING_ENV = "LLM_PROXY_WORKER_BATCHING"  # auto | dynamic | continuous
THREADS_ENV = "LLM_PROXY_WORKER_THREADS"  # torch CPU threads (default: torch's choice)

Loader = Callable[[], Engine | EmbeddingEngine]


class PortInUseError(Exception):
    """Another process listens on the worker's port."""


class WorkerServer(uvicorn.Server):
    """Loads the model once the socket is bound; stops the server when loading fails or the
    supervising parent process disappears."""

    def __init__(self, config: uvicorn.Config, state: WorkerState, load: Loader) -> None:
        super().__init__(config)
        self.state = state
        self.load = load
        self.failed = False

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        threading.Thread(target=self._load, name="worker-load", daemon=True).start()
        parent = os.environ.get(PARENT_ENV)
        if parent:
            asyncio.get_running_loop().create_task(self._watch_parent(int(parent)))

    def _load(self) -> None:
        try:
            engine = self.load()
            engine.start()
            self.state.engine = engine
            logger.info("worker ready: {}", engine.loaded.describe())
        except Exception as exc:
            logger.opt(exception=exc).error("the worker could not load its model")
            self.state.load_error = f"{type(exc).__name__}: {exc}"
            self.failed = True
            self.should_exit = True

    async def _watch_parent(self, parent: int) -> None:
        while os.getppid() == parent:
            await asyncio.sleep(1.0)
        logger.warning("the supervising proxy (pid {}) is gone: stopping", parent)
        self.should_exit = True


def _logging_config() -> LoggingConfig:
    """LOG_LEVEL and LOG_JSON, as the proxy reads them; anything invalid gives the defaults."""
    values = {
        "level": os.environ.get("LOG_LEVEL", "INFO").upper(),
        "json": os.environ.get("LOG_JSON", "").lower() == "true",
    }
    try:
        return msgspec.convert(values, LoggingConfig)
    except msgspec.ValidationError:
        return LoggingConfig()


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything slow happens."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # not a port in TIME_WAIT
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(f"port {port} is in use by another process on {host}") from None
        raise
    return sock


def _loader(args: argparse.Namespace, task: str, device: str) -> Loader:
    """How to load the model in the background; for generation, the tokenizer and batching
    mode are checked now (raising ModelLoadError, ValueError or OSError)."""
    if task == "embed":
        from proxy.worker.encoder import load_encoder

        return lambda: EmbeddingEngine(
            load_encoder(args.model, device), args.max_batch_size, args.max_queue
        )
    mode = resolve_mode(
        getattr(args, "batching", None) or os.environ.get(BATCHING_ENV, "auto"), device
    )
    tokenizer = load_tokenizer(args.model)

    def load() -> Engine:
        loaded = load_model(args.model, device, tokenizer)
        stats = Stats(mode, args.max_batch_size, args.max_queue)
        backend = make_backend(loaded, mode, args.max_batch_size, stats)
        return Engine(loaded, backend, stats, args.max_batch_size, args.max_queue)

    return load


def run_worker(args: argparse.Namespace) -> int:
    task = getattr(args, "task", None) or "generate"
    threads = os.environ.get(THREADS_ENV)
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    try:
        sock = bind(args.host, args.port)
    except (PortInUseError, OSError) as exc:
        print(f"llm-proxy worker: cannot listen: {exc}", file=sys.stderr)
        return EXIT_PORT_IN_USE if isinstance(exc, PortInUseError) else 2
    try:
        device = pick_device(args.device)
        load = _loader(args, task, device)
    except (ModelLoadError, ValueError, OSError) as exc:
        sock.close()
        print(f"llm-proxy worker: {exc}", file=sys.stderr)
        return 2
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    configure_logging(_logging_config(), Redactor([api_key] if api_key else []))
    state = WorkerState(
        model_name=args.model,
        task=task,
        api_key=api_key,
        token=os.environ.get(TOKEN_ENV) or None,
        pid=os.getpid(),
    )
    port = sock.getsockname()[1]
    logger.info(
        "llm-proxy worker on http://{}:{}: model {} on {}, task {} (batch {}, queue {})",
        args.host, port, args.model, device, task, args.max_batch_size, args.max_queue,
    )  # fmt: skip
    server = WorkerServer(_uvicorn_config(state, args.host, port), state, load)
    server.run(sockets=[sock])
    return 1 if server.failed else 0


def _uvicorn_config(state: WorkerState, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        create_worker_app(state),
        host=host,
        port=port,
        loop="uvloop" if sys.platform != "win32" else "asyncio",
        http="httptools",
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="on",
        timeout_graceful_shutdown=30,
    )
