"""A translated stream: the chat chunks a route sends, as Anthropic's events.

`message_start` goes out with the first chunks (its `input_tokens` is the proxy's estimate:
a chat upstream counts the prompt only at the end); text opens a text block, each tool call a
`tool_use` block whose arguments follow as `input_json_delta`; a block is stopped when the
next one starts or the answer finishes. Once the upstream has finished, `message_delta`
carries the stop reason and the upstream's usage, and `message_stop` ends the stream (as
soon as the usage chunk that follows the finish arrives, without waiting for the stream's end).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from proxy.formats.messages.events import frame
from proxy.formats.messages.reply import new_tool_use_id, stop_reason, usage_of
from proxy.formats.messages.wire import (
    AssistantMessage,
    BlockDelta,
    BlockStart,
    BlockStop,
    ChatChoiceView,
    ChatToolCall,
    ChatUsageView,
    ChatView,
    InputJsonDelta,
    MessageDelta,
    MessageStart,
    MessageStop,
    StopDelta,
    TextDelta,
    TextOut,
    TokenUsage,
    ToolUseOut,
)

_chunk_view = msgspec.json.Decoder(ChatView)


class StreamEncoder:
    """One stream's chat chunks in, Anthropic event frames out."""

    def __init__(
        self, message_id: str, model: str, estimate: int, stops: Sequence[str], upstream: str
    ) -> None:
        self.message_id = message_id
        self.model = model
        self.estimate = estimate
        self.stops = stops
        self.upstream = upstream
        self.started = False
        self.ended = False
        self.stop: tuple[str, str | None] | None = None  # (stop_reason, stop_sequence)
        self.usage: ChatUsageView | None = None
        self._blocks = 0  # blocks started so far
        self._open: int | None = None  # the block being written
        self._open_text = False
        self._tools: dict[int, int] = {}  # chat tool call index -> block index

    def feed(self, chunks: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        if not self.started:
            self.started = True
            usage = TokenUsage(self.estimate, 0)
            shell = AssistantMessage(self.message_id, self.model, [], None, None, usage)
            out.append(frame(MessageStart(shell)))
        for chunk in chunks:
            try:
                view = _chunk_view.decode(chunk)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue  # the relay took it as JSON; nothing here is an answer's part
            for choice in view.choices:
                if choice.index == 0:
                    self._choice(choice, out)
            if view.usage is not None:
                self.usage = view.usage
                if self.stop is not None:  # the usage chunk follows the finish: all is known
                    out += self.end()
        return out

    def end(self) -> list[bytes]:
        """The upstream finished the answer: stop reason and usage, then message_stop (once;
        an upstream that sends no usage chunk gets them when its stream ends)."""
        out: list[bytes] = []
        if self.ended:
            return out
        self.ended = True
        self._close(out)
        reason, sequence = self.stop or ("end_turn", None)
        usage = usage_of(self.usage) if self.usage is not None else TokenUsage(self.estimate, 0)
        out.append(frame(MessageDelta(StopDelta(reason, sequence), usage)))
        out.append(frame(MessageStop()))
        return out

    def _choice(self, choice: ChatChoiceView, out: list[bytes]) -> None:
        delta = choice.delta
        if delta is not None:
            text = delta.content or delta.refusal
            if text:
                self._text(text, out)
            for call in delta.tool_calls or ():
                self._tool_call(call, out)
        if choice.finish_reason and self.stop is None:
            if self._blocks == 0:
                self._start(TextOut(""), out, text=True)  # an answer has at least one block
            self._close(out)
            called = bool(self._tools)
            self.stop = stop_reason(choice.finish_reason, called, choice.stop_reason, self.stops)

    def _text(self, text: str, out: list[bytes]) -> None:
        if not self._open_text:
            self._close(out)
            self._start(TextOut(""), out, text=True)
        assert self._open is not None
        out.append(frame(BlockDelta(self._open, TextDelta(text))))

    def _tool_call(self, call: ChatToolCall, out: list[bytes]) -> None:
        function = call.function
        index = self._tools.get(call.index)
        if index is None:
            self._close(out)
            name = (function.name if function is not None else None) or ""
            index = self._start(ToolUseOut(call.id or new_tool_use_id(), name, {}), out)
            self._tools[call.index] = index
        if function is not None and function.arguments:
            out.append(frame(BlockDelta(index, InputJsonDelta(function.arguments))))

    def _start(self, block: TextOut | ToolUseOut, out: list[bytes], *, text: bool = False) -> int:
        index = self._blocks
        self._blocks += 1
        self._open, self._open_text = index, text
        out.append(frame(BlockStart(index, block)))
        return index

    def _close(self, out: list[bytes]) -> None:
        if self._open is not None:
            out.append(frame(BlockStop(self._open)))
            self._open, self._open_text = None, False
