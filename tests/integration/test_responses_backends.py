"""/v1/responses on upstreams that take the canonical chat form and translate it themselves: a
TGI server (the fake, tests/fakes/tgi_upstream.py), the Anthropic Messages API (its fake) and
the local worker on a tiny random model. A conversation continued with previous_response_id
reaches them whole."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from fakes import anthropic_upstream as claude
from fakes.openai_upstream import FakeOpenAI
from fakes.proxy_harness import ProxyLauncher, RunningProxy, free_port
from fakes.tgi_upstream import DEFAULT_REPLY, FakeTGI
from worker.tiny import build_tiny_model, require_torch


@pytest.fixture(scope="module")
def fake_tgi() -> Iterator[FakeTGI]:
    with FakeTGI() as fake:
        yield fake


@pytest.fixture(scope="module")
def tgi_proxy(proxy_launcher: ProxyLauncher, fake_tgi: FakeTGI) -> RunningProxy:
    tgi = {"type": "huggingface", "api": "tgi", "base_url": fake_tgi.url, "chat_template": "chatml"}
    return proxy_launcher.start(
        {
            "upstreams": {"tgi": {**tgi, "api_key": "hf_test", "wait_for_model": False}},
            "models": {"hf": {"routes": [{"upstream": "tgi", "model": "tgi"}]}},
            "retry": {"attempts": 1},
            "cache": {"backend": "none"},
            "responses": {"storage": "memory"},
        }
    )


def test_a_conversation_through_tgi(tgi_proxy: RunningProxy, fake_tgi: FakeTGI) -> None:
    with openai.OpenAI(base_url=tgi_proxy.base_url, api_key="x", max_retries=0) as client:
        first = client.responses.create(model="hf", input="My name is Ada.", instructions="Hi.")
        assert first.output_text == DEFAULT_REPLY and first.status == "completed"
        assert fake_tgi.last.path == "/generate"
        with client.responses.stream(
            model="hf", input="What is my name?", previous_response_id=first.id
        ) as stream:
            final = stream.get_final_response()
        assert final.output_text == DEFAULT_REPLY
        assert fake_tgi.last.path == "/generate_stream"
        assert fake_tgi.last.json["inputs"] == (
            "<|im_start|>user\nMy name is Ada.<|im_end|>\n"
            f"<|im_start|>assistant\n{DEFAULT_REPLY}<|im_end|>\n"
            "<|im_start|>user\nWhat is my name?<|im_end|>\n<|im_start|>assistant\n"
        )
        cut = client.responses.create(
            model="hf", input="More", previous_response_id=final.id, max_output_tokens=2
        )
        assert cut.status == "incomplete"
        assert cut.incomplete_details is not None
        assert cut.incomplete_details.reason == "max_output_tokens"
        assert fake_tgi.last.json["parameters"]["max_new_tokens"] == 2
        assert cut.output[0].status == "incomplete"  # type: ignore[union-attr]


# ---- Anthropic's Messages API ---------------------------------------------------------------


@pytest.fixture(scope="module")
def claude_proxy(proxy_launcher: ProxyLauncher) -> Iterator[tuple[RunningProxy, Any]]:
    with claude.FakeAnthropic() as fake:
        upstream = {"type": "anthropic", "base_url": fake.url, "api_key": "sk-ant-test"}
        proxy = proxy_launcher.start(
            {
                "upstreams": {"claude": upstream},
                "models": {"claude": {"routes": [{"upstream": "claude", "model": "claude-x"}]}},
                "retry": {"attempts": 1},
                "cache": {"backend": "none"},
                "responses": {"storage": "memory"},
            }
        )
        yield proxy, fake


def test_a_tool_conversation_through_anthropic(claude_proxy: tuple[RunningProxy, Any]) -> None:
    proxy, fake = claude_proxy
    tool = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
    with openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0) as client:
        with client.responses.stream(
            model="claude",
            input="Weather?",
            instructions="Brief.",
            tools=[tool],  # type: ignore[list-item]
        ) as stream:
            first = stream.get_final_response()
        call = next(item for item in first.output if item.type == "function_call")
        assert call.name == "get_weather" and call.call_id
        assert fake.last_request.json["system"] == "Brief."
        second = client.responses.create(
            model="claude",
            previous_response_id=first.id,
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny"}],
            tools=[tool],  # type: ignore[list-item]
        )
        assert second.output_text == claude.DEFAULT_REPLY and second.status == "completed"
        turns = fake.last_request.json["messages"]
        assert [turn["role"] for turn in turns] == ["user", "assistant", "user"]
        result = turns[2]["content"][0]
        assert result["type"] == "tool_result" and result["tool_use_id"] == call.call_id


# ---- the local worker --------------------------------------------------------------------


@pytest.fixture(scope="module")
def worker_proxy(
    proxy_launcher: ProxyLauncher, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningProxy]:
    require_torch()
    model: Path = build_tiny_model(tmp_path_factory)
    spawn = {"model": str(model), "device": "cpu", "port": free_port()}
    policy: dict[str, Any] = {
        "upstreams": {"local": {"type": "local", "spawn": spawn}},
        "models": {"tiny": {"routes": [{"upstream": "local", "model": "tiny"}]}},
        "retry": {"attempts": 1},
        "cache": {"backend": "none"},
        "responses": {"storage": "memory"},
    }
    proxy = proxy_launcher.start(policy)
    proxy.wait_for_log("local worker 'local' is ready", timeout=60)
    yield proxy
    proxy.stop()


@pytest.mark.timeout(180)
def test_a_conversation_with_the_local_worker(
    worker_proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    with openai.OpenAI(
        base_url=worker_proxy.base_url, api_key="x", max_retries=0, timeout=60
    ) as client:
        first = client.responses.create(model="tiny", input="Hello there", max_output_tokens=5)
        assert first.usage is not None and 0 < first.usage.output_tokens <= 5
        assert first.status in ("completed", "incomplete") and first.output[0].type == "message"
        events = list(
            client.responses.create(
                model="tiny",
                input="And again",
                previous_response_id=first.id,
                max_output_tokens=5,
                stream=True,
            )
        )
        assert events[0].type == "response.created"
        last = events[-1]
        assert last.type in ("response.completed", "response.incomplete")
        second = last.response
        assert second.usage is not None
        # the first turn (its input and its answer) is part of the second one's prompt
        assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert text == second.output_text
    assert fake_openai.requests == []
