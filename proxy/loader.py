"""proxy.yaml -> ProxyConfig, reporting every problem at once with its key path and line.

Steps: parse YAML keeping node positions; interpolate ${VAR} / ${VAR:-default}; apply the
environment overrides; validate the whole document against the JSON Schema generated from
the Structs (collecting every error); run the cross-field checks; only then decode with
msgspec into frozen Structs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import yaml

from proxy.checks import KeyPath, check_policy
from proxy.config import UPSTREAM_TYPES, ProxyConfig, json_schema
from proxy.overrides import apply_env_overrides

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class Problem:
    path: str
    line: int | None
    message: str

    def render(self, source: str) -> str:
        where = f"{source}:{self.line}" if self.line else source
        return f"{where}: {self.path or '(top level)'}: {self.message}"


class ConfigError(Exception):
    """The policy is invalid; `problems` lists every one of them."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(p.render(source) for p in problems))


@dataclass
class LoadedConfig:
    config: ProxyConfig
    source: str
    text: str
    unconfigured: dict[str, str] = field(default_factory=dict)  # upstream -> missing VAR
    overridden: list[str] = field(default_factory=list)  # key paths the environment set
    warnings: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)  # values to redact everywhere


def format_path(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_file(path: str | Path, env: Mapping[str, str] | None = None) -> LoadedConfig:
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        problem = Problem("", None, f"cannot read the file: {exc.strerror}")
        raise ConfigError(source, [problem]) from None
    return load_text(text, source=source, env=env)


def load_dict(data: Mapping[str, Any], env: Mapping[str, str] | None = None) -> LoadedConfig:
    return load_text(yaml.safe_dump(dict(data), sort_keys=False), source="<dict>", env=env)


def load_text(
    text: str, source: str = "proxy.yaml", env: Mapping[str, str] | None = None
) -> LoadedConfig:
    environ = os.environ if env is None else env
    data, lines = _parse_yaml(text, source)
    problems: list[Problem] = []
    unconfigured: dict[str, str] = {}
    secrets: list[str] = []
    interpolation = _Interpolation(environ, lines, problems, unconfigured, secrets)
    data = interpolation.walk(data, ())
    overridden = apply_env_overrides(data, environ)
    problems = _schema_problems(data, lines, problems)
    problems += _cross_field_problems(data, lines)
    if problems:
        problems.sort(key=lambda p: (p.line or 0, p.path))
        raise ConfigError(source, problems)
    config = msgspec.convert(data, ProxyConfig)
    secrets += config.admin.secrets()
    # an api_key written into the file is as secret as one read from the environment
    secrets += [upstream.api_key for upstream in config.upstreams.values() if upstream.api_key]
    loaded = LoadedConfig(config, source, text, unconfigured, overridden, secrets=secrets)
    loaded.warnings += [
        f"upstream '{name}' is not configured: environment variable {var} is not set"
        for name, var in unconfigured.items()
    ]
    loaded.warnings += interpolation.warnings
    return loaded


# -- YAML with positions ------------------------------------------------------------------


def _parse_yaml(text: str, source: str) -> tuple[dict[str, Any], dict[KeyPath, int]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(source, [Problem("", line, f"invalid YAML: {exc}")]) from None
    if node is None:
        return {}, {}
    lines: dict[KeyPath, int] = {}
    duplicates: list[Problem] = []
    _record_lines(node, (), lines, duplicates)
    if duplicates:
        raise ConfigError(source, duplicates)
    data = yaml.SafeLoader("").construct_document(node)
    if not isinstance(data, dict):
        raise ConfigError(source, [Problem("", 1, "the policy must be a mapping of sections")])
    return data, lines


def _record_lines(
    node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], problems: list[Problem]
) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):  # keys are names: `on:` is "on", not True
                key_node.tag = "tag:yaml.org,2002:str"
            key = str(key_node.value)
            if key in seen:
                line = key_node.start_mark.line + 1
                problems.append(Problem(format_path((*path, key)), line, "duplicate key"))
            seen.add(key)
            lines[(*path, key)] = key_node.start_mark.line + 1
            _record_lines(value_node, (*path, key), lines, problems)
            lines[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_lines(item, (*path, index), lines, problems)


def line_of(lines: Mapping[KeyPath, int], path: KeyPath) -> int | None:
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None


# -- ${VAR} interpolation -----------------------------------------------------------------


def _is_credential(path: KeyPath) -> bool:
    return len(path) >= 3 and path[0] == "upstreams" and path[2] in ("api_key", "headers")


ADMIN_KEY_PATH: KeyPath = ("admin", "key")  # unset: the admin API stays off (a warning)


@dataclass
class _Interpolation:
    env: Mapping[str, str]
    lines: Mapping[KeyPath, int]
    problems: list[Problem]
    unconfigured: dict[str, str]
    secrets: list[str]
    warnings: list[str] = field(default_factory=list)

    def walk(self, value: Any, path: KeyPath) -> Any:
        if isinstance(value, dict):
            return {k: self.walk(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.walk(v, (*path, i)) for i, v in enumerate(value)]
        if isinstance(value, str) and "${" in value:
            return self.expand(value, path)
        return value

    def expand(self, value: str, path: KeyPath) -> Any:
        missing: list[str] = []
        secret = _is_credential(path) or path[-1:] == ("key",)

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in self.env:
                if secret:
                    self.secrets.append(self.env[name])
                return self.env[name]
            if default is None:
                missing.append(name)
            return default or ""

        result = _VAR.sub(substitute, value)
        for name in missing:
            self.report_missing(name, path)
        return _retype(result) if _VAR.fullmatch(value) else result

    def report_missing(self, name: str, path: KeyPath) -> None:
        if _is_credential(path):
            self.unconfigured.setdefault(str(path[1]), name)
            return
        if path == ADMIN_KEY_PATH:
            self.warnings.append(f"admin is off: environment variable {name} is not set")
            return
        message = f"environment variable {name} is not set (and no default is given)"
        self.problems.append(Problem(format_path(path), line_of(self.lines, path), message))


def _retype(text: str) -> Any:
    """A whole-value ${VAR} takes the YAML type of what it expands to ("8080" -> 8080)."""
    try:
        typed = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return typed if isinstance(typed, (int, float, bool)) else text


# -- schema validation --------------------------------------------------------------------


@cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json_schema())


def _schema_problems(
    data: dict[str, Any], lines: Mapping[KeyPath, int], earlier: list[Problem]
) -> list[Problem]:
    """Schema errors, except under a path an earlier problem already explains."""
    problems = earlier + _upstream_type_problems(data, lines)
    known = {p.path for p in problems}
    for error in _validator().iter_errors(data):
        for path, message in _explain(error):
            rendered = format_path(path)
            if not any(rendered.startswith(k) for k in known):
                problems.append(Problem(rendered, line_of(lines, path), message))
    return problems


def _upstream_type_problems(data: dict[str, Any], lines: Mapping[KeyPath, int]) -> list[Problem]:
    upstreams = data.get("upstreams")
    if not isinstance(upstreams, dict):
        return []
    problems = []
    for name, upstream in upstreams.items():
        if not isinstance(upstream, dict):
            continue
        kind = upstream.get("type")
        if kind not in UPSTREAM_TYPES:
            path: KeyPath = ("upstreams", name, "type")
            got = "missing" if kind is None else repr(kind)
            known = ", ".join(UPSTREAM_TYPES)
            message = f"unknown upstream type {got} (known: {known})"
            problems.append(Problem(format_path(path), line_of(lines, path), message))
    return problems


def _explain(error: jsonschema.ValidationError) -> Iterator[tuple[KeyPath, str]]:
    path: KeyPath = tuple(error.absolute_path)
    schema: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = schema.get("properties", {})
        if isinstance(schema.get("additionalProperties"), dict):
            yield path, error.message
            return
        for key in error.instance:
            if key not in allowed:
                expected = ", ".join(allowed) or "none"
                yield (*path, key), f"unknown key '{key}' (expected one of: {expected})"
    elif error.validator == "required":
        yield path, error.message.replace("is a required property", "is required")
    elif error.validator in ("anyOf", "oneOf") and error.context:
        for inner in _union_errors(error):
            yield from _explain(inner)
    else:
        yield path, f"{error.message}"


def _union_errors(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    """The errors worth showing for a value that matched no branch of a union."""
    branch = _tagged_branch(error)
    if branch:
        return branch
    context = error.context or []
    not_null = [e for e in context if _schema_type(e) != "null"]
    if len({e.relative_schema_path[0] for e in not_null}) == 1:
        return not_null  # a nullable value: explain its one real branch fully
    best = jsonschema.exceptions.best_match(not_null or context)
    return [best] if best is not None else []


def _tagged_branch(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    """For a tagged union, the errors of the branch the instance's tag selects."""
    schema = error.schema if isinstance(error.schema, dict) else {}
    discriminator = schema.get("discriminator")
    if not discriminator or not isinstance(error.instance, dict):
        return []
    ref = discriminator.get("mapping", {}).get(error.instance.get(discriminator["propertyName"]))
    branches = [branch.get("$ref") for branch in schema.get(error.validator, [])]
    if ref not in branches:
        return []
    index = branches.index(ref)
    return [e for e in error.context or [] if e.relative_schema_path[0] == index]


def _schema_type(error: jsonschema.ValidationError) -> Any:
    return error.schema.get("type") if isinstance(error.schema, dict) else None


# -- cross-field checks (proxy/checks.py), each problem with its line ---------------------


def _cross_field_problems(data: dict[str, Any], lines: Mapping[KeyPath, int]) -> list[Problem]:
    problems: list[Problem] = []

    def add(path: KeyPath, message: str) -> None:
        problems.append(Problem(format_path(path), line_of(lines, path), message))

    check_policy(data, add)
    return problems
