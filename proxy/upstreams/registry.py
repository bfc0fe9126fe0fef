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


def serves(config: UpstreamConfig) -> frozenset[str]:
    """The wire formats an upstream takes: "chat" when it generates (every generating upstream
    takes the canonical chat form), plus the front doors it speaks natively ("responses",
    "messages") and "embeddings" when it can embed. Known from the settings alone, so routes
    are sorted before any client exists."""
    if isinstance(config, OpenAIUpstreamConfig):
        native = {"responses"} if config.responses == "native" else set()
        return frozenset({"chat", "embeddings", *native})
    if isinstance(config, AnthropicUpstreamConfig):
        return frozenset({"chat", "messages"})
    if isinstance(config, HuggingFaceUpstreamConfig):
        return _HF_SERVES[config.api]
    task = config.spawn.task if config.spawn is not None else config.task
    return frozenset({"embeddings"}) if task == "embed" else frozenset({"chat"})


_HF_SERVES = {
    "chat": frozenset({"chat"}),
    "text-generation": frozenset({"chat", "embeddings"}),  # the feature-extraction pipeline
    "tgi": frozenset({"chat"}),
    "tei": frozenset({"embeddings"}),
}
