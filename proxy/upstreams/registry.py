"""Upstream config type -> adapter class, imported only when an upstream of that type is used
(the local worker's client must not cost the other kinds anything)."""

from __future__ import annotations

import importlib
from typing import Any

from proxy.config import (
    AnthropicUpstreamConfig,
    HuggingFaceUpstreamConfig,
    LocalUpstreamConfig,
    OpenAIUpstreamConfig,
    UpstreamConfig,
)
from proxy.upstreams.base import Upstream

ADAPTERS: dict[type[Any], str] = {
    OpenAIUpstreamConfig: "proxy.upstreams.openai:OpenAIUpstream",
    AnthropicUpstreamConfig: "proxy.upstreams.anthropic:AnthropicUpstream",
    HuggingFaceUpstreamConfig: "proxy.upstreams.huggingface:HuggingFaceUpstream",
    LocalUpstreamConfig: "proxy.upstreams.local:LocalUpstream",
}


def build_upstream(name: str, config: UpstreamConfig) -> Upstream:
    module, _, attribute = ADAPTERS[type(config)].partition(":")
    adapter: Any = getattr(importlib.import_module(module), attribute)
    upstream: Upstream = adapter(name, config)
    return upstream
