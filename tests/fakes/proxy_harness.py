"""Runs the real proxy (`python -m proxy serve`) as a subprocess for the integration tests."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]

UPSTREAM_KEY = "sk-upstream-SECRET123"
UPSTREAM_AUTH_KEY = "sk-upstream-AUTHFAIL456"  # the key the 401-test upstream uses
CLIENT_KEY_A = "sk-client-A"  # team-a: models ["gpt-4o*"]
CLIENT_KEY_B = "sk-client-B"  # team-b: every model, given to the proxy as a sha256
MISSING_ENV_VAR = "LLM_PROXY_TEST_MISSING_KEY"  # never set: makes `unconfigured` not configured

# Variables the proxy reads as overrides (proxy.reference.yaml); a developer's shell must not
# change what the tests see.
PROXY_ENV_OVERRIDES = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "HUGGINGFACE_API_KEY",
    "LLM_PROXY_CONFIG",
    "LOG_LEVEL",
    "LOG_FILE",
    "LOG_JSON",
    "DEFAULT_RATE_LIMIT",
    "DEFAULT_BURST_LIMIT",
    "MAX_RETRIES",
    "INITIAL_RETRY_DELAY",
    "MAX_RETRY_DELAY",
    "CACHE_ENABLED",
    "CACHE_TTL",
    "CACHE_MAX_SIZE",
    "REDIS_URL",
    MISSING_ENV_VAR,
)
START_TIMEOUT = 15.0
MAX_BODY_BYTES = 256 * 1024


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningProxy:
    url: str  # http://127.0.0.1:PORT
    base_url: str  # http://127.0.0.1:PORT/v1
    port: int
    process: subprocess.Popen[bytes]
    config_path: Path
    log_path: Path
    policy: dict[str, Any]

    def log(self) -> str:
        """Everything the proxy wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            log = self.log()
            if text in log:
                return log
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{text!r} not in the proxy log within {timeout}s:\n{log[-3000:]}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(8)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class ProxyLauncher:
    """Starts `python -m proxy serve` subprocesses and stops them all at close()."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.running: list[RunningProxy] = []

    def start(self, policy: dict[str, Any], env: dict[str, str] | None = None) -> RunningProxy:
        n = len(self.running)
        config_path = self.workdir / f"proxy-{n}.yaml"
        config_path.write_text(yaml.safe_dump(policy, sort_keys=False))
        log_path = self.workdir / f"proxy-{n}.log"
        port = free_port()
        proc_env = {k: v for k, v in os.environ.items() if k not in PROXY_ENV_OVERRIDES}
        proc_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        proc_env["PYTHONUNBUFFERED"] = "1"
        proc_env.update(env or {})
        cmd = [
            sys.executable,
            "-m",
            "proxy",
            "serve",
            "--config",
            str(config_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        with log_path.open("wb") as log:
            # cwd: any relative path the proxy writes (disk cache, spend) lands in the tmp dir
            process = subprocess.Popen(
                cmd, cwd=self.workdir, env=proc_env, stdout=log, stderr=subprocess.STDOUT
            )
        running = RunningProxy(
            url=f"http://127.0.0.1:{port}",
            base_url=f"http://127.0.0.1:{port}/v1",
            port=port,
            process=process,
            config_path=config_path,
            log_path=log_path,
            policy=policy,
        )
        self.running.append(running)
        self._wait_ready(running)
        return running

    @staticmethod
    def _wait_ready(proxy: RunningProxy) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        with httpx.Client(timeout=1.0) as http:
            while time.monotonic() < deadline:
                if proxy.process.poll() is not None:
                    raise RuntimeError(
                        f"proxy exited with {proxy.process.returncode} before it was ready:\n"
                        f"{proxy.log()[-5000:]}"
                    )
                try:
                    if http.get(f"{proxy.url}/health/readiness").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        proxy.stop()
        raise RuntimeError(f"proxy not ready within {START_TIMEOUT}s:\n{proxy.log()[-5000:]}")

    def close(self) -> None:
        """SIGTERM every proxy first, then wait for each: their drains overlap."""
        for proxy in self.running:
            if proxy.process.poll() is None:
                proxy.process.terminate()
        for proxy in self.running:
            proxy.stop()


# Sections base_policy sets only to make failures fast and deterministic (one upstream call, no
# breaker trips, no cache). A proxy that does not implement one yet behaves as if it were set
# (nothing retries, trips or caches), so it is left out rather than refused at start-up. Tests of
# these features themselves (test_routing.py) always send them.
TUNING_SECTIONS = ("retry", "circuit_breaker", "cache")


@functools.cache
def policy_sections() -> frozenset[str] | None:
    """Top-level keys the proxy's JSON Schema (`python -m proxy schema`) accepts."""
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "schema"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    try:
        schema = json.loads(done.stdout)
        root = schema
        if "$ref" in schema:
            root = schema["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
        return frozenset(root["properties"])
    except (ValueError, KeyError, TypeError):
        return None


def without_unimplemented_tuning(policy: dict[str, Any]) -> dict[str, Any]:
    known = policy_sections()
    if known is None:
        return policy
    return {k: v for k, v in policy.items() if k not in TUNING_SECTIONS or k in known}


def base_policy(fake_base_url: str) -> dict[str, Any]:
    """The policy most tests share. Each failure test has its own route (often its own
    upstream), so breakers, parking and ejection in one test never leak into another."""
    upstream = {"type": "openai", "base_url": fake_base_url, "api_key": UPSTREAM_KEY}
    policy = {
        # a short drain: every proxy a test stops waits this long (its readiness grace) first
        "server": {"max_body_bytes": MAX_BODY_BYTES, "drain_timeout": 0.3},
        "upstreams": {
            "fake": upstream,
            "fake-auth": {**upstream, "api_key": UPSTREAM_AUTH_KEY},
            "fake-ratelimit": dict(upstream),
            "fake-slow": {
                **upstream,
                "timeout": {"connect": 2, "first_token": 1, "idle": 1, "total": 2},
            },
            "unconfigured": {**upstream, "api_key": "${" + MISSING_ENV_VAR + "}"},
        },
        "models": {
            "gpt-4o-mini": {"routes": [{"upstream": "fake", "model": "upstream-model-id"}]},
            "gpt-4o": {"routes": [{"upstream": "fake", "model": "upstream-gpt-4o"}]},
            "chat-b": {"routes": [{"upstream": "fake", "model": "upstream-chat-b"}]},
            "openai/*": {"routes": [{"upstream": "fake"}]},
            "err-500": {"routes": [{"upstream": "fake", "model": "up-err-500"}]},
            "err-400": {"routes": [{"upstream": "fake", "model": "up-err-400"}]},
            "err-404": {"routes": [{"upstream": "fake", "model": "up-err-404"}]},
            "err-garbage": {"routes": [{"upstream": "fake", "model": "up-err-garbage"}]},
            "err-drop": {"routes": [{"upstream": "fake", "model": "up-err-drop"}]},
            "err-stream-drop": {"routes": [{"upstream": "fake", "model": "up-stream-drop"}]},
            "err-stream-event": {"routes": [{"upstream": "fake", "model": "up-stream-event"}]},
            "err-auth": {"routes": [{"upstream": "fake-auth", "model": "up-err-auth"}]},
            "err-ratelimit": {"routes": [{"upstream": "fake-ratelimit", "model": "up-err-429"}]},
            "acme/chat-1": {"routes": [{"upstream": "fake", "model": "up-acme"}]},
            "slow": {"routes": [{"upstream": "fake-slow", "model": "up-slow"}]},
            "slow-idle": {"routes": [{"upstream": "fake-slow", "model": "up-slow-idle"}]},
            "slow-first": {"routes": [{"upstream": "fake-slow", "model": "up-slow-first"}]},
            "unconfigured-model": {"routes": [{"upstream": "unconfigured", "model": "x"}]},
        },
        "keys": [
            {"name": "team-a", "key": CLIENT_KEY_A, "models": ["gpt-4o*"]},
            {"name": "team-b", "sha256": sha256_hex(CLIENT_KEY_B)},
        ],
        # One call per route, tiny backoff, waits for parked routes never fit: every failure
        # reaches the client in one upstream call, fast.
        "retry": {"attempts": 1, "initial_delay": 0.01, "max_delay": 0.05, "deadline": 30},
        "circuit_breaker": {"failures": 100},
        "cache": {"backend": "none"},
    }
    return without_unimplemented_tuning(policy)
