"""Traces: a GenAI client span per upstream call, child of the request's server span."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fakes.openai_upstream import FakeOpenAI
from litestar.testing import AsyncTestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from proxy.api.app import create_app
from proxy.gateway import Gateway

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def provider() -> Iterator[None]:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(tracer_provider)
    yield


@pytest.fixture(autouse=True)
def clean() -> None:
    EXPORTER.clear()


def policy(base_url: str, enabled: bool) -> dict[str, Any]:
    return {
        "upstreams": {"up": {"type": "openai", "base_url": base_url, "api_key": "sk-up-1234"}},
        "models": {"chat": {"routes": [{"upstream": "up", "model": "upstream-model-id"}]}},
        "tracing": {"enabled": enabled},
        "cache": {"backend": "none"},
    }


def spans(kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in EXPORTER.get_finished_spans() if s.kind == kind]


@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_call_span_has_genai_attributes_under_the_server_span(
    fake_openai: FakeOpenAI, stream: bool
) -> None:
    gateway = Gateway.from_dict(policy(fake_openai.base_url, True), env={})
    body: dict[str, Any] = {"model": "chat", "messages": [{"role": "user", "content": "hi there"}]}
    if stream:
        body["stream"] = True
    async with AsyncTestClient(create_app(gateway)) as client:
        response = await client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200
    (call,) = spans(SpanKind.CLIENT)
    servers = spans(SpanKind.SERVER)
    assert call.name == "chat upstream-model-id"
    attributes = dict(call.attributes or {})
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.request.model"] == "upstream-model-id"
    assert attributes["gen_ai.response.model"] == "upstream-model-id"
    assert attributes["gen_ai.usage.input_tokens"] > 0
    assert attributes["gen_ai.usage.output_tokens"] > 0
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert attributes["server.address"] == "127.0.0.1"
    assert call.parent is not None
    assert call.parent.span_id in {s.context.span_id for s in servers}
    assert "sk-up-1234" not in str(attributes)


async def test_a_failed_call_is_an_error_span(fake_openai: FakeOpenAI) -> None:
    from fakes.openai_upstream import status

    gateway = Gateway.from_dict({**policy(fake_openai.base_url, True), "retry": {"attempts": 1}})
    fake_openai.script(status(500))
    async with AsyncTestClient(create_app(gateway)) as client:
        body = {"model": "chat", "messages": [{"role": "user", "content": "x"}]}
        assert (await client.post("/v1/chat/completions", json=body)).status_code == 502
    (call,) = spans(SpanKind.CLIENT)
    assert not call.status.is_ok
    assert call.attributes is not None and call.attributes["error.type"] == "500"


async def test_tracing_off_makes_no_spans(fake_openai: FakeOpenAI) -> None:
    gateway = Gateway.from_dict(policy(fake_openai.base_url, False), env={})
    assert gateway.tracing.tracer is None
    async with AsyncTestClient(create_app(gateway)) as client:
        body = {"model": "chat", "messages": [{"role": "user", "content": "x"}]}
        assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
    assert EXPORTER.get_finished_spans() == ()


async def test_server_span_follows_http_conventions_and_continues_the_callers_trace(
    fake_openai: FakeOpenAI,
) -> None:
    from fakes.openai_upstream import status

    gateway = Gateway.from_dict({**policy(fake_openai.base_url, True), "retry": {"attempts": 1}})
    trace_id, parent_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    traceparent = {"traceparent": f"00-{trace_id}-{parent_id}-01"}
    body = {"model": "chat", "messages": [{"role": "user", "content": "x"}]}
    async with AsyncTestClient(create_app(gateway)) as client:
        ok = await client.post("/v1/chat/completions", json=body, headers=traceparent)
        assert ok.status_code == 200
        missing = await client.get("/v1/models/no-such-model")
        assert missing.status_code == 404
        fake_openai.script(status(500))
        failed = await client.post("/v1/chat/completions", json=body)
        assert failed.status_code == 502
    first, second, third = spans(SpanKind.SERVER)
    assert first.name == "POST /v1/chat/completions"
    assert first.context.trace_id == int(trace_id, 16)
    assert first.parent is not None and first.parent.span_id == int(parent_id, 16)
    attributes = dict(first.attributes or {})
    assert attributes["http.request.method"] == "POST"
    assert attributes["http.route"] == "/v1/chat/completions"
    assert attributes["http.response.status_code"] == 200
    assert first.status.is_unset
    assert second.name == "GET /v1/models/{model_id}"  # the route, not the id: bounded
    assert (second.attributes or {})["http.response.status_code"] == 404
    assert second.status.is_unset  # a client error is not the server's
    assert second.context.trace_id != first.context.trace_id  # no traceparent: a new trace
    assert (third.attributes or {})["http.response.status_code"] == 502
    assert not third.status.is_ok and (third.attributes or {})["error.type"] == "502"
