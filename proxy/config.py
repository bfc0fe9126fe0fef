"""The policy file's shape: frozen msgspec Structs that forbid unknown keys.

Only keys the proxy implements live here: a key that parses but does nothing would lie
to operators. `loader.py` turns a YAML file into these Structs with every problem reported
at once; `policy.py` compiles them into the runtime policy.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import unquote

import msgspec
from msgspec import Meta

SizeText = Annotated[str, Meta(pattern=r"^\s*\d+(\.\d+)?\s*([KMGT]i?B|B)?\s*$")]
Size = Annotated[int, Meta(ge=0)] | SizeText
Seconds = Annotated[float, Meta(gt=0)]
DurationText = Annotated[str, Meta(pattern=r"^\s*\d+(\.\d+)?\s*[smhdw]?\s*$")]
Duration = Seconds | DurationText  # seconds, or "90s", "15m", "12h", "30d", "2w"
Port = Annotated[int, Meta(ge=0, le=65535)]
Sha256Hex = Annotated[str, Meta(pattern=r"^[0-9a-fA-F]{64}$")]
NonEmpty = Annotated[str, Meta(min_length=1)]
IsoTime = Annotated[
    str,
    Meta(pattern=r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$"),
]


class Section(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Base of every policy section."""


class ServerConfig(Section, frozen=True):
    host: str = "0.0.0.0"
    port: Port = 8080
    workers: Annotated[int, Meta(ge=1, le=64)] = 1
    reload: bool = True  # watch the policy file (its directory) and apply changes live
    drain_timeout: Annotated[float, Meta(ge=0)] = 30
    max_body_bytes: Size = "10MiB"
    max_header_bytes: Size = "64KiB"
    header_timeout: Seconds = (
        10  # a connection that has not sent its whole headers by then is closed
    )
    max_messages: Annotated[int, Meta(ge=1)] = 2048
    max_stream_seconds: Seconds = 1800
    cors_origins: list[str] = []


class Timeouts(Section, frozen=True):
    connect: Seconds = 5
    first_token: Seconds = 60
    idle: Seconds = 30
    total: Seconds = 600


class TimeoutOverride(Section, frozen=True):
    connect: Seconds | None = None
    first_token: Seconds | None = None
    idle: Seconds | None = None
    total: Seconds | None = None


class LimitSpec(Section, frozen=True):
    """Limits in the `limits` library's notation ("10/second", "5/second; 100/minute")."""

    requests: NonEmpty | None = None
    burst: Annotated[int, Meta(ge=1)] | None = None  # token-bucket capacity for `requests`
    tokens: NonEmpty | None = None
    concurrency: Annotated[int, Meta(ge=1)] | None = None  # requests in flight at once


class PriceConfig(Section, frozen=True):
    input: Annotated[float, Meta(ge=0)]  # USD per million prompt tokens
    output: Annotated[float, Meta(ge=0)]  # USD per million completion tokens


class BudgetConfig(Section, frozen=True):
    usd: Annotated[float, Meta(gt=0)]
    period: Literal["day", "week", "month"] = "month"  # calendar periods in UTC


class OpenAIUpstreamConfig(Section, frozen=True, tag_field="type", tag="openai"):
    base_url: NonEmpty = "https://api.openai.com/v1"
    api_key: str | None = None
    headers: dict[str, str] = {}
    timeout: Timeouts = Timeouts()
    max_connections: Annotated[int, Meta(ge=1)] = 200
    limits: LimitSpec | None = None  # the provider's quota: a full upstream is skipped
    # native: /v1/responses is passed through to {base_url}/responses (OpenAI speaks it);
    # translate: it becomes a chat-completions request for this upstream
    responses: Literal["translate", "native"] = "translate"


