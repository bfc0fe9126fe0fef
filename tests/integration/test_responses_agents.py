"""Agents that speak only the Responses API, through the proxy to an upstream that speaks only
chat completions: the OpenAI Agents SDK (an agent with one function tool, run to completion,
JSON and streamed) and the Codex CLI (one `codex exec` turn, when it is installed: set
CODEX_BIN or put `codex` on PATH).

The upstream is a small chat model of its own here: it calls the first tool it is given, and
once a tool has answered it answers in text, quoting the tool."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp import web
from fakes.proxy_harness import RunningProxy
from fakes.server import FakeServer

agents = pytest.importorskip("agents", reason="openai-agents is not installed (dev extra)")


class ToolThenAnswer(FakeServer):
    thread_name = "fake-tool-then-answer"

    def __init__(self, arguments: dict[str, Any]) -> None:
        super().__init__()
        self.arguments = arguments
        self.requests: list[dict[str, Any]] = []

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 2**20)
        app.router.add_post("/v1/chat/completions", self._chat)
        return app

    def _delta(self, body: dict[str, Any]) -> tuple[dict[str, Any], str]:
        last = body["messages"][-1]
        if last["role"] == "tool" or not body.get("tools"):
            content = last["content"]
            if isinstance(content, list):
                content = "".join(part.get("text", "") for part in content)
            said = f"The tool said: {content}" if last["role"] == "tool" else "Hello."
            return {"role": "assistant", "content": said}, "stop"
        name = body["tools"][0]["function"]["name"]
        call = {"name": name, "arguments": json.dumps(self.arguments)}
        tool_calls = [{"index": 0, "id": f"call_{len(self.requests)}", "type": "function",
                       "function": call}]  # fmt: skip
        return {"role": "assistant", "content": None, "tool_calls": tool_calls}, "tool_calls"

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        delta, finish = self._delta(body)
        usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        head = {"id": "chatcmpl-x", "created": int(time.time()), "model": body["model"]}
        if not body.get("stream"):
            message = {k: v for k, v in delta.items() if k != "index"}
            for call in message.get("tool_calls") or ():
                call.pop("index", None)
            choice = {"index": 0, "message": message, "finish_reason": finish}
            answer = {**head, "object": "chat.completion", "choices": [choice], "usage": usage}
            return web.json_response(answer)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chunk = {**head, "object": "chat.completion.chunk"}
        for choice in (
            {"index": 0, "delta": delta},
            {"index": 0, "delta": {}, "finish_reason": finish},
        ):
            await response.write(f"data: {json.dumps({**chunk, 'choices': [choice]})}\n\n".encode())
        await response.write(
            f"data: {json.dumps({**chunk, 'choices': [], 'usage': usage})}\n\n".encode()
        )
        await response.write(b"data: [DONE]\n\n")
        return response


@pytest.fixture
def tool_model() -> Iterator[Callable[[dict[str, Any]], ToolThenAnswer]]:
    started: list[ToolThenAnswer] = []

    def start(arguments: dict[str, Any]) -> ToolThenAnswer:
        started.append(ToolThenAnswer(arguments).start())
        return started[-1]

    yield start
    for fake in started:
        fake.stop()


def agent_policy(base_url: str, model: str) -> dict[str, Any]:
    return {
        "upstreams": {"chat": {"type": "openai", "base_url": base_url, "api_key": "sk-up"}},
        "models": {model: {"routes": [{"upstream": "chat", "model": "chat-model"}]}},
        "retry": {"attempts": 1},
        "cache": {"backend": "none"},
        "responses": {"storage": "memory"},
    }


async def test_an_agent_with_a_function_tool_runs_to_completion(
    start_proxy: Callable[..., RunningProxy],
    tool_model: Callable[[dict[str, Any]], ToolThenAnswer],
) -> None:
    fake = tool_model({"city": "Paris"})
    proxy = start_proxy(agent_policy(fake.base_url, "agent-model"))
    agents.set_tracing_disabled(True)
    asked: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return f"Sunny in {city}"

    client = openai.AsyncOpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0)
    model = agents.OpenAIResponsesModel(model="agent-model", openai_client=client)
    agent = agents.Agent(
        name="weather", instructions="Use tools.", tools=[get_weather], model=model
    )
    result = await agents.Runner.run(agent, "Weather in Paris?")
    assert result.final_output == "The tool said: Sunny in Paris"
    assert asked == ["Paris"]
    second = fake.requests[1]["messages"]
    assert second[0] == {"role": "system", "content": "Use tools."}
    assert second[-1]["role"] == "tool" and second[-1]["content"] == "Sunny in Paris"
    assert second[-2]["tool_calls"][0]["id"] == second[-1]["tool_call_id"]
    streamed = agents.Runner.run_streamed(agent, "And in Rome?")
    async for _ in streamed.stream_events():
        pass
    assert streamed.final_output == "The tool said: Sunny in Paris"  # the fake's fixed call
    assert len(fake.requests) == 4 and fake.requests[-1]["stream"] is True
    await client.close()


def codex_binary() -> str | None:
    return os.environ.get("CODEX_BIN") or shutil.which("codex")


@pytest.mark.timeout(180)
@pytest.mark.skipif(codex_binary() is None, reason="the Codex CLI is not installed (CODEX_BIN)")
def test_codex_exec_completes_a_turn(
    start_proxy: Callable[..., RunningProxy],
    tool_model: Callable[[dict[str, Any]], ToolThenAnswer],
    tmp_path: Path,
) -> None:
    fake = tool_model({"cmd": "echo proxied-by-llm-proxy"})
    proxy = start_proxy(agent_policy(fake.base_url, "codex-model"))
    provider = (
        f'model_providers.proxy={{name="proxy", base_url="{proxy.base_url}", '
        'wire_api="responses", env_key="PROXY_TEST_KEY"}'
    )
    home = tmp_path / "codex-home"
    home.mkdir()
    command = [
        str(codex_binary()), "exec", "--skip-git-repo-check", "-m", "codex-model",
        "-c", 'model_provider="proxy"', "-c", provider,
        # a chat-only route cannot run hosted web search or sub-agents: the client is told
        "-c", 'web_search="disabled"', "--disable", "multi_agent",
        "Run a command, then say what it printed.",
    ]  # fmt: skip
    env = {**os.environ, "CODEX_HOME": str(home), "PROXY_TEST_KEY": "unused"}
    done = subprocess.run(
        command, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True,
        text=True, timeout=150, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "The tool said:" in done.stdout
    first, second = fake.requests[0], fake.requests[1]
    assert first["stream"] is True and first["tools"]
    assert second["messages"][-1]["role"] == "tool"
    assert "responses 200 model=codex-model" in proxy.log()
