"""The Responses API door on a translated route, beside chat on the same route.

    python bench/run.py --targets direct,bare,proxy,proxy-responses,proxy-responses-stored \
        --concurrency 1,16

`proxy-responses` is llm-proxy on the default policy (`targets.default_policy`), with wrk
POSTing `/v1/responses` bodies (bench/post.lua with api `responses`: the same model, the
message as `input`, `"store": false`) for the models `proxy` serves chat completions on: the
same nginx route (`/json` for JSON, `/stream` for the 20-chunk stream), reached through the
Responses door (decode, translation to chat, the answer or each chunk encoded as a response
object and its events). `proxy-responses-stored` sends the same body without `store`, so
every response is also kept (the default: SQLite on disk under the cache directory, written
in a thread). Throughput is shown as a ratio to `proxy` measured in the same run, so the
figures are what the door (and storing) cost over the canonical chat path.
"""

from __future__ import annotations

from bench.targets import Call, Target, default_policy, proxy_target

RESPONSES_PATH = "/v1/responses"


def responses_targets() -> list[Target]:
    targets = []
    for name, api, about in (
        ("proxy-responses", "responses", "the Responses door translated onto chat, store off"),
        ("proxy-responses-stored", "responses-stored", "the same, each response stored"),
    ):
        calls = {
            False: Call(RESPONSES_PATH, "gpt-4o-mini", api=api),
            True: Call(RESPONSES_PATH, "gpt-4o-mini-stream", api=api),
        }
        about = f"wrk -> llm-proxy /v1/responses -> nginx: {about}"
        targets.append(proxy_target(name, about, default_policy, calls, baseline="proxy"))
    return targets
