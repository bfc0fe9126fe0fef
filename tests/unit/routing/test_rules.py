"""Request rules: conditions, first match wins, the prompt estimate."""

from __future__ import annotations

import msgspec
import pytest

from proxy.config import RuleConfig, RuleMatch
from proxy.formats.chat import ChatRequest, estimate_prompt_tokens
from proxy.routing.rules import apply_rules, compile_rule, rule_headers
from proxy.wire import decode_chat_head, top_level


def head(**extra: object) -> ChatRequest:
    body = msgspec.json.encode(
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], **extra}
    )
    return ChatRequest(body, top_level(body), decode_chat_head(body))


def rules(*pairs: tuple[dict[str, object], str]) -> tuple[object, ...]:
    return tuple(
        compile_rule(RuleConfig(when=msgspec.convert(w, RuleMatch), use=u)) for w, u in pairs
    )


@pytest.mark.parametrize(
    ("when", "fields", "headers", "key", "matches"),
    [
        ({"model": "gpt-4*"}, {}, {}, "k", True),
        ({"model": "gpt-3*"}, {}, {}, "k", False),
        ({"header": {"X-Tier": "free"}}, {}, {"x-tier": "free"}, "k", True),
        ({"header": {"x-tier": "free"}}, {}, {"x-tier": "Free"}, "k", False),
        ({"key": "batch"}, {}, {}, "batch", True),
        ({"key": "batch"}, {}, {}, "other", False),
        ({"tools": True}, {"tools": [{"type": "function"}]}, {}, "k", True),
        ({"tools": True}, {}, {}, "k", False),
        ({"stream": False}, {}, {}, "k", True),
        ({"stream": True}, {"stream": True}, {}, "k", True),
        ({"model": "gpt-4*", "stream": True}, {}, {}, "k", False),
        ({"min_prompt_tokens": 4}, {}, {}, "k", True),
        ({"min_prompt_tokens": 5}, {}, {}, "k", False),
    ],
)
def test_conditions(
    when: dict[str, object],
    fields: dict[str, object],
    headers: dict[str, str],
    key: str,
    matches: bool,
) -> None:
    compiled = rules((when, "target"))
    result = apply_rules(compiled, head(**fields), headers, key)  # type: ignore[arg-type]
    assert result == ("target" if matches else "gpt-4o")


def test_first_matching_rule_wins_and_rewrites_once() -> None:
    compiled = rules(({"model": "gpt-4*"}, "first"), ({"model": "*"}, "second"))
    assert apply_rules(compiled, head(), {}, "k") == "first"  # type: ignore[arg-type]


def test_prompt_estimate_counts_utf8_bytes_and_parts() -> None:
    body = head(
        messages=[
            {"role": "system", "content": "é" * 10},
            {"role": "user", "content": [{"type": "text", "text": "abcdefgh"}, {"type": "x"}]},
        ]
    )
    assert estimate_prompt_tokens(body.head) == (20 + 8) // 4 + 2 * 4
    assert body.estimate == estimate_prompt_tokens(body.head)


def test_rule_headers_are_lower_case_bytes() -> None:
    compiled = rules(({"header": {"X-Tier": "a"}}, "t"))
    assert rule_headers(compiled) == frozenset({b"x-tier"})  # type: ignore[arg-type]
