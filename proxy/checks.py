"""Cross-field checks on the policy: what the JSON Schema cannot say (an unknown upstream or
model, a fallback cycle, a limit string that does not parse, a bad chat template).

They run on the raw mapping next to schema validation, not after it, so that every problem
is reported at once: each value is looked at defensively (`_mapping`, `_sequence`) and a part
the schema already rejects is skipped, not crashed on. Each problem goes to `add` with its
key path; the loader adds the line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from proxy.config import resolve_name

KeyPath = tuple[str | int, ...]
Report = Callable[[KeyPath, str], None]


def check_policy(data: dict[str, Any], add: Report) -> None:
    _check_models(data, add)
    _check_routing(data, add)
    _check_limits(data, add)
    _check_upstreams(data, add)
    _check_keys(data, add)


def _check_models(data: dict[str, Any], add: Report) -> None:
    upstreams = list(_mapping(data.get("upstreams")))
    for name, model in _mapping(data.get("models")).items():
        if name.count("*") > 1:
            add(("models", name), "a model pattern may contain one '*' only")
        _check_params(("models", name, "params"), _mapping(_mapping(model).get("params")), add)
        for index, route in enumerate(_sequence(_mapping(model).get("routes"))):
            upstream = _mapping(route).get("upstream")
            if isinstance(upstream, str) and upstream not in upstreams:
                known = ", ".join(upstreams) or "none defined"
                message = f"unknown upstream '{upstream}' (known: {known})"
                add(("models", name, "routes", index, "upstream"), message)


_NOT_PARAMS = frozenset({"model", "messages", "input", "stream", "stream_options", "tools"})


def _check_params(path: KeyPath, params: dict[str, Any], add: Report) -> None:
    """Each bound names a numeric request field: min <= default <= max where given."""
    for field, bounds in params.items():
        if field in _NOT_PARAMS:
            add((*path, field), f"'{field}' is not a numeric request field")
        values = {k: v for k, v in _mapping(bounds).items() if _is_number(v)}
        low, high, default = values.get("min"), values.get("max"), values.get("default")
        if low is not None and high is not None and low > high:
            add((*path, field), f"min ({low}) is larger than max ({high})")
        if default is not None and (
            (low is not None and default < low) or (high is not None and default > high)
        ):
            add((*path, field, "default"), f"default ({default}) lies outside [min, max]")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_routing(data: dict[str, Any], add: Report) -> None:
    """Rule targets and fallbacks name models that exist; fallbacks never loop."""
    models = _mapping(data.get("models"))
    for index, rule in enumerate(map(_mapping, _sequence(data.get("rules")))):
        use = rule.get("use")
        if isinstance(use, str) and resolve_name(models, use) is None:
            add(("rules", index, "use"), f"unknown model '{use}'")
    graph: dict[str, list[str]] = {}
    for name, model in models.items():
        targets = graph.setdefault(name, [])
        for index, fallback in enumerate(_sequence(_mapping(model).get("fallbacks"))):
            target = resolve_name(models, fallback) if isinstance(fallback, str) else None
            if target is None:
                add(("models", name, "fallbacks", index), f"unknown model '{fallback}'")
            else:
                targets.append(target)
    for cycle in _cycles(graph):
        add(("models", cycle[0], "fallbacks"), "fallback cycle: " + " -> ".join(cycle))


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Each fallback cycle once, starting from its first model in file order."""
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()
    for start in graph:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for target in graph.get(node, []):
                if target == start and frozenset(path) not in seen:
                    seen.add(frozenset(path))
                    found.append([*path, start])
                elif target not in path:
                    stack.append((target, [*path, target]))
    return found


def _check_limits(data: dict[str, Any], add: Report) -> None:
    """Limit strings parse, and a burst has a request rate to refill at."""
    for path, spec in _limit_specs(data):
        for kind in ("requests", "tokens"):
            text = spec.get(kind)
            if isinstance(text, str) and not _parses_as_limits(text):
                add((*path, kind), f"not a limit: {text!r} (e.g. '10/second; 600/minute')")
        if spec.get("burst") is not None and not spec.get("requests"):
            add((*path, "burst"), "a burst needs 'requests' (the rate it refills at)")
    storage = _mapping(data.get("limits")).get("storage", "memory://")
    if isinstance(storage, str) and not storage.startswith(("memory://", "redis://", "rediss://")):
        add(("limits", "storage"), f"unsupported storage {storage!r} (memory:// or redis://)")


def _limit_specs(data: dict[str, Any]) -> Iterator[tuple[KeyPath, dict[str, Any]]]:
    yield ("limits", "default"), _mapping(_mapping(data.get("limits")).get("default"))
    for name, upstream in _mapping(data.get("upstreams")).items():
        yield ("upstreams", name, "limits"), _mapping(_mapping(upstream).get("limits"))
    for name, model in _mapping(data.get("models")).items():
        yield ("models", name, "limits"), _mapping(_mapping(model).get("limits"))
        for index, route in enumerate(_sequence(_mapping(model).get("routes"))):
            path: KeyPath = ("models", name, "routes", index, "limits")
            yield path, _mapping(_mapping(route).get("limits"))
    for index, key in enumerate(_sequence(data.get("keys"))):
        yield ("keys", index, "limits"), _mapping(_mapping(key).get("limits"))


def _parses_as_limits(text: str) -> bool:
    import limits

    try:
        return bool(limits.parse_many(text))
    except ValueError:
        return False


def _check_upstreams(data: dict[str, Any], add: Report) -> None:
    for name, upstream in _mapping(data.get("upstreams")).items():
        upstream = _mapping(upstream)
        if upstream.get("type") == "local" and ("url" in upstream) == ("spawn" in upstream):
            add(("upstreams", name), "a local upstream takes exactly one of 'url' or 'spawn'")
        api = upstream.get("api", "text-generation")
        if upstream.get("type") == "huggingface" and api == "tgi" and "base_url" not in upstream:
            add(("upstreams", name, "base_url"), "api 'tgi' needs the TGI server's base_url")
        if upstream.get("type") == "huggingface" and api == "tei" and "base_url" not in upstream:
            add(("upstreams", name, "base_url"), "api 'tei' needs the TEI server's base_url")
        template = upstream.get("chat_template", "chatml")
        if upstream.get("type") == "huggingface" and api != "chat" and isinstance(template, str):
            problem = _template_problem(template)
            if problem:
                add(("upstreams", name, "chat_template"), problem)


def _template_problem(template: str) -> str | None:
    from proxy.upstreams.chat_templates import ChatTemplate

    try:
        ChatTemplate.from_config(template)
    except ValueError as exc:
        return f"not a valid chat template: {exc}"
    return None


def _check_keys(data: dict[str, Any], add: Report) -> None:
    keys = _sequence(data.get("keys"))
    seen: set[str] = set()
    for index, key in enumerate(map(_mapping, keys)):
        if ("key" in key) == ("sha256" in key):
            add(("keys", index), "give exactly one of 'key' or 'sha256'")
        key_name = key.get("name")
        if isinstance(key_name, str) and key_name in seen:
            add(("keys", index, "name"), f"duplicate key name '{key_name}'")
        seen.add(str(key_name))
    if data.get("auth") == "required" and not keys:
        add(("auth",), "auth is 'required' but no keys are configured")


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _sequence(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
