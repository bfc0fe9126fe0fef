"""OpenTelemetry traces after the GenAI semantic conventions: a client span `chat {model}`
per upstream attempt (the server span per request is server_spans.py's).

Off by default and free when off: OpenTelemetry is imported only when tracing is enabled,
and the hot path checks one attribute. Export follows the standard OTEL_* variables:
OTEL_TRACES_EXPORTER (otlp, the default | console | none), OTEL_EXPORTER_OTLP_ENDPOINT,
OTEL_SERVICE_NAME, ...
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from proxy.config import ProxyConfig

if TYPE_CHECKING:
    from proxy.accounting import RequestRecord

PROVIDERS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "huggingface": "huggingface",
    "local": "transformers",
}


def configure_exporter() -> None:
    """Install the process's tracer provider, exporting over OTLP/HTTP."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    service = os.environ.get("OTEL_SERVICE_NAME", "llm-proxy")
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif exporter != "none":  # "none": spans are made, nothing is sent
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


class Tracing:
    def __init__(self, config: ProxyConfig) -> None:
        self.tracer: Any = None
        if config.tracing.enabled:
            from opentelemetry import trace

            self.tracer = trace.get_tracer("llm-proxy")
        self.upstreams: dict[str, tuple[str, str | None, int | None]] = {}
        for name, upstream in config.upstreams.items():
            url = getattr(upstream, "base_url", None) or getattr(upstream, "url", None) or ""
            parts = urlsplit(url)
            provider = PROVIDERS.get(str(upstream.__struct_config__.tag), "unknown")
            self.upstreams[name] = (provider, parts.hostname, parts.port)

    def start(self, upstream: str, model: str, request_id: str, operation: str = "chat") -> Any:
        """A client span for one upstream call, or None when tracing is off. `operation` is
        the GenAI operation: "chat" for every generating call, "embeddings"."""
        if self.tracer is None:
            return None
        from opentelemetry.trace import SpanKind

        provider, host, port = self.upstreams.get(upstream, ("unknown", None, None))
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
            "llm_proxy.upstream": upstream,
            "llm_proxy.request_id": request_id,
        }
        if host:
            attributes["server.address"] = host
        if port:
            attributes["server.port"] = port
        return self.tracer.start_span(
            f"{operation} {model}", kind=SpanKind.CLIENT, attributes=attributes
        )

    @staticmethod
    def fail(span: Any, error: Exception) -> None:
        if span is None:
            return
        from opentelemetry.trace import Status, StatusCode

        kind = getattr(error, "cause", None) or getattr(error, "code", None)
        span.set_attribute("error.type", kind or type(error).__name__)  # status code first
        span.set_status(Status(StatusCode.ERROR, str(error)))
        span.end()

    @staticmethod
    def finish(span: Any, record: RequestRecord) -> None:
        """End a call's span with what the answer said (model, usage, finish reasons)."""
        if span is None:
            return
        if record.upstream_model:
            span.set_attribute("gen_ai.response.model", record.upstream_model)
        span.set_attribute("gen_ai.usage.input_tokens", record.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", record.completion_tokens)
        if record.finish_reasons:
            span.set_attribute("gen_ai.response.finish_reasons", record.finish_reasons)
        span.end()
