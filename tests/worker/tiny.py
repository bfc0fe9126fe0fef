"""The tiny random models the worker tests share, built once per session (no download) and
saved with `save_pretrained` to a temporary folder: a chat model (a byte-level BPE tokenizer
trained on a few sentences, a chatml template, a 2-layer Llama with hidden size 64) and an
encoder (a WordPiece tokenizer, a 2-layer BERT with hidden size 32), both with random weights."""

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


def build_tiny_encoder(factory: pytest.TempPathFactory) -> Path:
    if "encoder" not in _built:
        from proxy.worker.randmodel import build_random_encoder

        _built["encoder"] = build_random_encoder(
            factory.mktemp("tiny-encoder"), hidden_size=32, layers=2
        )
    return _built["encoder"]


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_torch()
    return build_tiny_encoder(tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_torch()
    return build_tiny_model(tmp_path_factory)
