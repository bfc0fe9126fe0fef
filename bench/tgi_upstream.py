"""Fake HuggingFace text-generation upstream for the benchmark: fixed TGI bodies served by
the same nginx as ``upstream.py``, and the llm-proxy target that routes to it.

The classic task API answers ``POST {base}/models/{model}`` with JSON or, when the body says
``"stream": true``, with TGI's token events; nginx cannot look at the body, so, as for the
OpenAI upstream, there are two base URLs: ``/hf-json`` (a JSON generation) and
``/hf-stream`` (18 ``data:{...}`` events: 17 tokens, the last with ``generated_text`` and
``details``, and no ``[DONE]``, as TGI sends them). The text is the same 17 pieces as the
OpenAI bodies, so both targets relay the same content.

Wiring (two small edits, in files this module does not own):

* ``upstream.py``: put ``{nginx_locations()}`` inside the ``server {}`` block of
  ``nginx_config`` and call ``write_bodies(tmp)`` in ``nginx_argv``;
* ``targets.py``: ``targets.append(hf_textgen_target())`` in ``registry()``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.targets import Context, Target

MODEL = "bench/model-7b"
JSON_BASE = "/hf-json"
STREAM_BASE = "/hf-stream"
JSON_PATH = f"{JSON_BASE}/models/{MODEL}"
STREAM_PATH = f"{STREAM_BASE}/models/{MODEL}"
PROMPT_TOKENS = 9

_PIECES = [
    "Hello", "!", " How", " can", " I", " help", " you", " today", "?",
    " Just", " say", " the", " word", " and", " I", "'ll", " start.",
]  # fmt: skip
_TEXT = "".join(_PIECES)


def _dump(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def json_body() -> str:
    """The classic API's reply: a list with one generation and its details."""
    details = {
        "finish_reason": "eos_token",
        "generated_tokens": len(_PIECES) + 1,
        "seed": None,
        "prefill": [],
        "tokens": [],
    }
    return _dump([{"generated_text": _TEXT, "details": details}])


def stream_events() -> list[dict[str, Any]]:
    """TGI ``/generate_stream`` events: one per token, the EOS token last with the totals."""
    events: list[dict[str, Any]] = [
        {
            "index": i + 1,
            "token": {"id": 1000 + i, "text": piece, "logprob": -0.25, "special": False},
            "generated_text": None,
            "details": None,
        }
        for i, piece in enumerate(_PIECES)
    ]
    events.append(
        {
            "index": len(_PIECES) + 1,
            "token": {"id": 2, "text": "</s>", "logprob": -0.01, "special": True},
            "generated_text": _TEXT,
            "details": {
                "finish_reason": "eos_token",
                "generated_tokens": len(_PIECES) + 1,
                "seed": None,
                "input_length": PROMPT_TOKENS,
            },
        }
    )
    return events


def stream_body() -> str:
    """TGI framing: ``data:`` without a space, no ``[DONE]``."""
    return "".join(f"data:{_dump(e)}\n\n" for e in stream_events())


def nginx_locations() -> str:
    """The two locations, for the ``server {}`` block of ``upstream.nginx_config``."""
    tokens = f"add_header x-prompt-tokens {PROMPT_TOKENS};"
    return (
        f"        location = {JSON_PATH} {{ default_type application/json; {tokens} "
        "error_page 405 =200 $uri; }\n"
        f"        location = {STREAM_PATH} {{ default_type text/event-stream; "
        "error_page 405 =200 $uri; }\n"
    )


def write_bodies(tmp: Path) -> None:
    """The static files nginx serves, under ``tmp/www`` like ``upstream.nginx_argv``'s."""
    for path, body in ((JSON_PATH, json_body()), (STREAM_PATH, stream_body())):
        file = tmp / "www" / path.lstrip("/")
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(body)


def policy(ctx: Context, port: int) -> str:
    from bench.targets import CLIENT_KEY, UPSTREAM_KEY

    up = ctx.upstream_url
    hf = f"type: huggingface, api: text-generation, api_key: {UPSTREAM_KEY}, chat_template: chatml"
    return f"""\
server: {{host: 127.0.0.1, port: {port}}}
upstreams:
  hf: {{{hf}, base_url: "{up}{JSON_BASE}"}}
  hfstream: {{{hf}, base_url: "{up}{STREAM_BASE}"}}
models:
  hf-textgen: {{routes: [{{upstream: hf, model: {MODEL}}}]}}
  hf-textgen-stream: {{routes: [{{upstream: hfstream, model: {MODEL}}}]}}
keys:
  - {{name: bench, key: {CLIENT_KEY}}}
logging: {{level: INFO}}
"""


def hf_textgen_target() -> Target:
    """llm-proxy translating to the classic text-generation API, compared with ``proxy``
    (the OpenAI pass-through route) in the same run: the issue asks for >= 0.80x."""
    from bench.targets import CHAT_PATH, Call, proxy_target

    return proxy_target(
        "proxy-hf",
        "wrk -> llm-proxy -> nginx as HF text-generation: chat template, TGI events -> chunks",
        policy,
        calls={False: Call(CHAT_PATH, "hf-textgen"), True: Call(CHAT_PATH, "hf-textgen-stream")},
        baseline="proxy",
    )
