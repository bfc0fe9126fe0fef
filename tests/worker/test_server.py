"""The worker's HTTP surface without a model: the endpoint of the other task is a clean 404 in
OpenAI's envelope, readiness reports the task and echoes the supervisor's token, and the worker
process imports none of the proxy's gateway code."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from worker.tiny import require_torch

require_torch()

from proxy.worker.contract import TOKEN_HEADER  # noqa: E402
from proxy.worker.server import WorkerState, create_worker_app  # noqa: E402

Client = TestClient[Litestar]
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def client_for(state: WorkerState) -> Iterator[Client]:
    with TestClient(create_worker_app(state)) as client:
        yield client


@pytest.fixture
def generate_worker() -> Iterator[Client]:
    yield from client_for(WorkerState("m", task="generate", token="tok-123"))


@pytest.fixture
def embed_worker() -> Iterator[Client]:
    yield from client_for(WorkerState("m", task="embed"))


def test_a_generate_worker_has_no_embeddings(generate_worker: Client) -> None:
    response = generate_worker.post("/v1/embeddings", json={"model": "m", "input": "x"})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "unsupported_endpoint" and "--task generate" in error["message"]
    assert response.headers["x-request-id"]


def test_an_embed_worker_has_no_chat(embed_worker: Client) -> None:
    response = embed_worker.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unsupported_endpoint"


def test_the_own_task_answers_503_while_loading(embed_worker: Client) -> None:
    response = embed_worker.post("/v1/embeddings", json={"model": "m", "input": "x"})
    assert response.status_code == 503 and "retry-after" in response.headers


def test_readiness_reports_the_task_and_echoes_the_token(
    generate_worker: Client,
    embed_worker: Client,
) -> None:
    loading = generate_worker.get("/health/readiness")
    assert loading.status_code == 503
    assert loading.json() == {"status": "not ready", "reason": "loading", "task": "generate"}
    assert loading.headers[TOKEN_HEADER] == "tok-123"
    unsupervised = embed_worker.get("/health/readiness")
    assert TOKEN_HEADER not in unsupervised.headers
    assert embed_worker.get("/health").json()["task"] == "embed"


def test_unknown_paths_are_openai_errors(embed_worker: Client) -> None:
    response = embed_worker.get("/v1/nothing")
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_the_worker_process_imports_no_gateway_code() -> None:
    """The worker runs in its own process: only proxy.worker.*, proxy.config and leaf modules
    (errors, wire types, ids, logging) may load there."""
    code = (
        "import sys, proxy.worker.cli, proxy.worker.encoder, proxy.worker.embedder\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('proxy'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    loaded = set(done.stdout.split())
    allowed = {"proxy", "proxy.config", "proxy.errors", "proxy.wire", "proxy.ids"}
    allowed |= {"proxy.observability", "proxy.observability.logging"}
    assert {m for m in loaded if not m.startswith("proxy.worker")} <= allowed, sorted(loaded)
    assert "proxy.worker.server" in loaded
