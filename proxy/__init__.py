"""llm-proxy: an OpenAI-compatible reverse proxy for LLMs.

`from proxy import Gateway` gives the in-process API. Heavy modules (aiohttp) load only
when Gateway is first used, so `import proxy` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["ConfigError", "Gateway", "ProxyError"]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from proxy.errors import ProxyError
    from proxy.gateway import Gateway
    from proxy.loader import ConfigError


def __getattr__(name: str) -> Any:
    if name == "Gateway":
        from proxy.gateway import Gateway

        return Gateway
    if name == "ProxyError":
        from proxy.errors import ProxyError

        return ProxyError
    if name == "ConfigError":
        from proxy.loader import ConfigError

        return ConfigError
    raise AttributeError(name)
