"""Model resolution, client keys and allow-lists of the compiled policy."""

from __future__ import annotations

import hashlib

import pytest

from proxy.errors import AuthenticationError
from proxy.keys import ANONYMOUS, compile_key
from proxy.loader import load_dict, load_text
from proxy.policy import Policy, compile_policy

POLICY = f"""\
upstreams:
  a: {{type: openai, base_url: "http://a/v1"}}
  b: {{type: openai, base_url: "http://b/v1", timeout: {{total: 50}}}}
models:
  gpt-4o: {{routes: [{{upstream: a}}]}}
  "openai/*": {{routes: [{{upstream: a}}]}}
  "openai/gpt-*": {{routes: [{{upstream: b}}], timeout: {{total: 9}}}}
  "*-latest": {{routes: [{{upstream: b, model: fixed}}]}}
keys:
  - {{name: alpha, key: sk-alpha, models: ["gpt-4o", "openai/*"]}}
  - {{name: beta, sha256: "{hashlib.sha256(b"sk-beta").hexdigest()}"}}
"""


@pytest.fixture
def policy() -> Policy:
    return compile_policy(load_text(POLICY, env={}))


def test_exact_name_beats_patterns(policy: Policy) -> None:
    resolved = policy.resolve("gpt-4o")
    assert resolved is not None and resolved.policy.name == "gpt-4o"


def test_longest_literal_prefix_wins_and_matched_part_is_the_upstream_model(
    policy: Policy,
) -> None:
    resolved = policy.resolve("openai/gpt-4.1")
    assert resolved is not None and resolved.policy.name == "openai/gpt-*"
    route = resolved.policy.routes[0]
    assert resolved.upstream_model(route) == "4.1"
    other = policy.resolve("openai/o3")
    assert other is not None and other.policy.name == "openai/*"
    assert other.upstream_model(other.policy.routes[0]) == "o3"


def test_star_matches_slashes_and_route_model_overrides(policy: Policy) -> None:
    resolved = policy.resolve("org/name-latest")
    assert resolved is not None and resolved.matched == "org/name"
    assert resolved.upstream_model(resolved.policy.routes[0]) == "fixed"


def test_unknown_model_and_empty_match_do_not_resolve(policy: Policy) -> None:
    assert policy.resolve("claude") is None
    assert policy.resolve("openai/") is None


def test_model_timeout_overrides_upstream_timeout(policy: Policy) -> None:
    resolved = policy.resolve("openai/gpt-x")
    assert resolved is not None
    timeouts = resolved.policy.routes[0].timeouts
    assert timeouts.total == 9 and timeouts.connect == 5


def test_public_models_exclude_patterns(policy: Policy) -> None:
    assert policy.public_models == ["gpt-4o"]


def test_plain_and_sha256_keys_authenticate(policy: Policy) -> None:
    assert policy.authenticate("Bearer sk-alpha").name == "alpha"
    assert policy.authenticate("bearer sk-beta").name == "beta"


@pytest.mark.parametrize("header", [None, "", "Bearer", "Basic sk-alpha", "Bearer sk-wrong"])
def test_missing_or_wrong_key_is_401(policy: Policy, header: str | None) -> None:
    with pytest.raises(AuthenticationError) as caught:
        policy.authenticate(header)
    assert "sk-wrong" not in caught.value.message


def test_allow_list_globs(policy: Policy) -> None:
    alpha = policy.authenticate("Bearer sk-alpha")
    assert alpha.allows("gpt-4o") and alpha.allows("openai/anything/else")
    assert not alpha.allows("gpt-4o-mini")
    assert policy.authenticate("Bearer sk-beta").allows("anything")


def test_without_keys_everyone_is_anonymous() -> None:
    policy = compile_policy(load_text("models: {}\n", env={}))
    assert policy.authenticate("Bearer whatever") is ANONYMOUS


def test_a_key_past_its_expiry_is_refused() -> None:
    keys = [
        {"name": "old", "key": "sk-old", "expires_at": "2020-01-01T00:00:00Z"},
        {"name": "new", "key": "sk-new", "expires_at": "2999-01-01"},
    ]
    policy = compile_policy(load_dict({**_minimal(), "keys": keys}, env={}))
    assert policy.authenticate("Bearer sk-new").name == "new"
    with pytest.raises(AuthenticationError) as caught:
        policy.authenticate("Bearer sk-old")
    assert caught.value.code == "expired_api_key"


def test_keys_made_at_run_time_are_looked_up_after_the_policy_s() -> None:
    policy = compile_policy(load_dict(_minimal(), env={}))
    assert policy.authenticate("Bearer sk-x") is ANONYMOUS  # no key anywhere: open
    digest = hashlib.sha256(b"sk-runtime").digest()
    runtime = {digest: compile_key("made-later", digest, ["gpt-*"], runtime=True)}
    caller = policy.authenticate("Bearer sk-runtime", runtime)
    assert caller.name == "made-later" and caller.allows("gpt-4o") and not caller.allows("x")
    with pytest.raises(AuthenticationError):
        policy.authenticate("Bearer sk-x", runtime)  # a key exists now: unknown ones are 401


def _minimal() -> dict[str, object]:
    return {
        "upstreams": {"a": {"type": "openai", "base_url": "http://a/v1"}},
        "models": {"gpt-4o": {"routes": [{"upstream": "a"}]}},
    }
