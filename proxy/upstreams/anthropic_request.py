"""An OpenAI chat body made into an Anthropic Messages request, as pure functions.

System and developer messages become `system`; user and assistant text and images become
content blocks; assistant tool calls become `tool_use` blocks and tool messages `tool_result`
blocks in a user turn; consecutive turns of one role are merged, as the API wants them.
A request the Messages API cannot honour is refused here, before anything is sent, with
UpstreamRejectedError naming the field (400: the client's request, never retried).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from proxy.errors import UpstreamRejectedError
from proxy.upstreams.anthropic_wire import (
    Base64Source,
    Block,
    ChatBody,
    ChatMessage,
    ChatTool,
    ChatToolCall,
    Content,
    ContentPart,
    ImageBlock,
    MessagesRequest,
    Metadata,
    TextBlock,
    ToolChoice,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
    Turn,
    URLSource,
)
from proxy.upstreams.hf_common import convert_request, decode, encode

# The Messages API requires max_tokens, OpenAI's body may leave it out: this is the cap then.
DEFAULT_MAX_TOKENS = 4096

# Fields the translation reads; any other field of the body is not used (logged at debug).
_READ = frozenset(ChatBody.__struct_fields__) | {"model"}
_TOOL_CHOICES = {"auto": "auto", "required": "any", "none": "none"}
_DATA_URL = re.compile(r"data:([^;,]+);base64,(.*)", re.DOTALL)
_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    payload: bytes  # the Messages request body
    include_usage: bool  # a stream ends with a usage chunk (stream_options.include_usage)
    ignored: tuple[str, ...]  # fields of the chat body the Messages API has no use for


def messages_request(body: bytes, model: str, *, stream: bool) -> PreparedRequest:
    data = decode(body)
    if not isinstance(data, dict):
        raise UpstreamRejectedError("The request body must be a JSON object.")
    chat = convert_request(data, ChatBody)
    refuse_unsupported(chat)
    system, turns = convert_messages(chat.messages)
    request = MessagesRequest(
        model=model,
        max_tokens=chat.max_completion_tokens or chat.max_tokens or DEFAULT_MAX_TOKENS,
        messages=turns,
        system=system,
        stop_sequences=stop_sequences(chat.stop),
        temperature=UNSET if chat.temperature is None else chat.temperature,
        top_p=UNSET if chat.top_p is None else chat.top_p,
        stream=True if stream else UNSET,
        metadata=UNSET if chat.user is None else Metadata(chat.user),
    )
    if chat.tools:
        request.tools = [tool_spec(tool, i) for i, tool in enumerate(chat.tools)]
        request.tool_choice = tool_choice(chat.tool_choice, chat.parallel_tool_calls)
    options = chat.stream_options
    ignored = tuple(k for k, v in data.items() if k not in _READ and v is not None)
    return PreparedRequest(
        encode(request), bool(options and options.include_usage), tuple(sorted(ignored))
    )


def refuse_unsupported(chat: ChatBody) -> None:
    """What the client asked for and the Messages API cannot give: a 400 naming the field."""
    if chat.n is not None and chat.n > 1:
        raise _refused("returns one choice per request, so 'n' must be 1", "n")
    if chat.response_format is not None and chat.response_format.type != "text":
        raise _refused(
            f"has no '{chat.response_format.type}' response format (the Anthropic Messages "
            "API); describe the JSON wanted in the messages instead",
            "response_format",
        )
    if chat.logprobs:
        raise _refused("returns no log probabilities", "logprobs")
    if chat.logit_bias:
        raise _refused("does not support 'logit_bias'", "logit_bias")


def _refused(reason: str, param: str) -> UpstreamRejectedError:
    return UpstreamRejectedError(
        f"This model's route {reason}. List '{param.split('.')[0]}' in the route's "
        "drop_params to have it ignored instead.",
        param=param,
    )


# -- messages -------------------------------------------------------------------------------------


def convert_messages(messages: list[ChatMessage]) -> tuple[str | UnsetType, list[Turn]]:
    """The system prompt (system and developer messages joined) and the alternating turns."""
    system: list[str] = []
    turns: list[Turn] = []
    for i, message in enumerate(messages):
        if message.role in ("system", "developer"):
            system.append(_text_only(message.content, f"messages[{i}].content"))
            continue
        role, blocks = _turn(message, i)
        if not blocks:
            continue  # the API refuses empty turns; an empty one says nothing anyway
        if turns and turns[-1].role == role:
            turns[-1].content.extend(blocks)
        else:
            turns.append(Turn(role, blocks))
    joined = "\n\n".join(text for text in system if text)
    return (joined or UNSET), turns


def _turn(message: ChatMessage, i: int) -> tuple[str, list[Block]]:
    path = f"messages[{i}]"
    if message.role == "user":
        return "user", content_blocks(message.content, f"{path}.content")
    if message.role == "assistant":
        blocks = content_blocks(message.content, f"{path}.content", images=False)
        calls = message.tool_calls or []
        uses = [_tool_use(call, f"{path}.tool_calls[{j}]") for j, call in enumerate(calls)]
        return "assistant", [*blocks, *uses]
    if message.role == "tool":
        if not message.tool_call_id:
            raise UpstreamRejectedError(
                "A tool message needs its 'tool_call_id'.", param=f"{path}.tool_call_id"
            )
        return "user", [_tool_result(message.tool_call_id, message.content, path)]
    raise UpstreamRejectedError(
        f"This model's route does not take '{message.role}' messages.", param=f"{path}.role"
    )


def content_blocks(content: Content, path: str, *, images: bool = True) -> list[Block]:
    """Text and image parts as blocks; empty text left out (the API refuses it)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [TextBlock(content)] if content else []
    blocks: list[Block] = []
    for j, part in enumerate(content):
        block = _part(part, f"{path}[{j}]", images)
        if block is not None:
            blocks.append(block)
    return blocks


