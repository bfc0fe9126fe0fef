"""Metrics after known traffic, on one process and on two worker processes."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fakes.openai_upstream import FakeOpenAI, status

MESSAGES = [{"role": "user", "content": "one two three"}]


def scrape(url: str) -> str:
    return httpx.get(f"{url}/metrics", timeout=5).text


def value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        match = re.match(r"([a-z_]+)(\{(.*)\})? (\S+)$", line)
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(3) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(4))
    return total


def policy(base_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "upstreams": {"up": {"type": "openai", "base_url": base_url, "api_key": "sk-up-9876"}},
        "models": {
            "chat": {"routes": [{"upstream": "up", "model": "m"}]},
            "limited": {
                "routes": [{"upstream": "up", "model": "m"}],
                "limits": {"requests": "2/minute"},
            },
        },
        "retry": {"attempts": 1},
        "cache": {"backend": "memory"},
        **extra,
    }


def test_counts_tokens_cache_results_and_429s_after_known_traffic(
    start_proxy: Any, fake_openai: FakeOpenAI
) -> None:
    proxy = start_proxy(policy(fake_openai.base_url))
    with openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0) as client:
        for _ in range(3):
            client.chat.completions.create(model="chat", messages=MESSAGES, temperature=0)
        fake_openai.script(status(500))
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="chat", messages=MESSAGES)
        for _ in range(3):
            with contextlib.suppress(openai.RateLimitError):
                client.chat.completions.create(model="limited", messages=MESSAGES)
    text = scrape(proxy.url)
    assert value(text, "llm_proxy_requests_total", model="chat", status="200") == 3
    assert value(text, "llm_proxy_requests_total", model="chat", status="502") == 1
    assert value(text, "llm_proxy_requests_total", model="limited", status="429") == 1
    assert value(text, "llm_proxy_cache_requests_total", result="miss") == 1
    assert value(text, "llm_proxy_cache_requests_total", result="hit") == 2
    assert value(text, "llm_proxy_rate_limited_total", scope="model") == 1
    assert value(text, "llm_proxy_upstream_errors_total", route="up/m", reason="500") == 1
    prompt = value(text, "llm_proxy_tokens_total", model="chat", kind="prompt")
    usage = fake_openai.chat_requests[0].usage
    assert usage is not None and prompt == usage["prompt_tokens"]  # one upstream call answered
    assert value(text, "llm_proxy_route_up", route="up/m") == 1
    assert value(text, "llm_proxy_inflight_requests") == 0
    assert value(text, "llm_proxy_overhead_seconds_count", model="chat") == 4
    assert "sk-up-9876" not in text


def test_several_workers_add_up(start_proxy: Any, fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    proxy = start_proxy(
        policy(fake_openai.base_url, server={"workers": 2}),
        env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
    )
    total = 40
    for _ in range(total):  # a new connection each: both workers take a share
        with openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0) as client:
            client.chat.completions.create(model="chat", messages=MESSAGES)
    text = scrape(proxy.url)
    assert value(text, "llm_proxy_requests_total", model="chat", status="200") == total
    assert value(text, "llm_proxy_inflight_requests") == 0
    assert len(fake_openai.chat_requests) == total
    writers = {p.stem.rsplit("_", 1)[-1] for p in metrics_dir.glob("counter_*.db")}
    assert len(writers) >= 2, "both workers should have served requests"
