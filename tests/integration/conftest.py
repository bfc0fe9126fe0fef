"""SDK and HTTP clients pointed at the shared proxy (tests/conftest.py starts it)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest
from fakes.proxy_harness import CLIENT_KEY_B, RunningProxy

USER_MESSAGES = [{"role": "user", "content": "Say hello to the test suite"}]
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def assert_openai_error(body: Any) -> dict[str, Any]:
    """The OpenAI envelope, all four keys, and nothing that looks like a stack trace."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict), body
    assert {"message", "type", "param", "code"} <= set(error), body
    assert isinstance(error["message"], str) and error["message"], body
    assert isinstance(error["type"], str) and error["type"], body
    assert "Traceback" not in str(body) and 'File "' not in str(body), body
    return error


@pytest.fixture
def client(proxy: RunningProxy) -> Iterator[openai.OpenAI]:
    """Sync SDK with team-b's key (every model), no SDK retries."""
    with openai.OpenAI(
        base_url=proxy.base_url, api_key=CLIENT_KEY_B, max_retries=0, timeout=20
    ) as c:
        yield c


@pytest.fixture
async def async_client(proxy: RunningProxy) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=proxy.base_url, api_key=CLIENT_KEY_B, max_retries=0, timeout=20
    ) as c:
        yield c


@pytest.fixture
def http(proxy: RunningProxy) -> Iterator[httpx.Client]:
    """Raw HTTP for what the SDK cannot express; sends team-b's key by default."""
    with httpx.Client(
        base_url=proxy.url, timeout=10, headers={"Authorization": f"Bearer {CLIENT_KEY_B}"}
    ) as c:
        yield c