def _part(part: ContentPart, path: str, images: bool) -> TextBlock | ImageBlock | None:
    if part.type == "text":
        return TextBlock(part.text) if part.text else None
    if part.type == "refusal" and not images:
        return None  # an assistant's earlier refusal: nothing the model needs to read again
    if part.type == "image_url" and images and part.image_url is not None:
        url = part.image_url if isinstance(part.image_url, str) else part.image_url.url
        return ImageBlock(image_source(url, f"{path}.image_url.url"))
    raise UpstreamRejectedError(
        f"This model's route does not take '{part.type}' content here.", param=f"{path}.type"
    )


def image_source(url: str, path: str) -> Base64Source | URLSource:
    """A data: URL as base64 data, an http(s) URL as a URL the API fetches itself."""
    found = _DATA_URL.fullmatch(url)
    if found is not None:
        return Base64Source(media_type=found.group(1), data=found.group(2))
    if url.startswith(("https://", "http://")):
        return URLSource(url)
    raise UpstreamRejectedError(
        "An image must be an http(s) URL or a base64 data: URL.", param=path
    )


def _text_only(content: Content, path: str) -> str:
    blocks = content_blocks(content, path, images=False)
    return "\n".join(block.text for block in blocks if isinstance(block, TextBlock))


def _tool_use(call: ChatToolCall, path: str) -> ToolUseBlock:
    arguments = call.function.arguments or "{}"
    try:
        parsed = msgspec.json.decode(arguments)
    except msgspec.DecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise UpstreamRejectedError(
            "A tool call's arguments must be a JSON object.", param=f"{path}.function.arguments"
        )
    return ToolUseBlock(id=call.id, name=call.function.name, input=parsed)


def _tool_result(call_id: str, content: Content, path: str) -> ToolResultBlock:
    if isinstance(content, list):
        parts = content_blocks(content, f"{path}.content")
        blocks = [b for b in parts if isinstance(b, TextBlock | ImageBlock)]
        return ToolResultBlock(call_id, blocks or UNSET)
    return ToolResultBlock(call_id, content or UNSET)


# -- tools, stop sequences ------------------------------------------------------------------------


def tool_spec(tool: ChatTool, i: int) -> ToolSpec:
    if tool.type != "function" or tool.function is None:
        raise UpstreamRejectedError(
            f"This model's route takes function tools only, not '{tool.type}'.",
            param=f"tools[{i}].type",
        )
    function = tool.function
    return ToolSpec(
        name=function.name,
        input_schema=function.parameters or _EMPTY_SCHEMA,
        description=UNSET if function.description is None else function.description,
    )


def tool_choice(
    choice: str | dict[str, Any] | None, parallel: bool | None
) -> ToolChoice | UnsetType:
    """auto / required / none / a named function as auto / any / none / tool; no parallel
    calls is a flag of the choice (the API's default choice is auto)."""
    chosen: ToolChoice | None = None
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICES:
            raise UpstreamRejectedError(f"Unknown tool_choice '{choice}'.", param="tool_choice")
        chosen = ToolChoice(_TOOL_CHOICES[choice])
    elif isinstance(choice, dict):
        chosen = ToolChoice("tool", name=_chosen_function(choice))
    if parallel is False:
        chosen = chosen or ToolChoice("auto")
        if chosen.type != "none":
            chosen.disable_parallel_tool_use = True
    return UNSET if chosen is None else chosen


def _chosen_function(choice: dict[str, Any]) -> str:
    function = choice.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    if choice.get("type") != "function" or not isinstance(name, str):
        raise UpstreamRejectedError(
            "This model's route takes a tool_choice of auto, required, none or a function.",
            param="tool_choice",
        )
    return name


def stop_sequences(stop: str | list[str] | None) -> list[str] | UnsetType:
    if stop is None:
        return UNSET
    found = [stop] if isinstance(stop, str) else list(stop)
    return [s for s in found if s] or UNSET
