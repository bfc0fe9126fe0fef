"""Anthropic Messages API wire types as the door reads and writes them.

Requests decode into `MessagesHead`: what the proxy acts on, with message content kept as
plain blocks and made into typed blocks one by one (`blocks.py`), so a block type the proxy
has never heard of still passes through to a native route. Answers and stream events are
encoded from the Structs below; events are tagged by `type` as Anthropic tags them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, Struct, UnsetType, field

from proxy.wire import ModelName

# -- the request, as read ------------------------------------------------------------------------

Content = str | list[dict[str, Any]]


class MessageParam(Struct):
    role: Literal["user", "assistant"]
    content: Content


class SystemText(Struct):
    type: Literal["text"]
    text: str


class ToolParam(Struct):
    name: str
    input_schema: dict[str, Any] | None = None
    description: str | None = None
    type: str | None = None  # absent or "custom" for a client tool; else a server tool


class ToolChoiceParam(Struct):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class MessagesHead(Struct):
    """What the proxy reads of a Messages (or count_tokens) body; other fields pass through
    to native routes and are dropped on translation."""

    model: ModelName
    messages: Annotated[list[MessageParam], Meta(min_length=1)]
    max_tokens: Annotated[int, Meta(ge=1)] | None = None  # required by /v1/messages only
    system: str | list[SystemText] | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    stream: bool | None = None
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoiceParam | None = None


# -- typed content blocks of the request ---------------------------------------------------------


class ImageSource(Struct):
    type: str  # base64 | url | file
    media_type: str | None = None
    data: str | None = None
    url: str | None = None


class TextBlock(Struct):
    text: str


class ImageBlock(Struct):
    source: ImageSource


class ToolUseBlock(Struct):
    id: str
    name: str
    input: dict[str, Any]


class OtherBlock(Struct):
    """A block the translation has no equivalent for (thinking, document, server tools...)."""

    type: str


class ToolResultParam(Struct):
    tool_use_id: str
    content: str | list[dict[str, Any]] | None = None
    is_error: bool | None = None


class ToolResultBlock(Struct):
    tool_use_id: str
    content: str | list[TextBlock | ImageBlock | OtherBlock]  # typed as the blocks of a turn
    is_error: bool


Block = TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | OtherBlock


# -- answers, as written -------------------------------------------------------------------------


class TokenUsage(Struct):
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int | UnsetType = UNSET  # left out when the upstream cached none


class TextOut(Struct, tag_field="type", tag="text"):
    text: str


class ToolUseOut(Struct, tag_field="type", tag="tool_use"):
    id: str
    name: str
    input: Any


ContentOut = TextOut | ToolUseOut


class AssistantMessage(Struct):
    id: str
    model: str
    content: list[Any]  # ContentOut, or a native answer's blocks as they came
    stop_reason: str | None
    stop_sequence: str | None
    usage: TokenUsage
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"


# -- stream events, as written -------------------------------------------------------------------


class MessageStart(Struct, tag_field="type", tag="message_start"):
    message: AssistantMessage


class BlockStart(Struct, tag_field="type", tag="content_block_start"):
    index: int
    content_block: Any


class TextDelta(Struct, tag_field="type", tag="text_delta"):
    text: str


class InputJsonDelta(Struct, tag_field="type", tag="input_json_delta"):
    partial_json: str


class BlockDelta(Struct, tag_field="type", tag="content_block_delta"):
    index: int
    delta: Any  # TextDelta, InputJsonDelta, or a native delta replayed


class BlockStop(Struct, tag_field="type", tag="content_block_stop"):
    index: int


class StopDelta(Struct):
    stop_reason: str | None
    stop_sequence: str | None = None


class MessageDelta(Struct, tag_field="type", tag="message_delta"):
    delta: StopDelta
    usage: TokenUsage


class MessageStop(Struct, tag_field="type", tag="message_stop"):
    pass


class ErrorDetail(Struct):
    type: str
    message: str


class ErrorEvent(Struct, tag_field="type", tag="error"):
    error: ErrorDetail


Event = MessageStart | BlockStart | BlockDelta | BlockStop | MessageDelta | MessageStop | ErrorEvent


# -- what the door reads of chat replies and chunks (translated routes) ---------------------------


class ChatFunction(Struct):
    name: str | None = None
    arguments: str | None = None


class ChatToolCall(Struct):
    index: int = 0
    id: str | None = None
    function: ChatFunction | None = None


class ChatMessageView(Struct):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ChatToolCall] | None = None


class ChatChoiceView(Struct):
    index: int = 0
    message: ChatMessageView | None = None
    delta: ChatMessageView | None = None
    finish_reason: str | None = None
    stop_reason: str | int | None = None  # vLLM: the stop string that ended the answer


class PromptDetails(Struct):
    cached_tokens: int | None = None


class ChatUsageView(Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: PromptDetails | None = None


class ChatView(Struct):
    """A chat.completion or a chat.completion.chunk, as far as the door reads it."""

    id: str | None = None
    model: str | None = None
    choices: list[ChatChoiceView] = field(default_factory=list)
    usage: ChatUsageView | None = None
