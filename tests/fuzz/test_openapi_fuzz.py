"""schemathesis over the operations of /openapi.json that the newer doors added (the Responses
API and its stored responses, Anthropic's Messages API and count_tokens, embeddings), against
the fuzzed proxy, whose routes include a native Responses API upstream and an Anthropic one:
every answer a documented status whose body matches its schema, no 5xx, no stack trace.
(tests/integration/test_openapi.py runs every operation of the document on a chat-only
policy.) Bounded for CI: about 20 s; FUZZ_SCALE multiplies the examples."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from fakes.proxy_harness import RunningProxy

from .checks import examples
from .conftest import FUZZ_KEY

SCHEMATHESIS = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
pytestmark = [
    pytest.mark.skipif(
        not Path(SCHEMATHESIS).exists(), reason="schemathesis is not installed (dev extra)"
    ),
    pytest.mark.timeout(300),
]
NEW_DOORS = r"^/v1/(responses|messages|embeddings)"


# A body past max_body_bytes is refused with 413 before anything reads it: a rejection too.
CONFIG = """
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "409", "413", "415", "422", "429"]
"""


def test_the_new_doors_conform_to_the_document(fuzz_proxy: RunningProxy, tmp_path: Path) -> None:
    document = httpx.get(f"{fuzz_proxy.url}/openapi.json", timeout=5).json()
    covered = sorted(path for path in document["paths"] if re.match(NEW_DOORS, path))
    assert covered == [
        "/v1/embeddings",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/responses",
        "/v1/responses/{response_id}",
        "/v1/responses/{response_id}/input_items",
    ], covered
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    argv = [
        SCHEMATHESIS, "--config-file", str(config), "run", f"{fuzz_proxy.url}/openapi.json",
        "--checks", "all",
        "--include-path-regex", NEW_DOORS, "--max-examples", str(examples(40)),
        # a response made with "store": false is, by design, not there to GET afterwards
        "--exclude-checks", "ensure_resource_availability",
        "--seed", "11", "--request-timeout", "10",
        "--header", f"Authorization: Bearer {FUZZ_KEY}",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=280, check=False)
    assert done.returncode == 0, done.stdout[-8000:]
    assert "Traceback" not in fuzz_proxy.log()


def _valid(document: dict[str, Any], schema: dict[str, Any], value: Any) -> bool:
    root = {**schema, "components": document["components"]}  # "#/components/..." resolves
    return jsonschema.Draft202012Validator(root).is_valid(value)


def _sse_events(text: str) -> list[dict[str, str]]:
    """Events as schemathesis (and any SSE client) reads them off the wire."""
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        events.append({"event": fields.get("event", "message"), "data": fields["data"]})
    return events


STREAMED = {  # a streamed request through each door, and its path in the document
    "/v1/chat/completions": {"model": "m", "stream": True, "messages": [{"role": "user",
                             "content": "hi"}]},
    "/v1/responses": {"model": "m", "stream": True, "input": "hi"},
    "/v1/messages": {"model": "m", "stream": True, "max_tokens": 8, "messages": [{"role": "user",
                     "content": "hi"}]},
}  # fmt: skip


@pytest.mark.parametrize("path", sorted(STREAMED))
def test_each_event_of_a_stream_fits_the_document(fuzz_proxy: RunningProxy, path: str) -> None:
    """OpenAPI 3.1 reads a text/event-stream schema as the schema of one event: the document
    said `string`, and schemathesis refused every real event."""
    document = httpx.get(f"{fuzz_proxy.url}/openapi.json", timeout=5).json()
    content = document["paths"][path]["post"]["responses"]["200"]["content"]
    schema = content["text/event-stream"]["schema"]
    headers = {"Authorization": f"Bearer {FUZZ_KEY}"}
    resp = httpx.post(fuzz_proxy.url + path, json=STREAMED[path], headers=headers, timeout=10)
    assert resp.status_code == 200, resp.text
    events = _sse_events(resp.text)
    assert events and all(_valid(document, schema, event) for event in events), events[:3]


TOOL = {"name": "lookup", "input_schema": {"type": "object"}}
IMAGE = {"type": "image", "source": {"type": "file", "file_id": "file_1"}}


def _turn(role: str, *blocks: dict[str, Any]) -> dict[str, Any]:
    return {"messages": [{"role": role, "content": list(blocks)}]}


REFUSED = {  # bodies a translated route refuses with a 400 (the first two: Anthropic's API too)
    "a tool without input_schema": {"tools": [{"name": "lookup"}]},
    "a tool choice of type tool without a name": {"tools": [TOOL], "tool_choice": {"type": "tool"}},
    "a block of a type chat has no equivalent of": _turn("user", {"type": "document"}),
    "an image given by file id": _turn("user", IMAGE),
    "a tool_use block in a user turn": _turn(
        "user", {"type": "tool_use", "id": "t1", "name": "lookup", "input": {}}
    ),
}


@pytest.mark.parametrize("why", sorted(REFUSED))
def test_a_messages_body_the_door_refuses_is_invalid_in_the_document(
    fuzz_proxy: RunningProxy, why: str
) -> None:
    """schemathesis sent these as valid by the document and got a 400 (ST202): the document
    now describes what every route takes (native routes take more)."""
    served = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    body = served | REFUSED[why]
    headers = {"x-api-key": FUZZ_KEY}
    resp = httpx.post(f"{fuzz_proxy.url}/v1/messages", json=body, headers=headers, timeout=10)
    assert resp.status_code == 400, resp.text
    document = httpx.get(f"{fuzz_proxy.url}/openapi.json", timeout=5).json()
    request = {"$ref": "#/components/schemas/MessagesRequest"}
    assert not _valid(document, request, body)
    assert _valid(document, request, served | {"tools": [TOOL], "tool_choice": {"type": "auto"}})
