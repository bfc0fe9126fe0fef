"""Request rules: the first rule whose conditions all hold rewrites the target model, once."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fnmatch import translate

from proxy.config import RuleConfig
from proxy.wire import ChatRequestHead

PER_MESSAGE_TOKENS = 4
BYTES_PER_TOKEN = 4


def estimate_prompt_tokens(head: ChatRequestHead) -> int:
    """DESIGN's cheap estimate: UTF-8 bytes of message text / 4, + 4 per message."""
    size = 0
    for message in head.messages:
        content = message.content
        if isinstance(content, str):
            size += len(content.encode())
        elif content:
            for part in content:
                text = part.get("text")
                if isinstance(text, str):
                    size += len(text.encode())
    return size // BYTES_PER_TOKEN + PER_MESSAGE_TOKENS * len(head.messages)


Check = Callable[[ChatRequestHead, Mapping[str, str], str, "_Tokens"], bool]


@dataclass(frozen=True, slots=True)
class Rule:
    use: str
    matches: Check  # only the conditions the rule sets, cheapest first
    headers: tuple[tuple[str, str], ...] = ()


class _Tokens:
    """The prompt estimate, computed at most once per request and only if a rule asks."""

    __slots__ = ("_count",)

    def __init__(self) -> None:
        self._count: int | None = None

    def count(self, head: ChatRequestHead) -> int:
        if self._count is None:
            self._count = estimate_prompt_tokens(head)
        return self._count


def compile_rule(rule: RuleConfig) -> Rule:
    when = rule.when
    headers = tuple((name.lower(), value) for name, value in (when.header or {}).items())
    checks: list[Check] = []
    if when.key is not None:
        checks.append(_key_is(when.key))
    if when.stream is not None:
        checks.append(_stream_is(when.stream))
    if when.tools is not None:
        checks.append(_tools_is(when.tools))
    checks += [_header_is(name, value) for name, value in headers]
    if when.model is not None:
        model = re.compile(translate(when.model)).fullmatch
        checks.append(lambda head, hdrs, key, tokens: model(head.model) is not None)
    if when.min_prompt_tokens is not None:
        least = when.min_prompt_tokens
        checks.append(lambda head, hdrs, key, tokens: tokens.count(head) >= least)
    return Rule(rule.use, _all_of(checks), headers)


def _key_is(want: str) -> Check:
    return lambda head, hdrs, key, tokens: key == want


def _stream_is(want: bool) -> Check:
    return lambda head, hdrs, key, tokens: bool(head.stream) == want


def _tools_is(want: bool) -> Check:
    return lambda head, hdrs, key, tokens: bool(head.tools) == want


def _header_is(name: str, value: str) -> Check:
    return lambda head, hdrs, key, tokens: hdrs.get(name) == value


def _all_of(checks: list[Check]) -> Check:
    if not checks:
        return lambda head, hdrs, key, tokens: True
    if len(checks) == 1:
        return checks[0]
    first, rest = checks[0], _all_of(checks[1:])
    return lambda head, hdrs, key, tokens: (
        first(head, hdrs, key, tokens) and rest(head, hdrs, key, tokens)
    )


def apply_rules(
    rules: tuple[Rule, ...], head: ChatRequestHead, headers: Mapping[str, str], key: str
) -> str:
    """The public model the request goes to: the first matching rule's, else the client's."""
    tokens = _Tokens()
    for rule in rules:
        if rule.matches(head, headers, key, tokens):
            return rule.use
    return head.model


def rule_headers(rules: tuple[Rule, ...]) -> frozenset[bytes]:
    """Header names the rules read (lower case, as ASGI gives them)."""
    return frozenset(name.encode("latin-1") for rule in rules for name, _ in rule.headers)
