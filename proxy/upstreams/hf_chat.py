"""OpenAI-compatible HF routes (the Inference Providers router, TGI's /v1) made into real
OpenAI output, as pure functions.

Their known deviations: empty `id` and a `created` per chunk, `role` repeated in every delta
(the SDK's stream helper concatenates it), `stop_sequence` / `eos_token` finish reasons, the
stop sequence left in the text, tool calls with ids like "0" repeated in every delta and a
`stop` finish reason, no `content` key beside tool calls. On the way in: `stop` must be a
list, null fields break TGI, `top_p` 1.0 is refused, `logit_bias` is a float array there.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from proxy.errors import ProxyError, UpstreamError, UpstreamRejectedError
from proxy.upstreams.hf_common import (
    StopTrimmer,
    cut_at_stop,
    decode,
    encode,
    finish_reason,
    new_completion_id,
    stop_list,
)
from proxy.upstreams.hf_errors import stream_error
from proxy.wire import upstream_object


def chat_payload(data: dict[str, Any], model: str) -> tuple[dict[str, Any], list[str]]:
    """The body for the HF route (`model` first: the router routes on a prefix of large
    bodies) and the fields dropped on the way."""
    dropped = [key for key, value in data.items() if value is None]
    out: dict[str, Any] = {"model": model}
    out.update((k, v) for k, v in data.items() if v is not None and k != "model")
    n = out.get("n")
    if isinstance(n, int) and n > 1:
        raise UpstreamRejectedError(
            "This model's route returns one choice per request, so 'n' must be 1.", param="n"
        )
    if isinstance(out.get("stop"), str):
        out["stop"] = [out["stop"]]
    top_p = out.get("top_p")
    if isinstance(top_p, int | float) and top_p >= 1:  # the same as no top_p; TGI refuses it
        del out["top_p"]
        dropped.append("top_p")
    if "logit_bias" in out:
        if out["logit_bias"]:
            raise UpstreamRejectedError(
                "This model's route does not support 'logit_bias'. Leave it out, or list it "
                "in the route's drop_params to have it ignored.",
                param="logit_bias",
            )
        del out["logit_bias"]
        dropped.append("logit_bias")
    if "max_completion_tokens" in out:  # HF routes document max_tokens; TGI takes both
        out["max_tokens"] = out.pop("max_completion_tokens")
    return out, dropped


class ChatTranslation:
    __slots__ = ("ignored", "include_usage", "model", "payload", "stops", "upstream")

    def __init__(self, upstream: str, body: bytes, *, model: str) -> None:
        data = decode(body)
        payload, ignored = chat_payload(data, model)
        self.ignored: Sequence[str] = ignored
        self.payload: bytes = encode(payload)
        self.upstream = upstream
        self.model = model
        stop = payload.get("stop")
        self.stops = stop_list(stop) if isinstance(stop, list | str) else ()
        options = payload.get("stream_options")
        self.include_usage = isinstance(options, dict) and bool(options.get("include_usage"))

    def completion(self, body: bytes, headers: Mapping[str, str]) -> bytes:
        return encode(normalise_completion(upstream_object(body, self.upstream), self))

    def stream(self) -> ChatStream:
        return ChatStream(self)


def normalise_completion(data: dict[str, Any], t: ChatTranslation) -> dict[str, Any]:
    choices = data.get("choices")
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        raise UpstreamError(f"The upstream '{t.upstream}' sent a reply without choices.")
    if not data.get("id"):
        data["id"] = new_completion_id()
    data["object"] = "chat.completion"
    if not isinstance(data.get("created"), int):
        data["created"] = int(time.time())
    for choice in choices:
        _normalise_choice(choice, t.stops)
    usage = data.get("usage")
    if isinstance(usage, dict) and "total_tokens" not in usage:
        usage["total_tokens"] = (usage.get("prompt_tokens") or 0) + (
            usage.get("completion_tokens") or 0
        )
    return data


def _normalise_choice(choice: dict[str, Any], stops: Sequence[str]) -> None:
    message = choice.get("message")
    message = message if isinstance(message, dict) else {}
    choice["message"] = message
    message["role"] = "assistant"
    cut = False
    tool_calls = message.get("tool_calls")
    if tool_calls:
        message["tool_calls"] = _whole_tool_calls(tool_calls)
        message["content"] = message.get("content") or None
    elif isinstance(message.get("content"), str):
        message["content"], cut = cut_at_stop(message["content"], stops)
    message.setdefault("content", None)
    message.setdefault("refusal", None)
    reason = finish_reason(choice.get("finish_reason"))
    choice["finish_reason"] = "tool_calls" if tool_calls else ("stop" if cut else reason)
    choice.setdefault("logprobs", None)
    choice.setdefault("index", 0)


def _whole_tool_calls(calls: list[Any]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    out = []
    for call in calls:
        if not isinstance(call, dict):
            continue
        function = call.get("function") or {}
        call_id = _call_id(call.get("id"), seen)
        out.append(
            {
                "id": call_id,
                "type": "function",
                "function": {
                    "name": function.get("name") or "",
                    "arguments": _arguments(function.get("arguments")),
                },
            }
        )
    return out


def _call_id(upstream_id: Any, seen: set[str]) -> str:
    """Ids unique in the message: TGI numbers its calls "0", "1" across turns."""
    call_id = upstream_id if isinstance(upstream_id, str) else ""
    if not call_id or call_id.isdigit() or call_id in seen:
        call_id = f"call_{new_completion_id()[9:]}"
    seen.add(call_id)
    return call_id


def _arguments(value: Any) -> str:
    """Always a JSON string (older TGI sends an object)."""
    if value is None:
        return ""
    return value if isinstance(value, str) else encode(value).decode()


# -- streams ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _ToolCall:
    index: int  # ours: one per call, in order
    upstream_id: Any


@dataclass(slots=True)
class _Choice:
    trimmer: StopTrimmer
    started: bool = False
    finished: bool = False
    tools: dict[Any, _ToolCall] = field(default_factory=dict)  # by the upstream's index
    ids: set[str] = field(default_factory=set)  # one per call, ours


class ChatStream:
    """Chunks with one id and created, role once per choice, tool-call ids and names once
    per call, the stop string cut, finish reasons in OpenAI's words on a chunk of their own,
    and usage in a chunk without choices (only when the request asked for it)."""

    __slots__ = ("_choices", "_usage", "_usage_sent", "created", "done", "failure", "id", "t")

    def __init__(self, translation: ChatTranslation) -> None:
        self.t = translation
        self.id = new_completion_id()
        self.created = int(time.time())
        self._choices: dict[Any, _Choice] = {}
        self._usage: Any = None
        self._usage_sent = False
        self.done = False
        self.failure: ProxyError | None = None

    def feed(self, events: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        for raw in events:
            if raw == b"[DONE]":
                self.done = True
                self._send_usage(out)
                break
            try:
                chunk = upstream_object(raw, self.t.upstream)
            except ProxyError as exc:
                self.failure = exc
                break
            if chunk.get("error"):
                self.failure = stream_error(self.t.upstream, chunk)
                break
            self._chunk(chunk, out)
        return out

    def _chunk(self, chunk: dict[str, Any], out: list[bytes]) -> None:
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if isinstance(choice, dict):
                self._choice(choice, out)
        usage = chunk.get("usage")
        if usage:  # in a chunk of its own (OpenAI), or on every chunk (some servers)
            self._usage = usage
            if not choices:
                self._send_usage(out)

    def _send_usage(self, out: list[bytes]) -> None:
        if self._usage and self.t.include_usage and not self._usage_sent:
            out.append(self._encode([], usage=self._usage))
            self._usage_sent = True

    def _choice(self, choice: dict[str, Any], out: list[bytes]) -> None:
        index = choice.get("index", 0)
        state = self._choices.get(index)
        if state is None:
            state = self._choices[index] = _Choice(StopTrimmer(self.t.stops))
        if state.finished:
            return
        delta = _delta(choice.get("delta"), state)
        logprobs = choice.get("logprobs")
        if delta or logprobs:
            out.append(self._encode([_choice_obj(index, delta, None, logprobs)]))
        if choice.get("finish_reason"):
            self._finish(index, state, choice["finish_reason"], out)

    def _finish(self, index: Any, state: _Choice, reason: Any, out: list[bytes]) -> None:
        rest = state.trimmer.flush()
        if rest:
            out.append(self._encode([_choice_obj(index, {"content": rest}, None, None)]))
        if state.tools:
            reason = "tool_calls"
        elif state.trimmer.stopped:
            reason = "stop"
        else:
            reason = finish_reason(reason)
        out.append(self._encode([_choice_obj(index, {}, reason, None)]))
        state.finished = True

    def _encode(self, choices: list[dict[str, Any]], usage: Any = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.t.model,
            "choices": choices,
        }
        if usage is not None:
            chunk["usage"] = usage
        return encode(chunk)

    def replay(self, body: bytes, headers: Mapping[str, str]) -> list[bytes]:
        data = normalise_completion(upstream_object(body, self.t.upstream), self.t)
        out = []
        for choice in data["choices"]:
            message = choice["message"]
            delta = {"role": "assistant", "content": message.get("content") or ""}
            if message.get("tool_calls"):
                delta["tool_calls"] = [
                    {"index": i, **call} for i, call in enumerate(message["tool_calls"])
                ]
            out.append(self._encode([_choice_obj(choice["index"], delta, None, None)]))
            out.append(
                self._encode([_choice_obj(choice["index"], {}, choice["finish_reason"], None)])
            )
        if self.t.include_usage and data.get("usage"):
            out.append(self._encode([], usage=data["usage"]))
        self.done = True
        return out

    def end(self) -> list[bytes]:
        unfinished = not self._choices or any(not c.finished for c in self._choices.values())
        if unfinished:
            raise UpstreamError(f"The upstream '{self.t.upstream}' ended the stream early.")
        out: list[bytes] = []
        self._send_usage(out)  # a stream without [DONE] (TGI-style)
        self.done = True
        return out


def _choice_obj(index: Any, delta: dict[str, Any], finish: Any, logprobs: Any) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}


def _delta(upstream: Any, state: _Choice) -> dict[str, Any]:
    """The delta as OpenAI would send it: role only in the first one, nulls left out."""
    delta: dict[str, Any] = {}
    first = not state.started
    state.started = True
    if first:
        delta["role"] = "assistant"
    for key, value in upstream.items() if isinstance(upstream, dict) else ():
        if value is None or key == "role":
            continue
        if key == "content":
            text = state.trimmer.feed(value) if isinstance(value, str) else ""
            if text:
                delta["content"] = text
        elif key == "tool_calls":
            calls = _tool_call_deltas(value, state)
            if calls:
                delta["tool_calls"] = calls
        else:
            delta[key] = value
    if first and "content" not in delta:
        delta["content"] = None if "tool_calls" in delta else ""
    return delta


def _tool_call_deltas(calls: Any, state: _Choice) -> list[dict[str, Any]]:
    out = []
    for call in calls if isinstance(calls, list) else ():
        if not isinstance(call, dict):
            continue
        function = call.get("function") or {}
        arguments = _arguments(function.get("arguments"))
        known = state.tools.get(call.get("index", 0))
        upstream_id = call.get("id")
        if known is None or (upstream_id and upstream_id != known.upstream_id):
            out.append(_new_tool_call(call, function, arguments, state))
        elif arguments:
            out.append({"index": known.index, "function": {"arguments": arguments}})
    return out


def _new_tool_call(
    call: dict[str, Any], function: dict[str, Any], arguments: str, state: _Choice
) -> dict[str, Any]:
    """A call's first delta: its id, type and name, once (the SDK concatenates repeats)."""
    index = len(state.ids)
    upstream_id = call.get("id")
    state.tools[call.get("index", 0)] = _ToolCall(index, upstream_id)
    return {
        "index": index,
        "id": _call_id(upstream_id, state.ids),
        "type": "function",
        "function": {"name": function.get("name") or "", "arguments": arguments},
    }
