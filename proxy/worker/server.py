"""The worker's HTTP surface, shaped like the proxy's own: OpenAI chat completions (JSON and
SSE), /v1/models, health endpoints, and every error in OpenAI's envelope.

`/health/liveness` answers as soon as the process serves; `/health/readiness` only once the
model is loaded (the supervisor and Kubernetes wait on it); `/health` reports the model, the
queue and the batch sizes served so far.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from litestar import Litestar, Response, get, post
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.response import Stream

from proxy.api.errors import http_error, proxy_error, unexpected_error
from proxy.api.request_id import AnyRequest, request_id_of
from proxy.api.sse import SSE_HEADERS, sse_frames
from proxy.errors import (
    AuthenticationError,
    ModelNotFoundError,
    ProxyError,
    ServiceUnavailableError,
)
from proxy.wire import Model, ModelList
from proxy.worker.engine import Engine
from proxy.worker.jobs import Job
from proxy.worker.protocol import decode_params
from proxy.worker.replies import ReplyHead, chunks, collect, completion_body

MAX_BODY_BYTES = 16 * 1024 * 1024


@dataclass
class WorkerState:
    model_name: str
    api_key: str | None = None
    engine: Engine | None = None
    load_error: str | None = None
    draining: bool = False
    pid: int = 0

    def ready_engine(self) -> Engine:
        if self.engine is None or self.draining:
            reason = "shutting down" if self.draining else "loading its model"
            raise ServiceUnavailableError(f"The worker is {reason}.", retry_after=5)
        return self.engine

    def authorize(self, request: AnyRequest) -> None:
        if self.api_key is None:
            return
        sent = request.headers.get("authorization", "")
        token = sent[7:] if sent[:7].lower() == "bearer " else ""
        if not hmac.compare_digest(token.encode(), self.api_key.encode()):
            raise AuthenticationError("Missing or wrong API key for this worker.")


@post("/v1/chat/completions", status_code=200)
async def chat_completions(request: AnyRequest, worker: WorkerState) -> Response[Any]:
    worker.authorize(request)
    engine = worker.ready_engine()
    params = decode_params(await request.body())
    job = engine.submit(params)
    head = ReplyHead(params.model or worker.model_name)
    headers = {"x-request-id": request_id_of(request)}
    if params.stream:
        include_usage = bool(params.stream_options and params.stream_options.include_usage)
        frames = sse_frames(_cancel_on_exit(engine, job, chunks(head, job, include_usage)))
        return Stream(frames, media_type="text/event-stream", headers={**headers, **SSE_HEADERS})
    text, final = await _until_done_or_gone(request, engine, job)
    return Response(
        completion_body(head, job, text, final), media_type="application/json", headers=headers
    )


async def _cancel_on_exit(
    engine: Engine, job: Job, batches: AsyncIterator[list[bytes]]
) -> AsyncIterator[list[bytes]]:
    """A stream that ends early (client gone, server stopping) cancels its job."""
    try:
        async for batch in batches:
            yield batch
    finally:
        engine.cancel(job)


class ClientGoneError(ProxyError):
    status = 499  # nginx's "client closed request": nobody reads this reply
    type = "client_closed_request"


async def _until_done_or_gone(request: AnyRequest, engine: Engine, job: Job) -> Any:
    """The finished reply, unless the client disconnects first (then the job is cancelled)."""
    result = asyncio.ensure_future(collect(job))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({result, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not result.done():
            result.cancel()
            engine.cancel(job)
    if not result.done() or result.cancelled():
        raise ClientGoneError("The client closed the connection.")
    return result.result()


async def _disconnected(request: AnyRequest) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


@get("/v1/models")
async def list_models(request: AnyRequest, worker: WorkerState) -> ModelList:
    worker.authorize(request)
    return ModelList([Model(id=worker.model_name, created=0, owned_by="llm-proxy-worker")])


@get("/v1/models/{model_id:path}")
async def get_model(request: AnyRequest, worker: WorkerState, model_id: str) -> Model:
    worker.authorize(request)
    if model_id.lstrip("/") != worker.model_name:
        raise ModelNotFoundError(f"The model `{model_id.lstrip('/')}` does not exist.")
    return Model(id=worker.model_name, created=0, owned_by="llm-proxy-worker")


@get("/health/liveness")
async def liveness() -> dict[str, str]:
    return {"status": "ok"}


@get("/health/readiness")
async def readiness(worker: WorkerState) -> Response[dict[str, str]]:
    if worker.engine is not None and not worker.draining:
        return Response({"status": "ready"})
    reason = "draining" if worker.draining else ("failed" if worker.load_error else "loading")
    return Response({"status": "not ready", "reason": reason}, status_code=503)


@get("/health")
async def health(worker: WorkerState) -> dict[str, Any]:
    details: dict[str, Any] = {"status": "ok" if worker.engine else "loading", "pid": worker.pid}
    if worker.load_error:
        details.update(status="failed", error=worker.load_error)
    if worker.engine is not None:
        details.update(worker.engine.health())
    return details


def create_worker_app(state: WorkerState) -> Litestar:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        try:
            yield
        finally:
            state.draining = True
            if state.engine is not None:
                state.engine.stop()

    return Litestar(
        route_handlers=[chat_completions, list_models, get_model, liveness, readiness, health],
        dependencies={"worker": Provide(lambda: state, use_cache=True, sync_to_thread=False)},
        exception_handlers={
            ProxyError: proxy_error,
            HTTPException: http_error,
            Exception: unexpected_error,
        },
        lifespan=[lifespan],
        openapi_config=None,
        logging_config=None,
        request_max_body_size=MAX_BODY_BYTES,
        debug=False,
    )
