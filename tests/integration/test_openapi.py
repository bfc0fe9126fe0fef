"""schemathesis against the proxy's own OpenAPI document, bounded for CI: every answer is a
documented status whose body matches its schema, no 500, no stack trace, 405s say Allow."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes.openai_upstream import FakeOpenAI

SCHEMATHESIS = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
pytestmark = pytest.mark.skipif(
    not Path(SCHEMATHESIS).exists(), reason="schemathesis is not installed (dev extra)"
)


def policy(base_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "upstreams": {"fake": {"type": "openai", "base_url": base_url, "api_key": "sk-up-x1"}},
        "models": {"chat": {"routes": [{"upstream": "fake", "model": "m"}]}},
        "retry": {"attempts": 1},
        "cache": {"backend": "none"},
        **extra,
    }


@pytest.mark.parametrize("keys", [False, True], ids=["open", "with-keys"])
def test_every_operation_conforms_to_the_document(
    start_proxy: Any, fake_openai: FakeOpenAI, keys: bool
) -> None:
    extra = {"keys": [{"name": "k", "key": "sk-client-fuzz"}]} if keys else {}
    proxy = start_proxy(policy(fake_openai.base_url, **extra))
    document = httpx.get(f"{proxy.url}/openapi.json", timeout=5).json()
    chat = document["paths"]["/v1/chat/completions"]["post"]
    assert chat["security"] == ([{"bearer": []}] if keys else [])
    assert "ChatRequestHead" in document["components"]["schemas"]
    argv = [
        SCHEMATHESIS, "run", f"{proxy.url}/openapi.json", "--checks", "all",
        "--max-examples", "25", "--seed", "7", "--request-timeout", "10",
    ]  # fmt: skip
    if keys:
        argv += ["--header", "Authorization: Bearer sk-client-fuzz"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stdout[-6000:]
    assert "Traceback" not in proxy.log()
