"""config/proxy.reference.yaml: the proxy's own loader accepts it, the values it calls defaults
are the code's defaults, and it names every key the policy has (a key added to
proxy/config.py without a word in the reference fails here)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import msgspec
import pytest
from deploy_support import ROOT

from proxy.config import ProxyConfig
from proxy.loader import ConfigError, LoadedConfig, load_text

REFERENCE = ROOT / "config" / "proxy.reference.yaml"
TEXT = REFERENCE.read_text()
EXAMPLE_ENV = {"TEAM_A_KEY": "team-a-example-key"}  # upstream credentials stay unset
# Sections written out whole with their defaults (no `# example` line in them).
DEFAULT_SECTIONS = (
    "server",
    "auth",
    "retry",
    "circuit_breaker",
    "limits",
    "cache",
    "logging",
    "metrics",
    "tracing",
)


def load_reference() -> LoadedConfig:
    try:
        return load_text(TEXT, source=str(REFERENCE), env=EXAMPLE_ENV)
    except ConfigError as exc:
        pytest.fail(f"the proxy rejects its own reference policy:\n{exc}")


def test_the_reference_loads_with_its_credentials_unset() -> None:
    loaded = load_reference()
    assert loaded.unconfigured == {
        "openai": "OPENAI_API_KEY",
        "anthropic": "ANTHROPIC_API_KEY",
        "hf": "HUGGINGFACE_API_KEY",
    }
    assert loaded.config.retry.on == [429, 500, 502, 503, 504, "timeout", "connect"]  # `on:`
    assert loaded.config.models["gpt-4o-mini"].params["max_tokens"].default == 1024


@pytest.mark.parametrize("section", DEFAULT_SECTIONS)
def test_what_the_reference_calls_defaults_are_the_defaults(section: str) -> None:
    documented = getattr(load_reference().config, section)
    assert documented == getattr(ProxyConfig(), section), (
        f"config/proxy.reference.yaml shows `{section}:` with values that are not the "
        "defaults in proxy/config.py: correct one or the other"
    )


def field_names(kind: msgspec.inspect.Type) -> Iterator[str]:
    """Every field name of every Struct reachable from `kind`."""
    seen: set[type] = set()
    pending = [kind]
    while pending:
        current = pending.pop()
        if isinstance(current, msgspec.inspect.StructType):
            if current.cls in seen:
                continue
            seen.add(current.cls)
            for field in current.fields:
                yield field.encode_name
                pending.append(field.type)
        elif isinstance(current, msgspec.inspect.UnionType):
            pending += current.types
        elif isinstance(current, msgspec.inspect.DictType):
            pending.append(current.value_type)
        elif isinstance(current, msgspec.inspect.ListType):
            pending.append(current.item_type)


def test_the_reference_names_every_key_of_the_policy() -> None:
    names = set(field_names(msgspec.inspect.type_info(ProxyConfig)))
    missing = sorted(name for name in names if not re.search(rf"\b{name}:", TEXT))
    assert not missing, f"keys in proxy/config.py that config/proxy.reference.yaml omits: {missing}"
