"""Upstream config type -> adapter class. New kinds of upstream register here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from proxy.config import OpenAIUpstreamConfig, UpstreamConfig
from proxy.upstreams.base import Upstream
from proxy.upstreams.openai import OpenAIUpstream

ADAPTERS: dict[type[Any], Callable[[str, Any], Upstream]] = {
    OpenAIUpstreamConfig: OpenAIUpstream,
}


def build_upstream(name: str, config: UpstreamConfig) -> Upstream:
    return ADAPTERS[type(config)](name, config)
