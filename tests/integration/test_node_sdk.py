"""The official OpenAI Node SDK against the running proxy (tests/node/chat.mjs)."""

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
        not (NODE_DIR / "node_modules" / "openai").is_dir(),
        reason="tests/node/node_modules is missing: run `npm ci` in tests/node",
    ),
]


def test_node_sdk_chat_and_stream(proxy: RunningProxy, fake_openai: FakeOpenAI) -> None:
    assert NODE is not None
    env = {
        **os.environ,
        "LLM_PROXY_BASE_URL": proxy.base_url,
        "LLM_PROXY_API_KEY": CLIENT_KEY_B,
        "LLM_PROXY_MODEL": "gpt-4o-mini",
    }
    done = subprocess.run(
        [NODE, "chat.mjs"],
        cwd=NODE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])

    chat_rec, stream_rec = fake_openai.chat_requests
    chat = result["chat"]
    assert chat["model"] == "gpt-4o-mini"
    assert chat["content"] == DEFAULT_REPLY
    assert chat["finish_reason"] == "stop"
    assert {k: chat["usage"][k] for k in chat_rec.usage} == chat_rec.usage
    assert chat["route"] == "fake/upstream-model-id"

    stream = result["stream"]
    assert stream["content"] == DEFAULT_REPLY
    assert stream["finish_reason"] == "stop"
    assert stream["models"] == ["gpt-4o-mini"]
    assert {k: stream["usage"][k] for k in stream_rec.usage} == stream_rec.usage
    assert stream["chunks"] > 3

    assert result["not_found"] == {
        "raised": "NotFoundError",
        "status": 404,
        "code": "model_not_found",
    }
