"""The table of benchmark targets: what wrk hits, how it is started, what it is compared to.

To add a scenario (cache hits, rate limits, many models, ...), write a function that
returns a ``Target`` and add it to ``registry()``. A proxy scenario usually only needs
its own policy text: see ``proxy_target``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.upstream import HEALTH_PATH, JSON_PATH, STREAM_PATH

CLIENT_KEY = "sk-bench-client"
UPSTREAM_KEY = "sk-bench-upstream"
CHAT_PATH = "/v1/chat/completions"
ASGI_SERVERS = ("uvicorn", "granian")


@dataclass(frozen=True)
class Context:
    """What a target needs to know to start: where to write files, where the upstream is."""

    repo: Path
    tmp: Path
    upstream_port: int

    @property
    def upstream_url(self) -> str:
        return f"http://127.0.0.1:{self.upstream_port}"

    def env(self, **extra: str) -> dict[str, str]:
        pythonpath = os.pathsep.join(filter(None, [str(self.repo), os.environ.get("PYTHONPATH")]))
        return {**os.environ, "PYTHONPATH": pythonpath, **extra}


@dataclass(frozen=True)
class Command:
    argv: list[str]
    env: dict[str, str]


@dataclass(frozen=True)
class Call:
    """The request wrk sends: path, model and body format (``stream`` comes from the mode)."""

    path: str
    model: str
    api: str = "chat"  # or "messages": an Anthropic Messages body (bench/messages.py)


@dataclass(frozen=True)
class Target:
    name: str
    about: str
    calls: dict[bool, Call]  # keyed by "stream?"
    baseline: str | None = None  # throughput, start-up and RSS are shown as a ratio to it
    launch: Callable[[Context, int], Command] | None = None  # None: wrk hits the upstream
    ready_path: str = HEALTH_PATH
    ready_timeout: float = 10.0
    key: str = CLIENT_KEY
    tags: frozenset[str] = field(default_factory=frozenset)


def direct() -> Target:
    return Target(
        name="direct",
        about="wrk -> nginx: the fake upstream alone, the floor of every latency",
        calls={False: Call(JSON_PATH, "gpt-4o-mini"), True: Call(STREAM_PATH, "gpt-4o-mini")},
    )


def passthrough_command(server: str, ctx: Context, port: int) -> Command:
    """bench.passthrough under uvicorn (uvloop, httptools) or granian; 1 worker, no access log."""
    app, host = "bench.passthrough:app", "127.0.0.1"
    if server == "uvicorn":
        argv = [
            sys.executable, "-m", "uvicorn", app, "--host", host, "--port", str(port),
            "--loop", "uvloop", "--http", "httptools", "--workers", "1",
            "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
    elif server == "granian":
        argv = [
            sys.executable, "-m", "granian", "--interface", "asgi", "--loop", "uvloop",
            "--http", "1", "--workers", "1", "--no-ws", "--host", host, "--port", str(port),
            "--log-level", "warning", app,
        ]  # fmt: skip
    else:
        raise ValueError(f"unknown ASGI server {server!r}; expected one of {ASGI_SERVERS}")
    env = ctx.env(BENCH_UPSTREAM=ctx.upstream_url, BENCH_UPSTREAM_KEY=UPSTREAM_KEY)
    return Command(argv, env)


def bare(server: str, name: str = "bare", baseline: str = "direct") -> Target:
    return Target(
        name=name,
        about=f"wrk -> bench/passthrough.py ({server}) -> nginx: framework + client, no work",
        calls={False: Call(JSON_PATH, "gpt-4o-mini"), True: Call(STREAM_PATH, "gpt-4o-mini")},
        baseline=baseline,
        launch=lambda ctx, port: passthrough_command(server, ctx, port),
    )


def default_policy(ctx: Context, port: int) -> str:
    up = ctx.upstream_url
    return f"""\
server: {{host: 127.0.0.1, port: {port}}}
upstreams:
  fake: {{type: openai, base_url: "{up}/json/v1", api_key: {UPSTREAM_KEY}}}
  fakestream: {{type: openai, base_url: "{up}/stream/v1", api_key: {UPSTREAM_KEY}}}
models:
  gpt-4o-mini: {{routes: [{{upstream: fake, model: gpt-4o-mini}}]}}
  gpt-4o-mini-stream: {{routes: [{{upstream: fakestream, model: gpt-4o-mini}}]}}
keys:
  - {{name: bench, key: {CLIENT_KEY}}}
logging: {{level: INFO}}
"""


def proxy_target(
    name: str,
    about: str,
    policy: Callable[[Context, int], str],
    calls: dict[bool, Call],
    baseline: str = "bare",
) -> Target:
    """llm-proxy started on a generated policy file (``python -m proxy serve``)."""

    def launch(ctx: Context, port: int) -> Command:
        config = ctx.tmp / f"{name}.policy.yaml"
        config.write_text(policy(ctx, port))
        argv = [
            sys.executable, "-m", "proxy", "serve", "--config", str(config),
            "--host", "127.0.0.1", "--port", str(port),
        ]  # fmt: skip
        return Command(argv, ctx.env())

    return Target(
        name=name,
        about=about,
        calls=calls,
        baseline=baseline,
        launch=launch,
        ready_path="/health/readiness",
        tags=frozenset({"proxy"}),
    )


def proxy() -> Target:
    return proxy_target(
        "proxy",
        "wrk -> llm-proxy -> nginx: auth, routing, logging, one upstream per model",
        default_policy,
        calls={False: Call(CHAT_PATH, "gpt-4o-mini"), True: Call(CHAT_PATH, "gpt-4o-mini-stream")},
    )


def registry(asgi: list[str]) -> dict[str, Target]:
    """Every known target, by name. ``asgi[0]`` serves ``bare``; the rest get ``bare:<server>``."""
    targets = [direct(), bare(asgi[0])]
    targets += [bare(server, f"bare:{server}", baseline="bare") for server in asgi[1:]]
    targets.append(proxy())
    from bench.routing import reload_target, routing_target

    targets += [routing_target(), reload_target()]
    from bench.limits import limits_targets

    targets += limits_targets()
    from bench.cache import cache_targets

    targets += cache_targets()
    from bench.observability import no_metrics_target, tracing_target

    targets += [no_metrics_target(), tracing_target()]
    from bench.tgi_upstream import hf_textgen_target

    targets.append(hf_textgen_target())
    from bench.messages import messages_target

    targets.append(messages_target())
    from bench.responses import responses_targets

    targets += responses_targets()
    return {t.name: t for t in targets}
