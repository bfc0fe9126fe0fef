"""A job's outputs as OpenAI replies: one chat.completion, or chat.completion.chunk payloads.

Streams follow OpenAI's shape: a role chunk, content chunks, a chunk with `finish_reason`,
then (only when asked with `stream_options.include_usage`) a usage chunk with no choices.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import msgspec

from proxy.errors import InternalError
from proxy.wire import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatMessage,
    Choice,
    ChunkChoice,
    Delta,
    Usage,
)
from proxy.worker.jobs import Job, Output

_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class ReplyHead:
    model: str
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))


def usage_of(job: Job) -> Usage:
    return Usage(
        prompt_tokens=job.prompt_tokens,
        completion_tokens=job.completion_tokens,
        total_tokens=job.prompt_tokens + job.completion_tokens,
    )


def finish_reason_of(output: Output) -> str:
    if output.error is not None:
        raise InternalError(output.error, code="generation_failed")
    return "length" if output.finish_reason == "length" else "stop"


async def next_outputs(job: Job) -> list[Output]:
    """Wait for at least one output, then take whatever else is already there."""
    outputs = [await job.outputs.get()]
    while not job.outputs.empty():
        outputs.append(job.outputs.get_nowait())
    return outputs


async def collect(job: Job) -> tuple[str, Output]:
    parts: list[str] = []
    while True:
        for output in await next_outputs(job):
            parts.append(output.text)
            if output.finish_reason is not None:
                return "".join(parts), output


def completion_body(head: ReplyHead, job: Job, text: str, final: Output) -> bytes:
    choice = Choice(0, ChatMessage(content=text), finish_reason=finish_reason_of(final))
    reply = ChatCompletion(head.id, head.created, head.model, [choice], usage=usage_of(job))
    return _encode(reply)


def _chunk(head: ReplyHead, delta: Delta, finish: str | None = None) -> bytes:
    choice = ChunkChoice(0, delta, finish_reason=finish)
    return _encode(ChatCompletionChunk(head.id, head.created, head.model, [choice]))


async def chunks(head: ReplyHead, job: Job, include_usage: bool) -> AsyncIterator[list[bytes]]:
    """Chunk payloads grouped as they became ready (events of one step leave together)."""
    yield [_chunk(head, Delta(role="assistant", content=""))]
    while True:
        batch: list[bytes] = []
        final: Output | None = None
        for output in await next_outputs(job):
            if output.text:
                batch.append(_chunk(head, Delta(content=output.text)))
            if output.finish_reason is not None:
                final = output
        if final is not None:
            batch.append(_chunk(head, Delta(), finish_reason_of(final)))
            if include_usage:
                usage = ChatCompletionChunk(
                    head.id, head.created, head.model, [], usage=usage_of(job)
                )
                batch.append(_encode(usage))
            yield batch
            return
        if batch:
            yield batch
