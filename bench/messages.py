"""The Anthropic Messages API door on a translated route, beside chat on the same route.

    python bench/run.py --targets direct,bare,proxy,proxy-messages --concurrency 1,16

`proxy-messages` is llm-proxy on the default policy (`targets.default_policy`), with wrk
POSTing `/v1/messages` bodies (bench/post.lua with api `messages`: the chat body's model
and message plus `max_tokens`) for the same models `proxy` serves chat completions on:
the same nginx route (`/json` for JSON, `/stream` for the 20-chunk stream), reached through
the Messages door (decode, translation to chat, the answer or each chunk encoded as
Anthropic's message and events). Throughput is shown as a ratio to `proxy` measured in the
same run, so the figure is what the door costs over the canonical chat path.
"""

from __future__ import annotations

from bench.targets import Call, Target, default_policy, proxy_target

MESSAGES_PATH = "/v1/messages"


def messages_target() -> Target:
    calls = {
        False: Call(MESSAGES_PATH, "gpt-4o-mini", api="messages"),
        True: Call(MESSAGES_PATH, "gpt-4o-mini-stream", api="messages"),
    }
    return proxy_target(
        "proxy-messages",
        "wrk -> llm-proxy /v1/messages -> nginx: the Messages door translated onto chat",
        default_policy,
        calls,
        baseline="proxy",
    )
