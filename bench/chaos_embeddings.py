"""The embeddings door of the chaos load (`POST /v1/embeddings`), through the `openai` SDK
(which asks for base64 and decodes it) and raw HTTP (float or base64). Inputs come partly from
a small pool, so that the per-input cache is hit. The fake upstreams' vectors are a function
of the input (fakes/embeddings_api.py), so an answer is ok only when every vector is the one
of its input, in the order sent, at the dimensions asked."""

from __future__ import annotations

import json
import math
import time
from typing import TYPE_CHECKING, Any

import httpx
import openai
from fakes.embeddings_api import DEFAULT_DIMENSIONS, fake_vector, from_base64

from bench.chaos_chat import parsed, raw_openai_error, sdk_status_error
from bench.chaos_spec import Malformed, Result, Spec, check_model, note_headers

if TYPE_CHECKING:
    from bench.chaos_load import Clients

TOLERANCE = 1e-6  # float32 values, relayed as JSON or base64


def embeddings_body(spec: Spec) -> dict[str, Any]:
    single = len(spec.inputs) == 1 and spec.rid % 2
    body: dict[str, Any] = {"model": spec.model, "input": spec.inputs[0] if single else spec.inputs}
    if spec.dimensions is not None:
        body["dimensions"] = spec.dimensions
    if spec.encoding is not None:
        body["encoding_format"] = spec.encoding
    return body


def check_vectors(spec: Spec, model: str | None, data: list[dict[str, Any]]) -> None:
    check_model(spec, model)
    if [item.get("index") for item in data] != list(range(len(spec.inputs))):
        raise Malformed(f"indexes {[item.get('index') for item in data]} for {len(spec.inputs)}")
    dimensions = spec.dimensions or DEFAULT_DIMENSIONS
    for item, text in zip(data, spec.inputs, strict=True):
        vector = item["embedding"]
        if isinstance(vector, str):
            vector = from_base64(vector)
        expected = fake_vector(text, dimensions)
        if len(vector) != len(expected) or any(
            not math.isclose(a, b, abs_tol=TOLERANCE) for a, b in zip(vector, expected, strict=True)
        ):
            raise Malformed(f"input {item['index']} ({text!r}) got another input's vector")


async def sdk_embeddings(clients: Clients, spec: Spec) -> Result:
    client = clients.openai(spec)
    started = time.monotonic()
    result = Result(spec, "lost", started=started)
    body = embeddings_body(spec)
    body.pop("encoding_format", None)  # the SDK asks for base64 and decodes it itself
    try:
        raw = await client.embeddings.with_raw_response.create(**body)
        result.status = raw.status_code
        note_headers(result, raw.headers)
        answer = await parsed(raw)
        check_vectors(spec, answer.model, [item.model_dump() for item in answer.data])
        result.outcome = "ok"
    except openai.APIStatusError as exc:
        sdk_status_error(result, exc)
    except openai.APIConnectionError as exc:
        result.detail = f"no answer: {type(exc).__name__}: {exc.__cause__!r}"
    except Malformed as exc:
        result.detail = str(exc)
    except Exception as exc:  # the SDK failing to read what it was sent
        result.detail = f"{type(exc).__name__}: {exc}"
    result.seconds = time.monotonic() - started
    return result


async def raw_embeddings(clients: Clients, spec: Spec) -> Result:
    started = time.monotonic()
    result = Result(spec, "lost", started=started)
    try:
        async with clients.raw(spec).stream(
            "POST", "/v1/embeddings", json=embeddings_body(spec), headers=clients.bearer(spec)
        ) as resp:
            result.status = resp.status_code
            note_headers(result, resp.headers)
            if resp.status_code != 200:
                await raw_openai_error(resp, result)
            else:
                answer = json.loads(await resp.aread())
                check_vectors(spec, answer.get("model"), answer["data"])
                result.outcome = "ok"
    except httpx.TransportError as exc:
        result.detail = f"no answer: {type(exc).__name__}"
    except (Malformed, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        result.detail = f"malformed: {type(exc).__name__}: {exc}"
    result.seconds = time.monotonic() - started
    return result
