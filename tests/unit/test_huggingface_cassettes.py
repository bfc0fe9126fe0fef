"""HuggingFaceUpstream replayed against vcrpy cassettes of both HF modes and the router.

The cassettes (tests/cassettes/huggingface/) were written by hand from the documented wire
shapes (see the README there): no network here. They run through the real adapter and the
real aiohttp client; vcrpy only answers in place of the server. A request matches only when
its JSON body equals the recorded one and it carries the recorded headers, so the payload
translation and the credentials are checked too.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import vcr
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk
from vcr.request import Request

from proxy.config import HuggingFaceUpstreamConfig, Timeouts
from proxy.errors import (
    RateLimitError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamRejectedError,
)
from proxy.upstreams.base import UpstreamCall
from proxy.upstreams.huggingface import HuggingFaceUpstream

CASSETTES = Path(__file__).resolve().parents[1] / "cassettes" / "huggingface"
TOKEN = "hf_cassetteTOKEN000"


def json_body(sent: Request, recorded: Request) -> None:
    assert json.loads(sent.body) == json.loads(recorded.body)


def recorded_headers(sent: Request, recorded: Request) -> None:
    for name, value in recorded.headers.items():
        assert sent.headers.get(name) == value, name


VCR = vcr.VCR(
    cassette_library_dir=str(CASSETTES),
    record_mode="none",
    match_on=("method", "uri", "json_body", "recorded_headers"),
)
VCR.register_matcher("json_body", json_body)
VCR.register_matcher("recorded_headers", recorded_headers)


def config(api: str, **extra: Any) -> HuggingFaceUpstreamConfig:
    return HuggingFaceUpstreamConfig(api=api, api_key=TOKEN, **extra)  # type: ignore[arg-type]


@pytest.fixture
async def classic() -> AsyncIterator[HuggingFaceUpstream]:
    upstream = HuggingFaceUpstream(
        "hf",
        config("text-generation", chat_template="zephyr", headers={"X-HF-Bill-To": "acme-org"}),
    )
    yield upstream
    await upstream.close()


@pytest.fixture
async def tgi() -> AsyncIterator[HuggingFaceUpstream]:
    upstream = HuggingFaceUpstream(
        "tgi", config("tgi", base_url="http://tgi.internal:8080", wait_for_model=False)
    )
    yield upstream
    await upstream.close()


@pytest.fixture
async def router() -> AsyncIterator[HuggingFaceUpstream]:
    upstream = HuggingFaceUpstream("router", config("chat"))
    yield upstream
    await upstream.close()


def call(model: str, messages: list[dict[str, Any]], **fields: Any) -> UpstreamCall:
    body = json.dumps({"model": model, "messages": messages, **fields}).encode()
    return UpstreamCall(body, model, Timeouts(), "req_cassette")


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def chunks_of(upstream: HuggingFaceUpstream, request: UpstreamCall) -> list[dict[str, Any]]:
    return [json.loads(p) async for batch in upstream.stream(request) for p in batch]


def accumulate(chunks: list[dict[str, Any]]) -> Any:
    state: ChatCompletionStreamState = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    return state.get_final_completion()


ZEPHYR = "HuggingFaceH4/zephyr-7b-beta"


async def test_classic_completion(classic: HuggingFaceUpstream) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        *user("What is the capital of France?"),
    ]
    request = call(ZEPHYR, messages, max_tokens=32, temperature=0.7, top_p=0.95, stop="User:")
    with VCR.use_cassette("classic_complete.yaml") as cassette:
        reply = json.loads(await classic.complete(request))
    assert cassette.all_played
    assert reply["choices"][0]["message"]["content"] == "Paris is the capital of France.\n"
    assert reply["choices"][0]["finish_reason"] == "stop"
    assert reply["usage"] == {"prompt_tokens": 31, "completion_tokens": 9, "total_tokens": 40}


async def test_classic_stream(classic: HuggingFaceUpstream) -> None:
    request = call(
        ZEPHYR,
        user("What is the capital of France?"),
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    with VCR.use_cassette("classic_stream.yaml") as cassette:
        chunks = await chunks_of(classic, request)
    assert cassette.all_played
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]][-1] == "stop"
    assert chunks[-1]["usage"] == {"prompt_tokens": 23, "completion_tokens": 4, "total_tokens": 27}
    assert accumulate(chunks[:-1]).choices[0].message.content == "Paris is the capital."


async def test_classic_loading_model(classic: HuggingFaceUpstream) -> None:
    with VCR.use_cassette("classic_loading.yaml"), pytest.raises(UpstreamError) as exc:
        await classic.complete(call(ZEPHYR, user("Hi")))
    assert exc.value.code == "model_loading" and exc.value.retry_after == 42.5


async def test_tgi_generate_and_its_422(tgi: HuggingFaceUpstream) -> None:
    with VCR.use_cassette("tgi_generate.yaml") as cassette:
        reply = json.loads(
            await tgi.complete(call("tgi", user("Name a colour."), max_tokens=8, seed=42))
        )
        with pytest.raises(UpstreamRejectedError) as exc:
            await tgi.complete(call("tgi", user("A very long prompt"), max_completion_tokens=200))
    assert cassette.all_played
    assert reply["choices"][0]["message"]["content"] == "Blue, like the sky on a clear"
    assert reply["choices"][0]["finish_reason"] == "length"
    assert reply["usage"] == {"prompt_tokens": 14, "completion_tokens": 8, "total_tokens": 22}
    assert exc.value.status == 400 and exc.value.code == "context_length_exceeded"
    assert exc.value.message.startswith("Input validation error: `inputs` tokens")


async def test_tgi_validation_error_inside_a_200_stream(tgi: HuggingFaceUpstream) -> None:
    request = call("tgi", user("Count."), stream=True, stop=["1", "2", "3", "4", "5"])
    with VCR.use_cassette("tgi_stream_error.yaml"), pytest.raises(UpstreamRejectedError) as exc:
        await chunks_of(tgi, request)
    assert "up to 4 stop sequences" in exc.value.message


LLAMA = "meta-llama/Llama-3.1-8B-Instruct:novita"


async def test_router_completion_and_errors(router: HuggingFaceUpstream) -> None:
    with VCR.use_cassette("router_chat.yaml") as cassette:
        reply = json.loads(
            await router.complete(
                call(LLAMA, user("List two fruits."), stop="3.", max_completion_tokens=64)
            )
        )
        with pytest.raises(UpstreamAuthError) as auth:
            await router.complete(call(LLAMA, user("Hi")))
        with pytest.raises(RateLimitError) as limited:
            await router.complete(call(LLAMA, user("Hello")))
    assert cassette.all_played
    assert reply["id"].startswith("chatcmpl-") and reply["object"] == "chat.completion"
    assert reply["choices"][0]["message"] == {
        "role": "assistant",
        "content": "1. Apple\n2. Pear\n",
        "refusal": None,
    }
    assert reply["choices"][0]["finish_reason"] == "stop"
    assert "Invalid credentials" not in auth.value.message and TOKEN not in auth.value.message
    assert limited.value.retry_after == 12


async def test_router_streams_are_normalised(router: HuggingFaceUpstream) -> None:
    text = call(LLAMA, user("Greet me."), stream=True, stream_options={"include_usage": True})
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    tools = call(LLAMA, user("Weather in Paris?"), tools=[tool], stream=True)
    with VCR.use_cassette("router_stream.yaml") as cassette:
        text_chunks = await chunks_of(router, text)
        tool_chunks = await chunks_of(router, tools)
    assert cassette.all_played
    assert (
        len({c["id"] for c in text_chunks}) == 1 and len({c["created"] for c in text_chunks}) == 1
    )
    assert text_chunks[-1]["usage"]["total_tokens"] == 15
    message = accumulate(text_chunks[:-1]).choices[0]
    assert (message.message.role, message.message.content) == ("assistant", "Hello there!")
    assert message.finish_reason == "stop"
    choice = accumulate(tool_chunks).choices[0]
    assert choice.finish_reason == "tool_calls"
    (tool_call,) = choice.message.tool_calls
    assert tool_call.id.startswith("call_") and tool_call.function.name == "get_weather"
    assert json.loads(tool_call.function.arguments) == {"city": "Paris"}
