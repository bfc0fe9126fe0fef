"""Chat templates: the presets' exact prompts, templates from proxy.yaml, the sandbox."""

from __future__ import annotations

import pytest

from proxy.errors import InvalidRequestError
from proxy.upstreams.chat_templates import (
    PRESETS,
    ChatTemplate,
    ContentPart,
    RequestMessage,
    TemplateMessage,
    template_messages,
)

CONVERSATION = [
    TemplateMessage("system", "Be brief."),
    TemplateMessage("user", "Hi"),
    TemplateMessage("assistant", "Hello!"),
    TemplateMessage("user", "How are you?"),
]

EXPECTED = {
    "chatml": (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nHow are you?<|im_end|>\n"
        "<|im_start|>assistant\n"
    ),
    "llama3": (
        "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    "mistral": "[INST] Be brief.\n\nHi [/INST]Hello!</s>[INST] How are you? [/INST]",
    "zephyr": (
        "<|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello!</s>\n"
        "<|user|>\nHow are you?</s>\n<|assistant|>\n"
    ),
    "gemma": (
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!"
        "<end_of_turn>\n<start_of_turn>user\nHow are you?<end_of_turn>\n<start_of_turn>model\n"
    ),
}


def test_every_preset_is_tested() -> None:
    assert set(PRESETS) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_prompts(name: str) -> None:
    template = ChatTemplate.from_config(name)
    assert template.name == name
    assert template.render(CONVERSATION) == EXPECTED[name]


@pytest.mark.parametrize("name", ["mistral", "gemma"])
def test_presets_without_a_system_turn_work_without_a_system_message(name: str) -> None:
    prompt = ChatTemplate.from_config(name).render([TemplateMessage("user", "Hi")])
    assert "Hi" in prompt and "\n\nHi" not in prompt


def test_a_template_from_the_policy() -> None:
    source = (
        "{% for m in messages %}{{ m['role'] | upper }}: {{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}ASSISTANT:{% endif %}{{ bos_token }}"
    )
    template = ChatTemplate.from_config(source)
    assert template.name == "custom"
    assert template.render(CONVERSATION[1:2]) == "USER: Hi\nASSISTANT:"


def test_tokenizer_style_templates_render() -> None:
    source = (
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation must start "
        "with a user') }}{% endif %}{{ messages | tojson }}"
    )
    template = ChatTemplate.from_config(source)
    assert template.render([TemplateMessage("user", "é")]) == (
        '[{"role": "user", "content": "é", "name": null}]'
    )
    with pytest.raises(InvalidRequestError) as exc:
        template.render([TemplateMessage("system", "x")])
    assert exc.value.param == "messages"
    assert "Conversation must start with a user" in exc.value.message


def test_templates_are_compiled_once() -> None:
    source = "{{ messages | length }}"
    first = ChatTemplate.from_config(source)
    second = ChatTemplate.from_config(source)
    assert first._template is second._template


def test_an_invalid_template_fails_at_start_up() -> None:
    with pytest.raises(ValueError, match="neither a preset"):
        ChatTemplate.from_config("{% for m in messages %}")


def test_the_sandbox_keeps_templates_away_from_python() -> None:
    assert ChatTemplate.from_config("{{ messages.__class__ }}").render(CONVERSATION) == ""
    unsafe = ChatTemplate.from_config("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(InvalidRequestError):
        unsafe.render(CONVERSATION)


def test_the_sandbox_is_immutable() -> None:
    template = ChatTemplate.from_config("{{ messages.append(1) }}{{ messages | length }}")
    with pytest.raises(InvalidRequestError):
        template.render(CONVERSATION)


def test_openai_messages_become_template_messages() -> None:
    messages = [
        RequestMessage("developer", "rules"),
        RequestMessage("user", [ContentPart("text", "a"), ContentPart("text", "b")], name="ann"),
        RequestMessage("assistant", None),
    ]
    assert template_messages(messages) == [
        TemplateMessage("system", "rules"),
        TemplateMessage("user", "ab", "ann"),
        TemplateMessage("assistant", ""),
    ]