class AnthropicUpstreamConfig(Section, frozen=True, tag_field="type", tag="anthropic"):
    """The Anthropic Messages API: chat and responses requests are translated to it;
    /v1/messages passes through as sent (only `model` rewritten)."""

    base_url: NonEmpty = "https://api.anthropic.com"
    api_key: str | None = None  # sent as x-api-key
    headers: dict[str, str] = {}
    timeout: Timeouts = Timeouts()
    max_connections: Annotated[int, Meta(ge=1)] = 200
    limits: LimitSpec | None = None  # the provider's quota: a full upstream is skipped
    version: NonEmpty = (
        "2023-06-01"  # anthropic-version (a client's own header wins on pass-through)
    )


class HuggingFaceUpstreamConfig(Section, frozen=True, tag_field="type", tag="huggingface"):
    """HF endpoints. `api: chat` is OpenAI-compatible (the router, TGI's /v1); `text-generation`
    is the classic task API (POST {base_url}/models/{model}); `tgi` is a TGI server's
    /generate and /generate_stream. The last two apply `chat_template` to the messages."""

    api: Literal["chat", "text-generation", "tgi", "tei"] = "text-generation"
    base_url: NonEmpty | None = None  # default per api: see HF_DEFAULT_BASE_URLS
    api_key: str | None = None
    headers: dict[str, str] = {}
    timeout: Timeouts = Timeouts()
    max_connections: Annotated[int, Meta(ge=1)] = 200
    limits: LimitSpec | None = None  # the provider's quota: a full upstream is skipped
    chat_template: NonEmpty = "chatml"  # a preset name or a Jinja template string
    wait_for_model: bool = True


HF_DEFAULT_BASE_URLS = {
    "chat": "https://router.huggingface.co/v1",
    "text-generation": "https://router.huggingface.co/hf-inference",
}


class SpawnConfig(Section, frozen=True):
    model: NonEmpty  # a local folder or a hub id
    device: Literal["auto", "cpu", "cuda"] = "auto"
    port: Port = 9000
    max_batch_size: Annotated[int, Meta(ge=1)] = 8
    max_queue: Annotated[int, Meta(ge=1)] = 64
    task: Literal["generate", "embed"] = "generate"  # embed: /v1/embeddings from an encoder model


class LocalUpstreamConfig(Section, frozen=True, tag_field="type", tag="local"):
    """A local transformers worker: one already running at `url`, or one the proxy starts
    and supervises (`spawn`). Exactly one of the two."""

    url: NonEmpty | None = None
    spawn: SpawnConfig | None = None
    task: Literal["generate", "embed"] = "generate"  # what a worker at `url` runs (--task)
    api_key: str | None = None
    headers: dict[str, str] = {}
    timeout: Timeouts = Timeouts()
    max_connections: Annotated[int, Meta(ge=1)] = 200
    limits: LimitSpec | None = None  # the provider's quota: a full upstream is skipped


UpstreamConfig = (
    OpenAIUpstreamConfig | AnthropicUpstreamConfig | HuggingFaceUpstreamConfig | LocalUpstreamConfig
)


class RouteConfig(Section, frozen=True):
    upstream: NonEmpty
    model: NonEmpty | None = None
    weight: Annotated[float, Meta(gt=0)] = 1
    limits: LimitSpec | None = None  # a full route is skipped, not a 429
    price: PriceConfig | None = None  # overrides `prices` for this route
    drop_params: list[str] = []  # fields this route cannot honour: dropped instead of a 400


class ParamBounds(Section, frozen=True):
    """A numeric request field: set when the client sent none, clamped into [min, max]."""

    default: int | float | None = None
    min: int | float | None = None
    max: int | float | None = None


ParamName = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_]*$")]


class ModelCacheConfig(Section, frozen=True):
    ttl: Seconds | None = None  # else cache.ttl
    deterministic_only: bool | None = None  # else cache.deterministic_only


class ModelConfig(Section, frozen=True):
    routes: Annotated[list[RouteConfig], Meta(min_length=1)]
    strategy: Literal["weighted", "priority", "least-busy", "latency"] = "weighted"
    fallbacks: list[NonEmpty] = []  # other public models, tried in order when every route failed
    limits: LimitSpec | None = None  # all callers of this model together
    cache: ModelCacheConfig | bool | None = None  # overrides the global policy; false disables
    params: dict[ParamName, ParamBounds] = {}  # e.g. {max_tokens: {default: 1024, max: 4096}}
    timeout: TimeoutOverride | None = None


