"""OpenAI chat <-> HF text generation (the classic task API and TGI's /generate), as pure
functions: the request becomes `{"inputs", "parameters"}` through a chat template, and the
generated text (whole or as token events) becomes chat.completion / chat.completion.chunk.

Parameter mapping (docs/huggingface.md): max_completion_tokens / max_tokens ->
max_new_tokens; temperature 0 (or top_p 0) -> greedy; top_p >= 1 dropped (TGI refuses 1.0);
stop -> stop, cut from the text as OpenAI does; seed; frequency_penalty as is (same maths);
presence_penalty approximated by repetition_penalty = 2 ** (p / 2); top_k, typical_p,
repetition_penalty and truncate passed when a client sends them (extra_body). What a prompt
string cannot honour is a 400 naming the field.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import msgspec

from proxy.errors import ProxyError, UpstreamError, UpstreamRejectedError
from proxy.upstreams.chat_templates import ChatTemplate, RequestMessage, template_messages
from proxy.upstreams.hf_common import (
    ChunkWriter,
    StopTrimmer,
    convert_request,
    cut_at_stop,
    decode,
    encode,
    estimate_tokens,
    finish_reason,
    header_int,
    new_completion_id,
    stop_list,
    usage,
)
from proxy.upstreams.hf_errors import stream_error
from proxy.wire import StreamOptions


class TextGenRequest(msgspec.Struct):
    messages: list[RequestMessage]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stream_options: StreamOptions | None = None
    # refused unless harmless (see _UNSUPPORTED)
    n: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    response_format: Any = None
    logit_bias: dict[str, Any] | None = None
    audio: Any = None
    modalities: list[str] | None = None
    web_search_options: Any = None
    # TGI's own knobs, for clients that send them (the SDK's extra_body)
    top_k: int | None = None
    typical_p: float | None = None
    repetition_penalty: float | None = None
    truncate: int | None = None


_KNOWN = frozenset(TextGenRequest.__struct_fields__) | {"model", "stream"}
_HARMLESS_CHOICES = (None, "none", "auto")


def _format_type(value: Any) -> Any:
    return value.get("type") if isinstance(value, dict) else value


# Fields a prompt string cannot honour: dropping them would change the answer's meaning.
_UNSUPPORTED: tuple[tuple[str, Callable[[TextGenRequest], bool], str], ...] = (
    ("n", lambda r: (r.n or 1) > 1, "returns one choice per request"),
    ("tools", lambda r: bool(r.tools), "has no tool support"),
    ("tool_choice", lambda r: r.tool_choice not in _HARMLESS_CHOICES, "has no tool support"),
    ("functions", lambda r: bool(r.functions), "has no tool support"),
    ("function_call", lambda r: r.function_call not in _HARMLESS_CHOICES, "has no tool support"),
    (
        "response_format",
        lambda r: _format_type(r.response_format) not in (None, "text"),
        "cannot constrain the output format",
    ),
    ("logprobs", lambda r: bool(r.logprobs), "returns no log probabilities"),
    ("top_logprobs", lambda r: bool(r.top_logprobs), "returns no log probabilities"),
    ("logit_bias", lambda r: bool(r.logit_bias), "takes no logit bias"),
    ("audio", lambda r: r.audio is not None, "produces text only"),
    ("modalities", lambda r: r.modalities not in (None, ["text"]), "produces text only"),
    ("web_search_options", lambda r: r.web_search_options is not None, "cannot search the web"),
)


_UNSUPPORTED_FIELDS = frozenset(field for field, _, _ in _UNSUPPORTED)


def check_supported(request: TextGenRequest, fields: Iterable[str]) -> None:
    if _UNSUPPORTED_FIELDS.isdisjoint(fields):
        return
    for field, refuses, why in _UNSUPPORTED:
        if refuses(request):
            raise UpstreamRejectedError(
                f"The '{field}' parameter is not supported by this model's route (a "
                f"HuggingFace text-generation endpoint {why}). Leave it out, or list it in "
                "the route's drop_params to have it ignored.",
                param=field,
            )


def parameters(request: TextGenRequest) -> dict[str, Any]:
    """TGI / classic-API `parameters` for an OpenAI request."""
    params: dict[str, Any] = {"return_full_text": False, "details": True}
    max_new = request.max_completion_tokens
    if max_new is None:
        max_new = request.max_tokens
    if max_new is not None:
        params["max_new_tokens"] = max_new
    _sampling(request, params)
    stops = stop_list(request.stop)
    if stops:
        params["stop"] = list(stops)
    if request.seed is not None:
        params["seed"] = request.seed
    if request.frequency_penalty:
        params["frequency_penalty"] = request.frequency_penalty
    repetition = request.repetition_penalty
    if repetition is None and request.presence_penalty:
        repetition = 2 ** (request.presence_penalty / 2)
    if repetition is not None:
        params["repetition_penalty"] = repetition
    for name in ("top_k", "typical_p", "truncate"):
        value = getattr(request, name)
        if value is not None:
            params[name] = value
    return params


def _sampling(request: TextGenRequest, params: dict[str, Any]) -> None:
    """OpenAI samples at temperature 1 by default; TGI is greedy by default, refuses a
    temperature of 0 and a top_p of 1.0."""
    temperature, top_p = request.temperature, request.top_p
    if temperature == 0 or (top_p is not None and top_p <= 0):
        params["do_sample"] = False
        return
    params["do_sample"] = True
    if temperature is not None:
        params["temperature"] = temperature
    if top_p is not None and top_p < 1:
        params["top_p"] = top_p


# -- replies ---------------------------------------------------------------------------------


class Details(msgspec.Struct):
    finish_reason: str | None = None
    generated_tokens: int | None = None
    input_length: int | None = None  # streams: the prompt's token count


class Generation(msgspec.Struct):
    generated_text: str = ""
    details: Details | None = None


class Token(msgspec.Struct):
    text: str = ""
    special: bool = False


class StreamEvent(msgspec.Struct):
    token: Token | None = None
    generated_text: str | None = None
    details: Details | None = None
    error: Any = None
    error_type: str | None = None


_generation_decoder = msgspec.json.Decoder(list[Generation] | Generation)
_event_decoder = msgspec.json.Decoder(StreamEvent)


class TextGenTranslation:
    """One chat request as a text-generation call, and its replies back as OpenAI objects."""

    __slots__ = ("ignored", "include_usage", "model", "payload", "prompt", "stops", "upstream")

    def __init__(
        self,
        upstream: str,
        body: bytes,
        template: ChatTemplate,
        *,
        model: str,
        stream_field: bool | None = None,
    ) -> None:
        data = decode(body)
        request = convert_request(data, TextGenRequest)
        check_supported(request, data)
        self.upstream = upstream
        self.model = model
        self.prompt = template.render(template_messages(request.messages))
        self.stops = stop_list(request.stop)
        options = request.stream_options
        self.include_usage = bool(options and options.include_usage)
        payload: dict[str, Any] = {"inputs": self.prompt, "parameters": parameters(request)}
        if stream_field is not None:  # the classic API picks SSE or JSON by this flag
            payload["stream"] = stream_field
        self.payload = encode(payload)
        self.ignored: Sequence[str] = [k for k in data if k not in _KNOWN]

    def completion(self, body: bytes, headers: Mapping[str, str]) -> bytes:
        text, finish, prompt_tokens, completion_tokens = self._outcome(body, headers)
        return encode(
            {
                "id": new_completion_id(),
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                ],
                "usage": usage(prompt_tokens, completion_tokens),
            }
        )

    def stream(self) -> TextGenStream:
        return TextGenStream(self)

    def _outcome(self, body: bytes, headers: Mapping[str, str]) -> tuple[str, str, int, int]:
        """(text, finish_reason, prompt_tokens, completion_tokens) of a JSON reply."""
        generation = self._generation(body)
        details = generation.details or Details()
        text, cut = cut_at_stop(generation.generated_text, self.stops)
        finish = "stop" if cut else finish_reason(details.finish_reason)
        prompt_tokens = header_int(headers, "x-prompt-tokens")
        if prompt_tokens is None:
            prompt_tokens = details.input_length or estimate_tokens(self.prompt)
        completion_tokens = details.generated_tokens
        if completion_tokens is None:
            completion_tokens = header_int(headers, "x-generated-tokens")
        if completion_tokens is None:
            completion_tokens = estimate_tokens(generation.generated_text)
        return text, finish, prompt_tokens, completion_tokens

    def _generation(self, body: bytes) -> Generation:
        try:
            reply = _generation_decoder.decode(body)
        except msgspec.DecodeError:
            raise UpstreamError(
                f"The upstream '{self.upstream}' sent a reply that is not a text generation."
            ) from None
        if isinstance(reply, Generation):
            return reply
        if not reply:
            raise UpstreamError(f"The upstream '{self.upstream}' sent an empty generation.")
        first: Generation = reply[0]
        return first


class TextGenStream:
    """TGI token events (`data:{"token": ...}` ..., a final event with `generated_text` and
    `details`, no [DONE]) as chunks: role first, content with stop strings cut (the tokens
    that arrived in one network read as one chunk), one finish chunk, then usage when the
    request asked for it."""

    __slots__ = ("_chunks", "_started", "_tokens", "_trimmer", "done", "failure", "t")

    def __init__(self, translation: TextGenTranslation) -> None:
        self.t = translation
        self._chunks = ChunkWriter(translation.model)
        self._trimmer = StopTrimmer(translation.stops)
        self._started = False
        self._tokens = 0
        self.done = False
        self.failure: ProxyError | None = None

    def feed(self, events: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        text: list[str] = []  # the tokens of one network read leave as one content chunk
        for raw in events:
            event = self._decode(raw)
            if event is None:
                break
            self._event(event, text, out)
            if self.done:
                break
        if text:
            self._content("".join(text), out)
        return out

    def _decode(self, raw: bytes) -> StreamEvent | None:
        try:
            event = _event_decoder.decode(raw)
        except msgspec.DecodeError:
            message = f"The upstream '{self.t.upstream}' sent an event that is not a TGI token."
            self.failure = UpstreamError(message)
            return None
        if event.error is not None:
            self.failure = stream_error(self.t.upstream, decode(raw))
            return None
        return event

    def _event(self, event: StreamEvent, text: list[str], out: list[bytes]) -> None:
        token = event.token
        if token is not None:
            self._tokens += 1
            if not token.special:  # TGI's EOS token: never shown
                text.append(self._trimmer.feed(token.text))
        if event.generated_text is not None or event.details is not None:
            if self._tokens == 0 and event.generated_text:  # a backend that sent no tokens
                text.append(self._trimmer.feed(event.generated_text))
            text.append(self._trimmer.flush())
            self._content("".join(text), out)
            text.clear()
            self._finish(event.details or Details(), out)

    def _content(self, text: str, out: list[bytes]) -> None:
        if not self._started:
            out.append(self._chunks.role(text))
            self._started = True
        elif text:
            out.append(self._chunks.content(text))

    def _finish(self, details: Details, out: list[bytes]) -> None:
        stopped = self._trimmer.stopped
        out.append(self._chunks.finish("stop" if stopped else finish_reason(details.finish_reason)))
        if self.t.include_usage:
            prompt = details.input_length
            if prompt is None:
                prompt = estimate_tokens(self.t.prompt)
            completion = details.generated_tokens
            if completion is None:
                completion = self._tokens
            out.append(self._chunks.usage(prompt, completion))
        self.done = True

    def replay(self, body: bytes, headers: Mapping[str, str]) -> list[bytes]:
        text, finish, prompt_tokens, completion_tokens = self.t._outcome(body, headers)
        out = [self._chunks.role(text), self._chunks.finish(finish)]
        if self.t.include_usage:
            out.append(self._chunks.usage(prompt_tokens, completion_tokens))
        self.done = True
        return out

    def end(self) -> list[bytes]:
        if not self.done:
            raise UpstreamError(
                f"The upstream '{self.t.upstream}' ended the stream before the generation did."
            )
        return []
