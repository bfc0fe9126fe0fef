"""Request rules: the first rule whose conditions all hold rewrites the target model, once."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fnmatch import translate
from typing import TYPE_CHECKING

from proxy.config import RuleConfig

if TYPE_CHECKING:
    from proxy.formats.base import FrontRequest


Check = Callable[["FrontRequest", Mapping[str, str], str], bool]


@dataclass(frozen=True, slots=True)
class Rule:
    use: str
    matches: Check  # only the conditions the rule sets, cheapest first
    headers: tuple[tuple[str, str], ...] = ()


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
        checks.append(lambda request, hdrs, key: model(request.model) is not None)
    if when.min_prompt_tokens is not None:
        least = when.min_prompt_tokens
        checks.append(lambda request, hdrs, key: request.estimate >= least)
    return Rule(rule.use, _all_of(checks), headers)


def _key_is(want: str) -> Check:
    return lambda request, hdrs, key: key == want


def _stream_is(want: bool) -> Check:
    return lambda request, hdrs, key: request.stream == want


def _tools_is(want: bool) -> Check:
    return lambda request, hdrs, key: request.tools == want


def _header_is(name: str, value: str) -> Check:
    return lambda request, hdrs, key: hdrs.get(name) == value


def _all_of(checks: list[Check]) -> Check:
    if not checks:
        return lambda request, hdrs, key: True
    if len(checks) == 1:
        return checks[0]
    first, rest = checks[0], _all_of(checks[1:])
    return lambda request, hdrs, key: first(request, hdrs, key) and rest(request, hdrs, key)


def apply_rules(
    rules: tuple[Rule, ...], request: FrontRequest, headers: Mapping[str, str], key: str
) -> str:
    """The public model the request goes to: the first matching rule's, else the client's.
    The prompt estimate is computed only if a rule asks for it."""
    for rule in rules:
        if rule.matches(request, headers, key):
            return rule.use
    return request.model


def rule_headers(rules: tuple[Rule, ...]) -> frozenset[bytes]:
    """Header names the rules read (lower case, as ASGI gives them)."""
    return frozenset(name.encode("latin-1") for rule in rules for name, _ in rule.headers)
