"""The worker's side of the chat-completions wire: what a request may ask for, checked once.

Fields the worker honours become `Sampling`; fields it cannot honour are a 400 that names the
field (a proxy route can list them in `drop_params` to have them dropped instead); unknown
fields are ignored, as vLLM does, so new OpenAI fields do not break clients.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from proxy.errors import InvalidRequestError

DEFAULT_MAX_TOKENS = 1024
MAX_STOP_STRINGS = 4


class WireMessage(msgspec.Struct):
    role: str
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


class ChatParams(msgspec.Struct):
    messages: Annotated[list[WireMessage], Meta(min_length=1)]
    model: str = ""
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    n: Annotated[int, Meta(ge=1)] | None = None
    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    max_tokens: Annotated[int, Meta(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Meta(ge=1)] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    functions: list[dict[str, Any]] | None = None
    function_call: Any = None
    response_format: dict[str, Any] | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    audio: Any = None
    modalities: list[str] | None = None
    prediction: Any = None


@dataclass(frozen=True, slots=True)
class Sampling:
    max_new_tokens: int
    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_p == 0


_decoder = msgspec.json.Decoder(ChatParams)
_AT_PATH = re.compile(r" - at `\$\.?([^`]*)`$")


def decode_params(body: bytes) -> ChatParams:
    try:
        params = _decoder.decode(body)
    except msgspec.ValidationError as exc:
        text = str(exc)
        at = _AT_PATH.search(text)
        param = at.group(1) if at else None
        raise InvalidRequestError(
            f"Invalid request: {_AT_PATH.sub('', text)}", param=param
        ) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequestError(f"The request body is not valid JSON: {exc}") from None
    if params.stream_options is not None and not params.stream:
        raise InvalidRequestError(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
        )
    reject_unsupported(params)
    return params


def _unsupported(params: ChatParams) -> str | None:
    """The first field this worker cannot honour, or None."""
    checks: list[tuple[str, bool]] = [
        ("n", (params.n or 1) > 1),
        ("logprobs", bool(params.logprobs)),
        ("top_logprobs", bool(params.top_logprobs)),
        ("tools", bool(params.tools)),
        ("tool_choice", params.tool_choice not in (None, "none")),
        ("functions", bool(params.functions)),
        ("function_call", params.function_call not in (None, "none")),
        ("response_format", (params.response_format or {}).get("type", "text") != "text"),
        ("frequency_penalty", bool(params.frequency_penalty)),
        ("presence_penalty", bool(params.presence_penalty)),
        ("logit_bias", bool(params.logit_bias)),
        ("audio", params.audio is not None),
        ("modalities", any(m != "text" for m in params.modalities or ())),
        ("prediction", params.prediction is not None),
    ]
    return next((name for name, bad in checks if bad), None)


def reject_unsupported(params: ChatParams) -> None:
    field = _unsupported(params)
    if field is not None:
        raise InvalidRequestError(
            f"The local worker does not support '{field}' (drop it, or list it in the "
            "route's drop_params to have the proxy drop it).",
            param=field,
            code="unsupported_parameter",
        )


def chat_messages(params: ChatParams) -> list[dict[str, str]]:
    """Messages as chat templates expect them: string content, `developer` as `system`."""
    messages = []
    for index, message in enumerate(params.messages):
        role = "system" if message.role == "developer" else message.role
        messages.append({"role": role, "content": _text_of(message.content, index)})
    return messages


def _text_of(content: str | list[dict[str, Any]] | None, index: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for part in content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise InvalidRequestError(
                f"The local worker accepts only text content parts (got {part.get('type')!r}).",
                param=f"messages[{index}].content",
            )
        texts.append(part["text"])
    return "\n".join(texts)


def sampling_of(params: ChatParams, default_max_tokens: int = DEFAULT_MAX_TOKENS) -> Sampling:
    stop = [params.stop] if isinstance(params.stop, str) else list(params.stop or ())
    if len(stop) > MAX_STOP_STRINGS:
        raise InvalidRequestError(
            f"At most {MAX_STOP_STRINGS} stop sequences are allowed.", param="stop"
        )
    limit = params.max_completion_tokens or params.max_tokens or default_max_tokens
    return Sampling(
        max_new_tokens=limit,
        temperature=1.0 if params.temperature is None else params.temperature,
        top_p=1.0 if params.top_p is None else params.top_p,
        seed=params.seed,
        stop=tuple(s for s in stop if s),
    )
