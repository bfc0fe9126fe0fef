"""The tiny random chat model the worker tests share, built once per session (no download):
a byte-level BPE tokenizer trained on a few sentences, a chatml template, a 2-layer Llama with
hidden size 64 and random weights, saved with `save_pretrained` to a temporary folder."""

from __future__ import annotations

from pathlib import Path

import pytest

REASON = "the local worker needs torch and transformers (pip install -e '.[local]')"


def require_torch() -> None:
    """Skip the calling module, with the reason, when the [local] extra is not installed."""
    pytest.importorskip("torch", reason=REASON, exc_type=ImportError)
    pytest.importorskip("transformers", reason=REASON, exc_type=ImportError)
    pytest.importorskip("tokenizers", reason=REASON, exc_type=ImportError)


_built: dict[str, Path] = {}


def build_tiny_model(factory: pytest.TempPathFactory) -> Path:
    if "tiny" not in _built:
        from proxy.worker.randmodel import build_random_model

        _built["tiny"] = build_random_model(factory.mktemp("tiny-model"), hidden_size=64, layers=2)
    return _built["tiny"]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_torch()
    return build_tiny_model(tmp_path_factory)
