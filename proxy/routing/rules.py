"""Request rules: the first rule whose conditions all hold rewrites the target model, once."""

from __future__ import annotations

import re
from collections.abc import Mapping
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


@dataclass(frozen=True, slots=True)
class Rule:
    use: str
    model: re.Pattern[str] | None
    headers: tuple[tuple[str, str], ...]
    key: str | None
    min_prompt_tokens: int | None
    tools: bool | None
    stream: bool | None

    def matches(
        self, head: ChatRequestHead, headers: Mapping[str, str], key: str, tokens: _Tokens
    ) -> bool:
        return (
            (self.model is None or self.model.fullmatch(head.model) is not None)
            and all(headers.get(name) == value for name, value in self.headers)
            and (self.key is None or self.key == key)
            and (self.tools is None or bool(head.tools) == self.tools)
            and (self.stream is None or bool(head.stream) == self.stream)
            and (self.min_prompt_tokens is None or tokens.count(head) >= self.min_prompt_tokens)
        )


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
    return Rule(
        use=rule.use,
        model=re.compile(translate(when.model)) if when.model else None,
        headers=tuple((name.lower(), value) for name, value in (when.header or {}).items()),
        key=when.key,
        min_prompt_tokens=when.min_prompt_tokens,
        tools=when.tools,
        stream=when.stream,
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
