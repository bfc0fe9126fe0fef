"""The policy loader: good files decode, bad files report every problem with path and line."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from proxy.config import json_schema, parse_size
from proxy.loader import ConfigError, load_file, load_text

ROOT = Path(__file__).resolve().parents[2]

GOOD = """\
server:
  port: ${PORT:-9090}
  max_body_bytes: 1MiB
upstreams:
  openai:
    type: openai
    api_key: ${OPENAI_API_KEY}
    headers: {OpenAI-Organization: org-1}
  local:
    type: openai
    base_url: http://127.0.0.1:8000/v1
models:
  gpt-4o-mini:
    routes:
      - {upstream: openai, model: gpt-4o-mini, weight: 3}
      - {upstream: local, model: llama, weight: 1}
  "openai/*":
    routes: [{upstream: openai}]
keys:
  - {name: team-a, key: "${TEAM_A_KEY}", models: ["gpt-4o*"]}
  - {name: team-b, sha256: "%s"}
""" % ("ab" * 32)


def problems_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_text(text, env=env or {})
    return [f"{p.line}: {p.path}: {p.message}" for p in caught.value.problems]


def test_good_file_decodes_with_interpolation_and_defaults() -> None:
    loaded = load_text(GOOD, env={"OPENAI_API_KEY": "sk-live-123456", "TEAM_A_KEY": "sk-a"})
    config = loaded.config
    assert config.server.port == 9090  # ${PORT:-9090} takes the YAML type of its default
    assert parse_size(config.server.max_body_bytes) == 2**20
    assert config.upstreams["openai"].api_key == "sk-live-123456"
    assert config.upstreams["local"].api_key is None
    assert config.models["gpt-4o-mini"].routes[0].weight == 3
    assert config.keys[0].key == "sk-a"
    assert loaded.unconfigured == {}
    assert "sk-live-123456" in loaded.secrets and "sk-a" in loaded.secrets


def test_unset_credential_leaves_upstream_unconfigured_not_failing() -> None:
    loaded = load_text(GOOD, env={"TEAM_A_KEY": "sk-a"})
    assert loaded.unconfigured == {"openai": "OPENAI_API_KEY"}
    assert any("OPENAI_API_KEY" in w for w in loaded.warnings)


def test_unset_variable_elsewhere_is_an_error_naming_it() -> None:
    found = problems_of(GOOD, env={"OPENAI_API_KEY": "x"})
    assert found == [
        "20: keys[0].key: environment variable TEAM_A_KEY is not set (and no default is given)"
    ]


BAD = """\
server:
  port: "eighty"
  colour: blue
upstreams:
  openai: {type: openai}
  hf: {type: huggingfaec}
models:
  gpt-4o:
    routes:
      - {upstream: opnai, model: gpt-4o}
  empty:
    routes: []
  "a/*/b/*":
    routes: [{upstream: openai}]
keys:
  - {name: a, key: k1, sha256: abc}
  - {name: a, key: k2}
logging: {level: LOUD}
"""


def test_every_problem_is_listed_with_key_path_and_line() -> None:
    found = problems_of(BAD)
    assert "2: server.port: 'eighty' is not of type 'integer'" in found
    assert any(f.startswith("3: server.colour: unknown key 'colour'") for f in found)
    kinds = "(known: openai, anthropic, huggingface, local)"
    assert f"6: upstreams.hf.type: unknown upstream type 'huggingfaec' {kinds}" in found
    unknown = "10: models.gpt-4o.routes[0].upstream: unknown upstream 'opnai' (known: openai, hf)"
    assert unknown in found
    assert "12: models.empty.routes: [] should be non-empty" in found
    assert "13: models.a/*/b/*: a model pattern may contain one '*' only" in found
    assert "16: keys[0]: give exactly one of 'key' or 'sha256'" in found
    assert "16: keys[0].sha256: 'abc' does not match '^[0-9a-fA-F]{64}$'" in found
    assert "17: keys[1].name: duplicate key name 'a'" in found
    assert any(f.startswith("18: logging.level: 'LOUD'") for f in found)
    assert len(found) == 10


def test_upstream_kinds_are_checked_by_their_own_schema() -> None:
    found = problems_of(
        "upstreams:\n"
        "  a: {type: local}\n"
        "  b: {type: huggingface, api: tgi}\n"
        "  c: {type: huggingface, api: chatty}\n"
        "  d: {type: local, url: x, spawn: {device: tpu}}\n"
    )
    assert found == [
        "2: upstreams.a: a local upstream takes exactly one of 'url' or 'spawn'",
        "3: upstreams.b.base_url: api 'tgi' needs the TGI server's base_url",
        "4: upstreams.c.api: 'chatty' is not one of ['chat', 'tei', 'text-generation', 'tgi']",
        "5: upstreams.d: a local upstream takes exactly one of 'url' or 'spawn'",
        "5: upstreams.d.spawn: 'model' is required",
        "5: upstreams.d.spawn.device: 'tpu' is not one of ['auto', 'cpu', 'cuda']",
    ]


def test_yaml_syntax_error_has_a_line() -> None:
    found = problems_of("server:\n  port: [1\nmodels: {}\n")
    assert len(found) == 1 and "invalid YAML" in found[0]


def test_duplicate_keys_are_rejected() -> None:
    found = problems_of("server:\n  port: 1\n  port: 2\n")
    assert found == ["3: server.port: duplicate key"]


def test_auth_required_without_keys_refuses() -> None:
    assert problems_of("auth: required\n") == [
        "1: auth: auth is 'required' but no keys are configured"
    ]


def test_environment_overrides_apply_and_are_listed() -> None:
    loaded = load_text("logging: {level: INFO}\n", env={"LOG_LEVEL": "debug", "LOG_JSON": "true"})
    assert loaded.config.logging.level == "DEBUG"
    assert loaded.config.logging.json is True
    assert loaded.overridden == ["logging.level (from LOG_LEVEL)", "logging.json (from LOG_JSON)"]


def test_bad_override_value_names_the_key() -> None:
    found = problems_of("{}\n", env={"LOG_JSON": "perhaps"})
    assert len(found) == 1 and "logging.json" in found[0] and "perhaps" in found[0]


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_file(tmp_path / "missing.yaml")


def test_default_policy_file_is_valid_without_any_key() -> None:
    loaded = load_file(ROOT / "proxy.yaml", env={})
    assert loaded.unconfigured == {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
    assert "openai/*" in loaded.config.models


def test_schema_validates_what_the_loader_accepts_and_rejects_unknown_keys() -> None:
    schema = json_schema()
    validator = jsonschema.Draft202012Validator(schema)
    data = yaml.safe_load(load_text(GOOD, env={"TEAM_A_KEY": "k"}).text)
    data["server"]["port"] = 9090
    assert list(validator.iter_errors(data)) == []
    assert list(validator.iter_errors({"serverr": {}}))
    json.dumps(schema)  # printable by `llm-proxy schema`


@pytest.mark.parametrize(
    ("text", "expected"),
    [("10MiB", 10 * 2**20), ("64KiB", 65536), ("1GB", 10**9), ("512", 512), (42, 42)],
)
def test_sizes(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected
