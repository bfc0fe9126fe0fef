"""LangChain's OpenAI chat model pointed at the proxy: invoke, stream and a tool call, with
nothing changed but `base_url` (and the proxy key)."""

from __future__ import annotations

from typing import Any

from fakes.openai_upstream import FakeOpenAI
from fakes.proxy_harness import CLIENT_KEY_B, RunningProxy
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI


def chat_model(proxy: RunningProxy, **options: Any) -> ChatOpenAI:
    return ChatOpenAI(
        model="gpt-4o-mini",
        base_url=proxy.base_url,
        api_key=CLIENT_KEY_B,  # type: ignore[arg-type]
        max_retries=0,
        timeout=20,
        **options,
    )


@tool
def get_weather(city: str) -> str:
    """Weather for a city."""
    return f"sunny in {city}"


def test_invoke_answers_with_the_upstream_reply_and_usage(
    proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply = "Hello from LangChain's side"
    message = chat_model(proxy).invoke("Say hello")
    assert message.content == "Hello from LangChain's side"
    assert message.usage_metadata is not None and message.usage_metadata["output_tokens"] > 0
    assert fake_openai.last_request.json["model"] == "upstream-model-id"


def test_stream_yields_the_reply_piece_by_piece(
    proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply = "one two three four"
    pieces = [chunk.content for chunk in chat_model(proxy).stream("Count")]
    assert len(pieces) > 2
    assert "".join(str(piece) for piece in pieces) == "one two three four"


def test_a_bound_tool_comes_back_as_a_tool_call(
    proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    message = chat_model(proxy).bind_tools([get_weather]).invoke("Weather in Paris?")
    assert message.tool_calls, message
    call = message.tool_calls[0]
    assert call["name"] == "get_weather" and "city" in call["args"]
