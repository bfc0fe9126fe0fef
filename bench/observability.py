"""Observability cost: the proxy with metrics off, and with tracing on (spans made, a no-op
exporter: OTEL_TRACES_EXPORTER=none), each against the default `proxy` (metrics on,
tracing off). Issue bars: metrics on within 10% of off; tracing on within 25%.

    python bench/run.py --targets proxy,proxy-nometrics,proxy-tracing --concurrency 16
"""

from __future__ import annotations

import dataclasses

from bench.targets import CHAT_PATH, Call, Command, Context, Target, default_policy, proxy_target

CALLS = {False: Call(CHAT_PATH, "gpt-4o-mini"), True: Call(CHAT_PATH, "gpt-4o-mini-stream")}


def _with(extra: str):  # type: ignore[no-untyped-def]
    def policy(ctx: Context, port: int) -> str:
        return default_policy(ctx, port) + extra

    return policy


def no_metrics_target() -> Target:
    return proxy_target(
        "proxy-nometrics",
        "llm-proxy with metrics.enabled: false (baseline for metrics cost)",
        _with("metrics: {enabled: false}\n"),
        CALLS,
        baseline="proxy",
    )


def tracing_target() -> Target:
    target = proxy_target(
        "proxy-tracing",
        "llm-proxy with tracing on (spans made, OTEL_TRACES_EXPORTER=none)",
        _with("tracing: {enabled: true}\n"),
        CALLS,
        baseline="proxy",
    )
    launch = target.launch
    assert launch is not None

    def launch_traced(ctx: Context, port: int) -> Command:
        command = launch(ctx, port)
        return Command(command.argv, {**command.env, "OTEL_TRACES_EXPORTER": "none"})

    return dataclasses.replace(target, launch=launch_traced)
