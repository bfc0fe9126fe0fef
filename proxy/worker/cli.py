"""`llm-proxy worker`: serve one transformers model over OpenAI's chat wire format.

The tokenizer (and its chat template) is checked before the server starts, so a model that
cannot chat fails at once with a clear message. The weights load in the background while
liveness already answers and readiness says "loading"; a load failure stops the process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
from typing import Any

import msgspec
import uvicorn
from loguru import logger

from proxy.config import LoggingConfig
from proxy.observability.logging import Redactor, configure_logging
from proxy.worker.engine import Engine, make_backend, resolve_mode
from proxy.worker.jobs import Stats
from proxy.worker.model import ModelLoadError, load_model, load_tokenizer, pick_device
from proxy.worker.server import WorkerState, create_worker_app

API_KEY_ENV = "WORKER_API_KEY"
BATCHING_ENV = "LLM_PROXY_WORKER_BATCHING"  # auto | dynamic | continuous
PARENT_ENV = "LLM_PROXY_WORKER_PARENT"  # set by a supervising proxy: exit when it is gone
THREADS_ENV = "LLM_PROXY_WORKER_THREADS"  # torch CPU threads (default: torch's choice)


class WorkerServer(uvicorn.Server):
    """Loads the model once the socket is bound; stops the server when loading fails or the
    supervising parent process disappears."""

    def __init__(self, config: uvicorn.Config, state: WorkerState, load: Any) -> None:
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
            engine: Engine = self.load()
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


def run_worker(args: argparse.Namespace) -> int:
    threads = os.environ.get(THREADS_ENV)
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    try:
        device = pick_device(args.device)
        mode = resolve_mode(
            getattr(args, "batching", None) or os.environ.get(BATCHING_ENV, "auto"), device
        )
        tokenizer = load_tokenizer(args.model)
    except (ModelLoadError, ValueError, OSError) as exc:
        print(f"llm-proxy worker: {exc}", file=sys.stderr)
        return 2
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    configure_logging(_logging_config(), Redactor([api_key] if api_key else []))

    def load() -> Engine:
        loaded = load_model(args.model, device, tokenizer)
        stats = Stats(mode, args.max_batch_size, args.max_queue)
        backend = make_backend(loaded, mode, args.max_batch_size, stats)
        return Engine(loaded, backend, stats, args.max_batch_size, args.max_queue)

    state = WorkerState(model_name=args.model, api_key=api_key, pid=os.getpid())
    config = uvicorn.Config(
        create_worker_app(state),
        host=args.host,
        port=args.port,
        loop="uvloop" if sys.platform != "win32" else "asyncio",
        http="httptools",
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="on",
        timeout_graceful_shutdown=30,
    )
    logger.info(
        "llm-proxy worker on http://{}:{}: model {} on {} ({} batching, batch {}, queue {})",
        args.host,
        args.port,
        args.model,
        device,
        mode,
        args.max_batch_size,
        args.max_queue,
    )
    server = WorkerServer(config, state, load)
    server.run()
    return 1 if server.failed else 0
