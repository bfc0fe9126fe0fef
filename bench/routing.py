"""Routing cost: a policy of 50 models x 4 routes and 20 rules.

    python bench/routing.py            # the micro-benchmark: routing cost per request
    python bench/run.py --targets proxy,proxy-routing,proxy-reload

`proxy-routing` serves the bench models from that large policy (throughput vs `proxy`);
`proxy-reload` rewrites its policy file every second during the run (it must drop nothing).
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):
    # run as a script, bench/ comes first on sys.path and bench/limits.py would shadow the
    # `limits` library the proxy imports: put the repository there instead
    HERE = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
    sys.path.insert(0, str(HERE.parent))

from bench.targets import (
    CHAT_PATH,
    Call,
    Command,
    Context,
    Target,
    default_policy,
    proxy_target,
)

MODELS, ROUTES, RULES = 50, 4, 20


def large_policy_text(upstream_url: str, port: int, key: str = "sk-bench-client") -> str:
    """50 models of 4 weighted routes, 20 rules (none matches the bench traffic), plus the
    two models the load uses (routed like the rest: 4 routes each)."""
    lines = [
        f"server: {{host: 127.0.0.1, port: {port}}}",
        "upstreams:",
    ]
    for i in range(ROUTES):
        for kind in ("json", "stream"):
            base = f"{upstream_url}/{kind}/v1"
            lines.append(f'  {kind}{i}: {{type: openai, base_url: "{base}", api_key: sk-up-{i}}}')
    lines.append("models:")
    for kind, name in (("json", "gpt-4o-mini"), ("stream", "gpt-4o-mini-stream")):
        routes = ", ".join(
            f"{{upstream: {kind}{r}, model: {name}-r{r}, weight: {r + 1}}}" for r in range(ROUTES)
        )
        lines.append(f"  {name}: {{routes: [{routes}]}}")
    for m in range(MODELS):
        routes = ", ".join(
            f"{{upstream: json{r}, model: m{m}-r{r}, weight: {r + 1}}}" for r in range(ROUTES)
        )
        lines.append(f"  model-{m}: {{routes: [{routes}], fallbacks: [model-{(m + 1) % MODELS}]}}")
    lines.append("rules:")
    for r in range(RULES):
        condition = (
            f'{{header: {{x-tier: "tier-{r}"}}}}'
            if r % 2
            else f'{{model: "nomatch-{r}-*", stream: true}}'
        )
        lines.append(f"  - {{when: {condition}, use: model-{r}}}")
    lines.append(f"keys:\n  - {{name: bench, key: {key}}}")
    lines.append("logging: {level: INFO}")
    return "\n".join(lines) + "\n"


def _fallback_free(text: str) -> str:
    # fallbacks must not form a cycle: the last model falls back to nothing
    return text.replace("fallbacks: [model-0]}", "fallbacks: []}")


def routing_policy(ctx: Context, port: int) -> str:
    return _fallback_free(large_policy_text(ctx.upstream_url, port))


def routing_target() -> Target:
    return proxy_target(
        "proxy-routing",
        f"llm-proxy with {MODELS} models x {ROUTES} routes and {RULES} rules",
        routing_policy,
        calls={False: Call(CHAT_PATH, "gpt-4o-mini"), True: Call(CHAT_PATH, "gpt-4o-mini-stream")},
        baseline="proxy",
    )


def reload_target() -> Target:
    """The default policy, rewritten every second while the load runs."""
    target = proxy_target(
        "proxy-reload",
        "llm-proxy whose policy file is rewritten every second (must drop nothing)",
        default_policy,
        calls={False: Call(CHAT_PATH, "gpt-4o-mini"), True: Call(CHAT_PATH, "gpt-4o-mini-stream")},
        baseline="proxy",
    )
    launch = target.launch
    assert launch is not None

    def launch_and_keep_editing(ctx: Context, port: int) -> Command:
        command = launch(ctx, port)
        policy = ctx.tmp / f"{target.name}.policy.yaml"
        threading.Thread(target=_edit_every_second, args=(policy,), daemon=True).start()
        return command

    return dataclasses.replace(target, launch=launch_and_keep_editing)


def _edit_every_second(policy: Path) -> None:
    base = policy.read_text()
    edits = 0
    while policy.exists():
        time.sleep(1.0)
        edits += 1
        tmp = policy.with_suffix(".tmp")
        try:
            tmp.write_text(base + f"# edit {edits}\n")
            tmp.replace(policy)  # atomic, as editors and ConfigMaps do
        except OSError:
            return  # the run is over: its temp dir is gone


def micro_benchmark(rounds: int = 20000) -> dict[str, float]:
    """Routing cost per request in microseconds: auth, decoding and validation, rules, model
    resolution and the route plan (strategy order, health filter, the first attempt's
    upstream call built), as the gateway does them."""
    import asyncio

    from proxy.formats.base import DecodeContext
    from proxy.formats.chat import CHAT
    from proxy.gateway import Gateway
    from proxy.loader import load_text
    from proxy.planning import Planning, plans

    text = _fallback_free(large_policy_text("http://127.0.0.1:9", 0))
    body = b'{"model":"model-37","messages":[{"role":"user","content":"Say hello"}]}'
    headers = {"x-tier": "none"}

    async def measure() -> list[float]:
        gateway = Gateway(load_text(text, env={}))
        await gateway.start()
        policy = gateway.policy
        dispatcher = gateway.services.dispatcher

        async def route_once() -> None:
            caller = policy.authenticate("Bearer sk-bench-client")
            request = await CHAT.decode(body, DecodeContext(policy, caller, headers))
            resolved = gateway.resolve(caller, request, headers)
            planning = Planning(policy, gateway.upstreams, dispatcher, "req")
            plan = next(plans(planning, resolved, request))
            assert plan.attempts[0].call.model.startswith("m37-")

        for _ in range(2000):
            await route_once()
        samples = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(rounds):
                await route_once()
            samples.append((time.perf_counter() - started) / rounds * 1e6)
        await gateway.close()
        return samples

    samples = asyncio.run(measure())
    return {"median_us": statistics.median(samples), "min_us": min(samples)}


if __name__ == "__main__":
    figures = micro_benchmark()
    print(
        f"routing cost per request ({MODELS} models x {ROUTES} routes, {RULES} rules): "
        f"median {figures['median_us']:.1f} us, best {figures['min_us']:.1f} us (bar: < 50 us)"
    )