class RuleMatch(Section, frozen=True):
    model: NonEmpty | None = None  # a glob over the model the client sent
    header: dict[str, str] | None = None  # request headers, values compared exactly
    key: NonEmpty | None = None  # the client key's name
    min_prompt_tokens: Annotated[int, Meta(ge=0)] | None = None  # estimated prompt size
    tools: bool | None = None
    stream: bool | None = None


class RuleConfig(Section, frozen=True):
    when: RuleMatch
    use: NonEmpty  # the public model the request goes to instead


RetryOn = Annotated[int, Meta(ge=400, le=599)] | Literal["timeout", "connect"]


class RetryConfig(Section, frozen=True):
    attempts: Annotated[int, Meta(ge=1, le=20)] = 3  # calls per route, the first included
    initial_delay: Annotated[float, Meta(ge=0)] = 1.0
    max_delay: Annotated[float, Meta(ge=0)] = 60.0
    on: list[RetryOn] = msgspec.field(
        default_factory=lambda: [429, 500, 502, 503, 504, "timeout", "connect"]
    )
    deadline: Seconds = 300  # the whole chain, until the first byte reaches the client


class BreakerConfig(Section, frozen=True):
    failures: Annotated[int, Meta(ge=1)] = 5
    window: Seconds = 30
    cooldown: Seconds = 30
    max_cooldown: Seconds = 300
    auth_cooldown: Seconds = 300


class KeyConfig(Section, frozen=True):
    name: NonEmpty
    key: NonEmpty | None = None
    sha256: Sha256Hex | None = None
    models: list[str] = msgspec.field(default_factory=lambda: ["*"])
    limits: LimitSpec | None = None  # else limits.default
    budget: BudgetConfig | None = None
    expires_at: IsoTime | None = None  # refused from then on (UTC unless the time says)
    metadata: dict[str, str] = {}  # free-form labels (team, owner...), shown to operators


