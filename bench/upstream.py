"""Fake OpenAI upstream: fixed response bytes served by nginx from a generated config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from bench import tgi_upstream

JSON_PATH = "/json/v1/chat/completions"
STREAM_PATH = "/stream/v1/chat/completions"
HEALTH_PATH = "/health"

_ID = "chatcmpl-bench0000000000000000000000001"
_CREATED = 1732000000
_MODEL = "gpt-4o-mini-2024-07-18"
_FINGERPRINT = "fp_0ba0d124f1"
# 17 content pieces: with the role chunk, the finish chunk and the usage chunk that is 20 events.
_PIECES = [
    "Hello", "!", " How", " can", " I", " help", " you", " today", "?",
    " Just", " say", " the", " word", " and", " I", "'ll", " start.",
]  # fmt: skip
_USAGE = {"prompt_tokens": 9, "completion_tokens": len(_PIECES), "total_tokens": 9 + len(_PIECES)}


def _dump(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def json_body() -> str:
    """A realistic non-streaming ``chat.completion`` body."""
    return _dump(
        {
            "id": _ID,
            "object": "chat.completion",
            "created": _CREATED,
            "model": _MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(_PIECES), "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": _USAGE,
            "service_tier": "default",
            "system_fingerprint": _FINGERPRINT,
        }
    )


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": _ID,
        "object": "chat.completion.chunk",
        "created": _CREATED,
        "model": _MODEL,
        "service_tier": "default",
        "system_fingerprint": _FINGERPRINT,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": None,
    }


def stream_events() -> list[dict[str, Any]]:
    """The 20 ``chat.completion.chunk`` events of the streaming answer (before ``[DONE]``)."""
    events = [_chunk({"role": "assistant", "content": "", "refusal": None})]
    events += [_chunk({"content": piece}) for piece in _PIECES]
    events.append(_chunk({}, finish="stop"))
    usage = _chunk({})
    usage["choices"] = []
    usage["usage"] = _USAGE
    events.append(usage)
    return events


def stream_body() -> str:
    """Server-sent events body: 20 ``data:`` events then ``data: [DONE]``."""
    return "".join(f"data: {_dump(e)}\n\n" for e in stream_events()) + "data: [DONE]\n\n"


def nginx_config(tmp: Path, port: int) -> str:
    """Config for one single-process nginx on 127.0.0.1:port, every path inside ``tmp``.

    The bodies are static files under ``tmp/www`` (a ``return 200 '...'`` literal is
    capped at 4 KiB by nginx's config parser, too small for the stream body). The
    static module answers POST with 405, so ``error_page 405 =200 $uri`` turns that
    into an internal GET of the same file with status 200. nginx reads and discards
    the request body on the way, so keep-alive connections stay in sync.
    """
    temp_paths = "\n".join(
        f"    {kind}_temp_path {tmp}/{kind}_temp;"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""\
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
{temp_paths}
    client_body_buffer_size 64k;
    client_max_body_size 1m;
    keepalive_requests 100000;
    keepalive_timeout 75s;
    sendfile on;
    tcp_nodelay on;
    etag off;
    open_file_cache max=16 inactive=1h;
    open_file_cache_valid 1h;
    types {{ }}
    root {tmp}/www;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = {HEALTH_PATH} {{ default_type text/plain; return 200 'ok'; }}
        location = {JSON_PATH} {{ default_type application/json; error_page 405 =200 $uri; }}
        location = {STREAM_PATH} {{ default_type text/event-stream; error_page 405 =200 $uri; }}
{tgi_upstream.nginx_locations()}
    }}
}}
"""


def nginx_argv(tmp: Path, port: int) -> list[str]:
    """Write the bodies and the config into ``tmp``; return the command line that runs nginx."""
    for path, body in ((JSON_PATH, json_body()), (STREAM_PATH, stream_body())):
        file = tmp / "www" / path.lstrip("/")
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(body)
    tgi_upstream.write_bodies(tmp)
    conf = tmp / "nginx.conf"
    conf.write_text(nginx_config(tmp, port))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    return [nginx, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "nginx-error.log")]
