"""Loading a causal LM and its tokenizer, choosing device and dtype, rendering prompts."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from proxy.errors import InvalidRequestError

CHAT_TEMPLATE_ENV = "LLM_PROXY_WORKER_CHAT_TEMPLATE"  # a Jinja file, or the template itself


class ModelLoadError(Exception):
    """The model cannot be served as configured (the message says what to do)."""


def pick_device(requested: str) -> str:
    if requested != "auto":
        if requested == "cuda" and not torch.cuda.is_available():
            raise ModelLoadError(
                "--device cuda was asked for, but this torch build sees no CUDA device "
                f"(torch {torch.__version__}); install a CUDA build of torch (docs/worker.md)."
            )
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(device: str) -> torch.dtype:
    """bf16 (else fp16) on GPUs; fp32 on CPU, where half precision is slow or unsupported."""
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_tokenizer(model_id: str, chat_template: str | None = None) -> Any:
    """The tokenizer, with a chat template: the model's own, or `chat_template` (a file or the
    template text, also read from $LLM_PROXY_WORKER_CHAT_TEMPLATE)."""
    tokenizer = AutoTokenizer.from_pretrained(model_id)
    template = chat_template or os.environ.get(CHAT_TEMPLATE_ENV)
    if template:
        path = Path(template)
        tokenizer.chat_template = path.read_text() if path.is_file() else template
    if not getattr(tokenizer, "chat_template", None):
        raise ModelLoadError(
            f"The model '{model_id}' has no chat template, so chat messages cannot be turned "
            f"into a prompt. Use an instruction-tuned model, or set {CHAT_TEMPLATE_ENV} to a "
            "Jinja template (a file path or the template text)."
        )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@dataclass
class LoadedModel:
    name: str
    tokenizer: Any
    model: Any
    device: str
    dtype: torch.dtype
    eos_ids: frozenset[int]
    pad_id: int
    max_context: int | None

    def render(self, messages: list[dict[str, str]]) -> list[int]:
        """Prompt token ids: the chat template with the assistant turn opened."""
        try:
            encoded = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=True
            )
        except Exception as exc:  # jinja raises whatever the template raises
            message = f"The model's chat template rejected the messages: {exc}"
            raise InvalidRequestError(message, param="messages") from None
        return list(encoded["input_ids"])

    def describe(self) -> dict[str, object]:
        return {"model": self.name, "device": self.device, "dtype": str(self.dtype)}


def eos_ids_of(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    configured = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(int(i) for i in configured)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(ids)


def load_model(model_id: str, device: str, tokenizer: Any) -> LoadedModel:
    """Load the weights (a local folder or a hub id) onto `device`."""
    dtype = pick_dtype(device)
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call, unused-ignore]
    model: Any = AutoModelForCausalLM.from_pretrained(model_id, dtype=dtype)
    model = model.to(device).eval()
    context = getattr(model.config, "max_position_embeddings", None)
    return LoadedModel(
        name=model_id,
        tokenizer=tokenizer,
        model=model,
        device=device,
        dtype=dtype,
        eos_ids=eos_ids_of(model, tokenizer),
        pad_id=int(tokenizer.pad_token_id),
        max_context=int(context) if context else None,
    )