class LoggingConfig(Section, frozen=True):
    level: Literal["TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    json: bool = False
    file: str | None = None
    redact: bool = True
    log_bodies: bool = False


class LimitsConfig(Section, frozen=True):
    storage: NonEmpty = "memory://"  # memory:// (one process) | redis://host:6379/0 (replicas)
    # moving-window applies to request limits only (it stores one entry per unit)
    strategy: Literal["sliding-window-counter", "fixed-window", "moving-window"] = (
        "sliding-window-counter"
    )
    default: LimitSpec = LimitSpec()  # each key without limits of its own, and anonymous
    on_storage_error: Literal["allow", "deny"] = "allow"


class CacheConfig(Section, frozen=True):
    backend: Literal["disk", "redis", "memory", "none"] = "disk"
    path: NonEmpty = ".cache/llm-proxy"  # disk only; a writable volume in containers
    url: NonEmpty = "redis://localhost:6379/1"  # redis only
    ttl: Seconds = 3600
    max_size: Size = "1GiB"
    deterministic_only: bool = True  # temperature 0 or a seed, unless a model says otherwise
    shared_across_keys: bool = False  # false: one key never sees another key's answers
    count_hits_in_request_limits: bool = True


class MetricsConfig(Section, frozen=True):
    enabled: bool = True
    path: Annotated[str, Meta(pattern=r"^/")] = "/metrics"


class TracingConfig(Section, frozen=True):
    enabled: bool = False  # OTLP export, set by the standard OTEL_* variables


class ResponsesConfig(Section, frozen=True):
    """Stored responses of the Responses API (previous_response_id, GET /v1/responses/{id})."""

    storage: Literal["disk", "memory", "redis"] | None = None  # None: redis when limits use it
    ttl: Duration = "30d"
    path: NonEmpty | None = None  # disk only; default: <cache.path>/responses
    url: NonEmpty | None = None  # redis only; default: limits.storage


StoreUrl = Annotated[str, Meta(pattern=r"^(sqlite:///.+|postgres(ql)?://.+)$")]


class AdminConfig(Section, frozen=True):
    """Operators: runtime keys, the usage ledger and the admin API. Off unless `key` is set."""

    key: str | None = None  # admin calls carry Authorization: Bearer <key>; empty: admin off
    # sqlite:///relative/path, sqlite:////absolute/path or postgresql://...;
    # None: sqlite:///<cache.path>/admin.db
    store: StoreUrl | None = None
    ui: bool = True  # serve the console at /ui

    @property
    def enabled(self) -> bool:
        return bool(self.key)

    def secrets(self) -> list[str]:
        """What must never be shown: the admin key and a password in the store's URL."""
        found = [self.key] if self.key else []
        if self.store and "@" in self.store:
            credentials = self.store.split("://", 1)[-1].rsplit("@", 1)[0]
            _, _, password = credentials.partition(":")
            found += [password, unquote(password)] if password else []
        return found


class ProxyConfig(Section, frozen=True):
    server: ServerConfig = ServerConfig()
    upstreams: dict[str, UpstreamConfig] = {}
    models: dict[str, ModelConfig] = {}
    rules: list[RuleConfig] = []
    keys: list[KeyConfig] = []
    auth: Literal["optional", "required"] = "optional"
    retry: RetryConfig = RetryConfig()
    circuit_breaker: BreakerConfig = BreakerConfig()
    prices: dict[str, PriceConfig] = {}  # keyed by the model name sent upstream
    limits: LimitsConfig = LimitsConfig()
    cache: CacheConfig = CacheConfig()
    logging: LoggingConfig = LoggingConfig()
    metrics: MetricsConfig = MetricsConfig()
    tracing: TracingConfig = TracingConfig()
    responses: ResponsesConfig = ResponsesConfig()
    admin: AdminConfig = AdminConfig()


UPSTREAM_TYPES: tuple[str, ...] = tuple(
    str(kind.__struct_config__.tag)
    for kind in (
        OpenAIUpstreamConfig,
        AnthropicUpstreamConfig,
        HuggingFaceUpstreamConfig,
        LocalUpstreamConfig,
    )
)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of proxy.yaml (editors use it; the loader validates with it)."""
    schema = msgspec.json.schema(ProxyConfig)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "llm-proxy policy (proxy.yaml)"
    return schema


def match_pattern(pattern: str, name: str) -> str | None:
    """What the one `*` of a model pattern matched in `name` (non-empty), else None."""
    prefix, _, suffix = pattern.partition("*")
    inner = len(name) - len(prefix) - len(suffix)
    if inner > 0 and name.startswith(prefix) and name.endswith(suffix):
        return name[len(prefix) : len(name) - len(suffix)]
    return None


def resolve_name(models: dict[str, Any], name: str) -> str | None:
    """The configured model (exact name, else the pattern with the longest literal prefix)
    that serves `name`."""
    if name in models:
        return name
    patterns = sorted((p for p in models if "*" in p), key=_pattern_rank, reverse=True)
    return next((p for p in patterns if match_pattern(p, name) is not None), None)


def _pattern_rank(pattern: str) -> tuple[int, int]:
    prefix, _, suffix = pattern.partition("*")
    return len(prefix), len(suffix)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: float | str) -> float:
    """Seconds from a number or a string such as "30d" (already validated by the schema)."""
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(value)
    if match is None:
        raise ValueError(f"not a duration: {value!r}")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$")
_UNITS = {
    None: 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
}


def parse_size(value: int | str) -> int:
    """Bytes from an int or a string such as "10MiB" (already validated by the schema)."""
    if isinstance(value, int):
        return value
    match = _SIZE.match(value)
    if match is None:
        raise ValueError(f"not a size: {value!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2)])
