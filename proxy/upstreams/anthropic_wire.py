"""Wire types for the Anthropic Messages API as the chat translation uses them, and the typed
view of the OpenAI chat body it reads.

Decoded Structs name only the fields the translation acts on and ignore the rest, so a field
either API adds later never breaks decoding. Encoded Structs leave out what is UNSET.
"""

from __future__ import annotations

from typing import Any

from msgspec import UNSET, Struct, UnsetType, field

# -- the OpenAI chat body, as read --------------------------------------------------------------


class ImageURL(Struct):
    url: str


class ContentPart(Struct):
    type: str
    text: str | None = None
    image_url: ImageURL | str | None = None


Content = str | list[ContentPart] | None


class FunctionCall(Struct):
    name: str
    arguments: str | None = None  # JSON text


class ChatToolCall(Struct):
    id: str
    function: FunctionCall
    type: str = "function"


class ChatMessage(Struct):
    role: str
    content: Content = None
    tool_calls: list[ChatToolCall] | None = None
    tool_call_id: str | None = None


class FunctionSpec(Struct):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ChatTool(Struct):
    type: str
    function: FunctionSpec | None = None


class StreamOptions(Struct):
    include_usage: bool | None = None


class ResponseFormat(Struct):
    type: str


class ChatBody(Struct):
    messages: list[ChatMessage]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    user: str | None = None
    n: int | None = None
    response_format: ResponseFormat | None = None
    tools: list[ChatTool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    logprobs: bool | None = None
    logit_bias: dict[str, Any] | None = None


# -- a Messages request, as sent ------------------------------------------------------------------


class TextBlock(Struct, tag_field="type", tag="text"):
    text: str


class Base64Source(Struct, tag_field="type", tag="base64"):
    media_type: str
    data: str


class URLSource(Struct, tag_field="type", tag="url"):
    url: str


class ImageBlock(Struct, tag_field="type", tag="image"):
    source: Base64Source | URLSource


class ToolUseBlock(Struct, tag_field="type", tag="tool_use"):
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(Struct, tag_field="type", tag="tool_result", omit_defaults=True):
    tool_use_id: str
    content: str | list[TextBlock | ImageBlock] | UnsetType = UNSET


Block = TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock


class Turn(Struct):
    role: str  # "user" | "assistant"
    content: list[Block]


class ToolSpec(Struct, omit_defaults=True):
    name: str
    input_schema: dict[str, Any]
    description: str | UnsetType = UNSET


class ToolChoice(Struct, omit_defaults=True):
    type: str  # auto | any | tool | none
    name: str | UnsetType = UNSET
    disable_parallel_tool_use: bool | UnsetType = UNSET


class Metadata(Struct):
    user_id: str


class MessagesRequest(Struct, omit_defaults=True):
    model: str
    max_tokens: int
    messages: list[Turn]
    system: str | UnsetType = UNSET
    stop_sequences: list[str] | UnsetType = UNSET
    temperature: float | UnsetType = UNSET
    top_p: float | UnsetType = UNSET
    stream: bool | UnsetType = UNSET
    metadata: Metadata | UnsetType = UNSET
    tools: list[ToolSpec] | UnsetType = UNSET
    tool_choice: ToolChoice | UnsetType = UNSET


# -- replies and stream events, as read -----------------------------------------------------------


class ReplyBlock(Struct):
    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None


class ReplyUsage(Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None


class MessageReply(Struct):
    id: str = ""
    model: str = ""
    content: list[ReplyBlock] = field(default_factory=list)
    stop_reason: str | None = None
    usage: ReplyUsage | None = None


class EventDelta(Struct):
    type: str | None = None
    text: str | None = None
    partial_json: str | None = None
    stop_reason: str | None = None


class ErrorDetail(Struct):
    type: str | None = None
    message: str | None = None


class ErrorReply(Struct):
    error: ErrorDetail | None = None


class StreamEvent(Struct):
    type: str
    index: int | None = None
    message: MessageReply | None = None
    content_block: ReplyBlock | None = None
    delta: EventDelta | None = None
    usage: ReplyUsage | None = None
    error: ErrorDetail | None = None


class EventType(Struct):
    type: str = ""
