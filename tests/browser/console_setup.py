"""What the browser tests and the screenshot script share: the policy of a proxy with the
console on, the browser (Debian's Chromium driven by playwright, a fresh profile each time),
signing in, and a ledger with some history for the pictures."""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

from fakes.proxy_harness import UPSTREAM_KEY

ADMIN_KEY = "admin-key-for-the-console-tests-7f3a9c0d2e"
FILE_KEY = "sk-file-key-of-the-console-tests"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1360, "height": 900}
FLAKY_MODEL = "flaky"  # its only route fails on demand; the breaker opens after two failures
FLAKY_ROUTE = "vllm/flaky-model"
PRICES = {"gpt-4o-mini": (0.15, 0.6), "gpt-4o": (2.5, 10.0), "llama-3.1-8b": (0.05, 0.1)}


def console_policy(base_url: str, store: str) -> dict[str, Any]:
    """Two upstreams (both the fake), three models, one file key, prices, breakers that open
    after two failures and stay open for two minutes."""
    upstream = {"type": "openai", "base_url": base_url, "api_key": UPSTREAM_KEY}
    return {
        "server": {"drain_timeout": 1},
        "upstreams": {"openai": upstream, "vllm": dict(upstream)},
        "models": {
            "gpt-4o-mini": {
                "routes": [
                    {"upstream": "openai", "model": "gpt-4o-mini", "weight": 3},
                    {"upstream": "vllm", "model": "llama-3.1-8b", "weight": 1},
                ],
                "fallbacks": ["gpt-4o"],
            },
            "gpt-4o": {"routes": [{"upstream": "openai", "model": "gpt-4o"}]},
            FLAKY_MODEL: {"routes": [{"upstream": "vllm", "model": "flaky-model"}]},
        },
        "keys": [{"name": "ops-dashboard", "key": FILE_KEY, "models": ["gpt-4o-mini"]}],
        "prices": {model: {"input": i, "output": o} for model, (i, o) in PRICES.items()},
        "admin": {"key": "${LLM_PROXY_ADMIN_KEY}", "store": store},
        "retry": {"attempts": 1, "initial_delay": 0.01, "max_delay": 0.05, "deadline": 30},
        "circuit_breaker": {"failures": 2, "window": 60, "cooldown": 120, "max_cooldown": 300},
        "cache": {"backend": "none"},
    }


def launch(playwright: Any, profile: Path, **options: Any) -> Any:
    """A browser context in a fresh user-data directory (`profile`, which must not exist yet
    or be empty): Debian's Chromium, never a browser playwright downloads."""
    options.setdefault("viewport", VIEWPORT)
    return playwright.chromium.launch_persistent_context(
        str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS, **options
    )


def sign_in(page: Any, url: str, key: str = ADMIN_KEY) -> None:
    """Open the console and sign in with the keyboard, as a person would."""
    page.goto(f"{url}/ui")
    field = page.get_by_label("Admin key")
    field.wait_for()
    field.fill(key)
    field.press("Enter")


def seed_history(db_path: Path, days: int = 30, now: float | None = None) -> None:
    """Past ledger rows straight into the store's usage table (for the screenshots only:
    a fresh proxy has no history to chart)."""
    now = time.time() if now is None else now
    rows = []
    for day in range(days, 0, -1):
        weekday = time.gmtime(now - day * 86400).tm_wday
        count = (40 + (days - day) * 3) // (2 if weekday >= 5 else 1)
        for n in range(count):
            at = now - day * 86400 + n * 60
            key, model, route, price = _sample(n)
            prompt, completion = 600 + 37 * (n % 11), 180 + 23 * (n % 7)
            spend = (prompt * price[0] + completion * price[1]) / 1e6 * 40
            rows.append(
                (at, uuid.uuid4().hex, key, model, route, "chat", 200, prompt, completion, spend)
            )
    with sqlite3.connect(db_path) as db:
        db.executemany(
            "INSERT INTO llm_proxy_usage (at, request_id, key_name, model, route, api, status,"
            " prompt_tokens, completion_tokens, spend_usd, duration_ms, cache)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 250.0, 'miss')",
            rows,
        )


def _sample(n: int) -> tuple[str, str, str, tuple[float, float]]:
    if n % 5 == 0:
        return "search-team", "gpt-4o", "openai/gpt-4o", PRICES["gpt-4o"]
    if n % 4 == 0:
        return "ops-dashboard", "gpt-4o-mini", "vllm/llama-3.1-8b", PRICES["llama-3.1-8b"]
    return "support-bot", "gpt-4o-mini", "openai/gpt-4o-mini", PRICES["gpt-4o-mini"]
