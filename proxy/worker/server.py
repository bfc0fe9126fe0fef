"""The worker's HTTP surface, shaped like the proxy's own: OpenAI chat completions (JSON and
SSE) for `--task generate`, OpenAI embeddings for `--task embed`, /v1/models, health endpoints,
and every error in OpenAI's envelope. The endpoint of the other task is a 404.

`/health/liveness` answers as soon as the process serves; `/health/readiness` only once the
model is loaded (the supervisor and Kubernetes wait on it), echoing the token its supervisor
gave it; `/health` reports the task, the model, the queue and the batch sizes served so far.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from litestar import Litestar, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath
from litestar.response import Stream

from proxy.errors import (
    AuthenticationError,
    ModelNotFoundError,
    NotFoundError,
    ProxyError,
    ServiceUnavailableError,
)
from proxy.wire import Model, ModelList
from proxy.worker.contract import TOKEN_HEADER
from proxy.worker.embed_protocol import decode_embedding_params, embedding_body
from proxy.worker.embedder import EmbeddingEngine
from proxy.worker.engine import Engine
from proxy.worker.http import EXCEPTION_HANDLERS, SSE_HEADERS, AnyRequest, request_id_of, sse_frames
from proxy.worker.jobs import Job
from proxy.worker.protocol import decode_params
from proxy.worker.replies import ReplyHead, chunks, collect, completion_body

MAX_BODY_BYTES = 16 * 1024 * 1024
AnyEngine = TypeVar("AnyEngine", Engine, EmbeddingEngine)
T = TypeVar("T")


class WorkerState:
    """What the handlers share. A plain class: Litestar passes it to them as it is (a dataclass
    would be converted field by field, and msgspec refuses a union of two engine classes)."""

    def __init__(
        self,
        model_name: str,
        task: str = "generate",  # generate | embed
        api_key: str | None = None,
        token: str | None = None,  # the supervisor's, echoed by readiness
        pid: int = 0,
    ) -> None:
        self.model_name = model_name
        self.task = task
        self.api_key = api_key
        self.token = token
        self.pid = pid
        self.engine: Engine | EmbeddingEngine | None = None
        self.load_error: str | None = None
        self.draining = False

    def ready(self, kind: type[AnyEngine], task: str) -> AnyEngine:
        """The loaded engine of `kind`: a 404 when this worker runs the other task, a 503 while
        it loads or shuts down."""
        if task != self.task:
            raise NotFoundError(
                f"This worker runs --task {self.task}; it does not serve that endpoint.",
                code="unsupported_endpoint",
            )
        engine = self.engine
        if not isinstance(engine, kind) or self.draining:
            reason = "shutting down" if self.draining else "loading its model"
            raise ServiceUnavailableError(f"The worker is {reason}.", retry_after=5)
        return engine

    def authorize(self, request: AnyRequest) -> None:
        if self.api_key is None:
            return
        sent = request.headers.get("authorization", "")
        token = sent[7:] if sent[:7].lower() == "bearer " else ""
        if not hmac.compare_digest(token.encode(), self.api_key.encode()):
            raise AuthenticationError("Missing or wrong API key for this worker.")


@post("/v1/chat/completions", status_code=200)
async def chat_completions(
    request: AnyRequest, worker: NamedDependency[WorkerState]
) -> Response[Any]:
    worker.authorize(request)
    engine = worker.ready(Engine, "generate")
    params = decode_params(await request.body())
    job = engine.submit(params)
    head = ReplyHead(params.model or worker.model_name)
    headers = {"x-request-id": request_id_of(request)}
    if params.stream:
        include_usage = bool(params.stream_options and params.stream_options.include_usage)
        frames = sse_frames(_cancel_on_exit(engine, job, chunks(head, job, include_usage)))
        return Stream(frames, media_type="text/event-stream", headers={**headers, **SSE_HEADERS})
    reply = asyncio.ensure_future(collect(job))
    text, final = await _until_done_or_gone(request, reply, lambda: engine.cancel(job))
    return Response(
        completion_body(head, job, text, final), media_type="application/json", headers=headers
    )


@post("/v1/embeddings", status_code=200)
async def embeddings(request: AnyRequest, worker: NamedDependency[WorkerState]) -> Response[bytes]:
    worker.authorize(request)
    embedder = worker.ready(EmbeddingEngine, "embed")
    params, inputs = decode_embedding_params(await request.body())
    job = embedder.submit(params, inputs)
    vectors = await _until_done_or_gone(request, job.done, lambda: embedder.cancel(job))
    body = embedding_body(params.model or worker.model_name, vectors, job.prompt_tokens)
    headers = {"x-request-id": request_id_of(request)}
    return Response(body, media_type="application/json", headers=headers)


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


async def _until_done_or_gone(
    request: AnyRequest, result: asyncio.Future[T], on_gone: Callable[[], None]
) -> T:
    """The finished result, unless the client disconnects first (then `on_gone` cancels the
    work behind it)."""
    gone = asyncio.ensure_future(_disconnected(request))
    either: set[asyncio.Future[Any]] = {result, gone}
    try:
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not result.done():
            result.cancel()
            on_gone()
    if not result.done() or result.cancelled():
        raise ClientGoneError("The client closed the connection.")
    return result.result()


async def _disconnected(request: AnyRequest) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


@get("/v1/models")
async def list_models(request: AnyRequest, worker: NamedDependency[WorkerState]) -> ModelList:
    worker.authorize(request)
    return ModelList([Model(id=worker.model_name, created=0, owned_by="llm-proxy-worker")])


@get("/v1/models/{model_id:path}")
async def get_model(
    request: AnyRequest, worker: NamedDependency[WorkerState], model_id: FromPath[str]
) -> Model:
    worker.authorize(request)
    if model_id.lstrip("/") != worker.model_name:
        raise ModelNotFoundError(f"The model `{model_id.lstrip('/')}` does not exist.")
    return Model(id=worker.model_name, created=0, owned_by="llm-proxy-worker")


@get("/health/liveness")
async def liveness() -> dict[str, str]:
    return {"status": "ok"}


@get("/health/readiness")
async def readiness(worker: NamedDependency[WorkerState]) -> Response[dict[str, str]]:
    headers = {TOKEN_HEADER: worker.token} if worker.token else {}
    if worker.engine is not None and not worker.draining:
        return Response({"status": "ready", "task": worker.task}, headers=headers)
    reason = "draining" if worker.draining else ("failed" if worker.load_error else "loading")
    body = {"status": "not ready", "reason": reason, "task": worker.task}
    return Response(body, status_code=503, headers=headers)


@get("/health")
async def health(worker: NamedDependency[WorkerState]) -> dict[str, Any]:
    status = "ok" if worker.engine else "loading"
    details: dict[str, Any] = {"status": status, "task": worker.task, "pid": worker.pid}
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

    handlers = [chat_completions, embeddings, list_models, get_model, liveness, readiness, health]
    return Litestar(
        route_handlers=handlers,
        dependencies={"worker": Provide(lambda: state, use_cache=True, sync_to_thread=False)},
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=[lifespan],
        openapi_config=None,
        logging_config=None,
        request_max_body_size=MAX_BODY_BYTES,
        debug=False,
    )
