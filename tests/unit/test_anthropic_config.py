"""`type: anthropic` upstreams in the policy: validated like every other kind, a missing key
leaves them not configured, and the default proxy.yaml serves Claude models through them."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.cli import main
from proxy.config import AnthropicUpstreamConfig
from proxy.loader import ConfigError, load_file, load_text
from proxy.policy import compile_policy
from proxy.upstreams.anthropic import AnthropicUpstream
from proxy.upstreams.registry import build_upstream

ROOT = Path(__file__).resolve().parents[2]

POLICY = """\
upstreams:
  claude:
    type: anthropic
    api_key: ${ANTHROPIC_API_KEY}
    headers: {anthropic-beta: prompt-caching-2024-07-31}
    timeout: {first_token: 30}
models:
  sonnet:
    routes: [{upstream: claude, model: claude-sonnet-4-5}]
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_text(text, env={"ANTHROPIC_API_KEY": "k"})
    return [f"{p.line}: {p.path}: {p.message}" for p in caught.value.problems]


def test_an_anthropic_upstream_decodes_with_its_defaults() -> None:
    loaded = load_text(POLICY, env={"ANTHROPIC_API_KEY": "sk-ant-123"})
    upstream = loaded.config.upstreams["claude"]
    assert isinstance(upstream, AnthropicUpstreamConfig)
    assert upstream.base_url == "https://api.anthropic.com"
    assert upstream.version == "2023-06-01"
    assert upstream.api_key == "sk-ant-123"
    assert upstream.timeout.first_token == 30
    assert loaded.unconfigured == {}
    assert "sk-ant-123" in loaded.secrets


def test_mistakes_in_an_anthropic_upstream_are_reported_with_path_and_line() -> None:
    bad = POLICY.replace(
        "    timeout: {first_token: 30}\n", "    api_version: x\n    version: ''\n"
    )
    found = problems_of(bad)
    assert any(f.startswith("6: upstreams.claude.api_version: unknown key") for f in found), found
    assert any(f.startswith("7: upstreams.claude.version:") for f in found), found


def test_an_unset_key_leaves_the_upstream_not_configured() -> None:
    loaded = load_text(POLICY, env={})
    assert loaded.unconfigured == {"claude": "ANTHROPIC_API_KEY"}


def test_check_lists_the_anthropic_routes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "proxy.yaml"
    path.write_text(POLICY)
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "sonnet [weighted]: claude/claude-sonnet-4-5" in out
    assert "ANTHROPIC_API_KEY" in out  # the warning: not configured here


def test_check_refuses_a_bad_anthropic_upstream(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "proxy.yaml"
    path.write_text(POLICY.replace("type: anthropic", "type: anthropic\n    max_connections: 0"))
    assert main(["check", str(path)]) == 1
    assert "upstreams.claude.max_connections" in capsys.readouterr().err


async def test_the_registry_builds_the_anthropic_adapter() -> None:
    config = load_text(POLICY, env={"ANTHROPIC_API_KEY": "k"}).config.upstreams["claude"]
    upstream = build_upstream("claude", config)
    try:
        assert isinstance(upstream, AnthropicUpstream)
        assert upstream.native_apis == frozenset({"messages"})
    finally:
        await upstream.close()


@pytest.mark.parametrize(
    ("asked", "sent"),
    [
        ("claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("claude-haiku-4-5", "claude-haiku-4-5"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1-20250805"),  # the pattern keeps "claude-"
    ],
)
def test_the_default_policy_routes_claude_models_to_anthropic(asked: str, sent: str) -> None:
    policy = compile_policy(load_file(ROOT / "proxy.yaml", env={"ANTHROPIC_API_KEY": "k"}))
    resolved = policy.resolve(asked)
    assert resolved is not None
    (route,) = resolved.policy.routes
    assert route.upstream == "anthropic"
    assert resolved.upstream_model(route) == sent
