"""The official Anthropic TypeScript SDK against the running proxy's /v1/messages door
(tests/node/messages.mjs), on a route translated to the fake OpenAI upstream."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from fakes.openai_upstream import DEFAULT_REPLY, FakeOpenAI
from fakes.proxy_harness import CLIENT_KEY_B, RunningProxy

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(NODE is None, reason="node is not installed"),
    pytest.mark.skipif(
        not (NODE_DIR / "node_modules" / "@anthropic-ai" / "sdk").is_dir(),
        reason="tests/node/node_modules is missing: run `npm ci` in tests/node",
    ),
]


def test_node_sdk_messages_stream_and_count(proxy: RunningProxy, fake_openai: FakeOpenAI) -> None:
    assert NODE is not None
    env = {
        **os.environ,
        "LLM_PROXY_URL": proxy.url,
        "LLM_PROXY_API_KEY": CLIENT_KEY_B,
        "LLM_PROXY_MODEL": "gpt-4o-mini",
    }
    env.pop("ANTHROPIC_API_KEY", None)
    done = subprocess.run(
        [NODE, "messages.mjs"],
        cwd=NODE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])

    create_rec, stream_rec = fake_openai.chat_requests
    created = result["create"]
    assert created["id"].startswith("msg_") and created["model"] == "gpt-4o-mini"
    assert created["text"] == DEFAULT_REPLY and created["stop_reason"] == "end_turn"
    assert created["usage"]["input_tokens"] == create_rec.usage["prompt_tokens"]
    assert created["usage"]["output_tokens"] == create_rec.usage["completion_tokens"]
    assert created["request_id"]

    stream = result["stream"]
    assert stream["text"] == stream["final_text"] == DEFAULT_REPLY
    assert stream["model"] == "gpt-4o-mini" and stream["stop_reason"] == "end_turn"
    assert stream["usage"]["output_tokens"] == stream_rec.usage["completion_tokens"]
    events = stream["events"]
    assert events[0] == "message_start" and events[-2:] == ["message_delta", "message_stop"]
    assert events.count("content_block_delta") > 3

    assert result["count"] == len("Say hello to the test suite") // 4 + 4  # the estimate
    assert result["not_found"] == {
        "raised": "NotFoundError",
        "status": 404,
        "type": "not_found_error",
    }
