"""An encoder model (AutoModel, e.g. BERT-like) for `--task embed`: loading, tokenizing, and one
forward pass over a batch of token rows, mean-pooled over the attention mask and L2-normalised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from proxy.worker.model import pick_dtype

# The input length assumed for a config that states none.
_FALLBACK_MAX_TOKENS = 512


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The average of each row's token vectors where `mask` is 1, in float32."""
    weights = mask.unsqueeze(-1).to(torch.float32)
    summed = (hidden.to(torch.float32) * weights).sum(dim=1)
    return summed / weights.sum(dim=1).clamp(min=1.0)


def normalised(vectors: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(vectors, p=2.0, dim=-1)


def right_padded(rows: list[list[int]], pad_id: int, device: str) -> dict[str, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = [r + [pad_id] * (width - len(r)) for r in rows]
    mask = [[1] * len(r) + [0] * (width - len(r)) for r in rows]
    return {
        "input_ids": torch.tensor(ids, dtype=torch.long, device=device),
        "attention_mask": torch.tensor(mask, dtype=torch.long, device=device),
    }


@dataclass
class LoadedEncoder:
    name: str
    tokenizer: Any
    model: Any
    device: str
    dtype: torch.dtype
    dimensions: int
    vocab_size: int
    max_tokens: int
    pad_id: int

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids with the model's special tokens ([CLS] ... [SEP] for BERT), uncut: an
        input that is too long is refused, never silently shortened."""
        encoded = self.tokenizer(texts, add_special_tokens=True, truncation=False)
        return [list(ids) for ids in encoded["input_ids"]]

    @torch.inference_mode()
    def embed(self, rows: list[list[int]]) -> torch.Tensor:
        """One forward pass: a float32 (len(rows), dimensions) tensor of unit vectors, on CPU."""
        inputs = right_padded(rows, self.pad_id, self.device)
        hidden = self.model(**inputs).last_hidden_state
        return normalised(mean_pool(hidden, inputs["attention_mask"])).cpu()

    def describe(self) -> dict[str, object]:
        return {
            "model": self.name,
            "device": self.device,
            "dtype": str(self.dtype),
            "dimensions": self.dimensions,
            "max_tokens": self.max_tokens,
        }


def max_tokens_of(model: Any, tokenizer: Any) -> int:
    """The longest input the model takes: the tokenizer's limit when it states a real one, else
    the position embeddings'."""
    positions = getattr(model.config, "max_position_embeddings", None) or _FALLBACK_MAX_TOKENS
    stated = getattr(tokenizer, "model_max_length", None)
    if isinstance(stated, int) and 0 < stated < 1_000_000:
        return min(stated, int(positions))
    return int(positions)


def load_encoder(model_id: str, device: str) -> LoadedEncoder:
    """Tokenizer and weights (a local folder or a hub id) onto `device`."""
    tokenizer = AutoTokenizer.from_pretrained(model_id)
    dtype = pick_dtype(device)
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call, unused-ignore]
    model: Any = AutoModel.from_pretrained(model_id, dtype=dtype)
    model = model.to(device).eval()
    pad_id = tokenizer.pad_token_id
    return LoadedEncoder(
        name=model_id,
        tokenizer=tokenizer,
        model=model,
        device=device,
        dtype=dtype,
        dimensions=int(model.config.hidden_size),
        vocab_size=int(model.config.vocab_size),
        max_tokens=max_tokens_of(model, tokenizer),
        pad_id=int(pad_id) if pad_id is not None else 0,
    )
