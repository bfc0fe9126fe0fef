"""Chat templates: OpenAI messages -> the one prompt string a text-generation endpoint takes.

A template is a preset name (chatml, llama3, mistral, zephyr, gemma) or a Jinja template
written in proxy.yaml, in the style of a tokenizer's `chat_template`. Templates run in
jinja2's immutable sandbox (a policy file must not reach Python objects), are compiled once
per distinct source and cached.

`bos_token` renders as "": TGI and the classic API tokenize `inputs` with the model's special
tokens, so a literal BOS would be doubled. Presets write their other special tokens literally.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NoReturn

import msgspec
from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from proxy.errors import UpstreamRejectedError

# Each preset is the model family's own template with the BOS token left out. System
# messages go where the family expects them (mistral and gemma have no system turn: the
# system text opens the first user turn).
_CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_LLAMA3 = (
    "{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n"
    "{{ m.content | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
_SYSTEM_PREFIX = (
    "{% set ns = namespace(system='', done=false) %}"
    "{% for m in messages if m.role == 'system' %}"
    "{% set ns.system = ns.system ~ m.content ~ '\n\n' %}{% endfor %}"
)
_MISTRAL = _SYSTEM_PREFIX + (
    "{% for m in messages if m.role != 'system' %}"
    "{% if m.role == 'assistant' %}{{ m.content }}</s>"
    "{% else %}[INST] {% if not ns.done %}{{ ns.system }}{% set ns.done = true %}{% endif %}"
    "{{ m.content }} [/INST]{% endif %}{% endfor %}"
)
_ZEPHYR = (
    "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
_GEMMA = _SYSTEM_PREFIX + (
    "{% for m in messages if m.role != 'system' %}"
    "<start_of_turn>{{ 'model' if m.role == 'assistant' else 'user' }}\n"
    "{% if m.role != 'assistant' and not ns.done %}{{ ns.system }}{% set ns.done = true %}"
    "{% endif %}{{ m.content | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

PRESETS: dict[str, str] = {
    "chatml": _CHATML,
    "llama3": _LLAMA3,
    "mistral": _MISTRAL,
    "zephyr": _ZEPHYR,
    "gemma": _GEMMA,
}


class TemplateMessage(msgspec.Struct, omit_defaults=True):
    role: str
    content: str
    name: str | None = None


class ContentPart(msgspec.Struct):
    type: str
    text: str | None = None


class RequestMessage(msgspec.Struct):
    """An OpenAI message, as far as a text-only template can use it."""

    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[Any] | None = None


def template_messages(messages: Sequence[RequestMessage]) -> list[TemplateMessage]:
    """Text-only messages for a template: `developer` becomes `system`, text parts are
    joined; what a prompt string cannot carry (images, audio, tool turns) is a 400."""
    out = []
    for i, message in enumerate(messages):
        if message.role in ("tool", "function"):
            raise UpstreamRejectedError(
                f"This model's route has no tool support, so a '{message.role}' message "
                "cannot be sent.",
                param=f"messages[{i}].role",
            )
        if message.tool_calls:
            raise UpstreamRejectedError(
                "This model's route has no tool support, so an assistant message cannot "
                "carry tool_calls.",
                param=f"messages[{i}].tool_calls",
            )
        role = "system" if message.role == "developer" else message.role
        out.append(TemplateMessage(role, _text(message.content, i), message.name))
    return out


def _text(content: str | list[ContentPart] | None, i: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for j, part in enumerate(content):
        if part.type != "text":
            raise UpstreamRejectedError(
                f"This model's route takes text only; a '{part.type}' content part cannot be sent.",
                param=f"messages[{i}].content[{j}]",
            )
        texts.append(part.text or "")
    return "".join(texts)


class _TemplateRaise(Exception):
    """`raise_exception(...)` inside a template: the messages do not fit its model."""


def _raise_exception(message: str) -> NoReturn:
    raise _TemplateRaise(message)


def _tojson(value: Any, indent: int | None = None) -> str:
    # Tokenizer templates expect json.dumps, not jinja's HTML-escaping tojson.
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@functools.cache
def _environment() -> ImmutableSandboxedEnvironment:
    # The options tokenizer templates are written for (transformers renders them this way).
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


class ChatTemplate:
    """A compiled template; `render` is safe to call concurrently."""

    __slots__ = ("_context", "_template", "name")

    def __init__(self, source: str, name: str) -> None:
        self.name = name
        self._template = _compile(source)
        # The variables every render shares, the template's globals included, so a render
        # builds one dict instead of Template.render's three (a third of its cost).
        self._context: dict[str, Any] = {
            **self._template.globals,
            "add_generation_prompt": True,
            "bos_token": "",
            "eos_token": "",
            "tools": None,
        }

    @classmethod
    def from_config(cls, value: str) -> ChatTemplate:
        """A preset by name, else `value` itself as a Jinja template (ValueError when it is
        not valid Jinja, so a bad policy fails at start-up, not on the first request)."""
        if value in PRESETS:
            return cls(PRESETS[value], value)
        try:
            return cls(value, "custom")
        except TemplateError as exc:
            presets = ", ".join(PRESETS)
            raise ValueError(
                f"chat_template is neither a preset ({presets}) nor a valid Jinja template: {exc}"
            ) from None

    def render(self, messages: Sequence[TemplateMessage]) -> str:
        """The prompt, ending with the assistant turn's opening; a template that refuses the
        messages is the client's 400."""
        template = self._template
        variables = {**self._context, "messages": [msgspec.structs.asdict(m) for m in messages]}
        try:
            return "".join(template.root_render_func(template.new_context(variables, shared=True)))
        except _TemplateRaise as exc:
            raise UpstreamRejectedError(
                f"The chat template rejected the messages: {exc}", param="messages"
            ) from None
        except Exception as exc:  # a template is code from the policy: any failure is its own
            raise UpstreamRejectedError(
                f"The chat template could not render the messages: {exc}", param="messages"
            ) from None


@functools.lru_cache(maxsize=64)
def _compile(source: str) -> Any:
    return _environment().from_string(source)
